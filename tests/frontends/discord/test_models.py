"""Models the operator chose (issue 12, finding 3) and error texts without the endpoint in
Discord (finding 1): /model refuses names off the allow-list, a stale choice is not sent, admins
add models, and the model API's 404 reaches the channel without URL, host or credentials."""

from __future__ import annotations

import pytest

from labbot.chat.preferences import UserSettings
from tests.fakes.openai_server import MODELS, Reply
from tests.frontends.discord.world import World, answer_to
from tests.llm.test_error_texts import API_KEY, assert_clean, assert_no_endpoint, planted

PLANTED = {
    "OPENAI_BASE_URL": lambda api: planted(api.base_url),
    "OPENAI_API_KEY": API_KEY,
    "ADMIN_IDS": ["root"],
}


@pytest.mark.parametrize("world", [PLANTED], indirect=True)
async def test_model_choice_is_limited_and_errors_hide_the_endpoint(world: World) -> None:
    """Users pick among the catalog's models the provider lists; "nope" is refused with the
    list; an old choice off the list is not sent; only admins add a model, and when the API
    then answers 404 the channel reads a sentence without the endpoint's URL or secrets."""
    fake, api, bot = world.fake, world.api, world.bot
    url = planted(api.base_url)
    alice = str(world.ids["alice"])
    choices = await fake.autocomplete("model", [{"name": "name", "value": ""}])
    assert {c["value"] for c in choices} == set(MODELS)  # gpt-4o-mini is also the default

    refused = await answer_to(fake, await fake.slash("model", [{"name": "name", "value": "nope"}]))
    assert "'nope' is not offered here" in refused.content and "gpt-4o-mini" in refused.content
    assert_clean(refused.content, url)
    assert (await bot.services.preferences.users.get(alice)).model is None

    not_admin = await fake.slash(
        "model", [{"name": "name", "value": "nope"}, {"name": "add", "value": True}]
    )
    assert "Only the bot's admins" in (await answer_to(fake, not_admin)).content

    # A choice stored before the allow-list existed is not sent to the API.
    stale = UserSettings(model="gpt-4.5-preview-EXPENSIVE")
    await bot.services.preferences.users.put(alice, stale)
    api.enqueue(Reply.text("answered by the default"))
    await fake.user_message("hi", mention_bot=True)
    await fake.wait_for(lambda s: "answered by the default" in (s.content or ""))
    assert api.requests[-1]["model"] == "gpt-4o-mini"

    added = await fake.slash(
        "model", [{"name": "name", "value": "nope"}, {"name": "add", "value": True}], user="root"
    )
    assert "Model: **nope**" in (await answer_to(fake, added)).content
    api.enqueue(Reply.error(404, "The model `nope` does not exist.", code="model_not_found"))
    await fake.user_message("and now?", author="root", mention_bot=True)
    failed = await fake.wait_for(lambda s: "was not found" in (s.content or ""))
    assert api.requests[-1]["model"] == "nope"
    assert "not found at the model API" in failed.content
    for sent in fake.sent:  # nothing the bot showed anyone names the endpoint
        assert_no_endpoint(sent.content or "", url)
    choices = await fake.autocomplete("model", [{"name": "name", "value": "no"}])
    assert [c["value"] for c in choices] == ["nope"]  # added for everyone


async def test_a_failed_model_listing_does_not_open_the_catalog(world: World) -> None:
    """The provider's model listing fails once (HTTP 503): that is not "it lists none", so
    /model o1 (in the catalog, not offered by this provider) is refused, and the next
    question goes to DEFAULT_MODEL."""
    fake, api = world.fake, world.api
    api.fail_listings(503)
    refused = await answer_to(fake, await fake.slash("model", [{"name": "name", "value": "o1"}]))
    assert "'o1' is not offered here" in refused.content
    users = world.bot.services.preferences.users
    assert (await users.get(str(world.ids["alice"]))).model is None
    api.enqueue(Reply.text("answered by the default"))
    await fake.user_message("hi", mention_bot=True)
    await fake.wait_for(lambda s: s.content == "answered by the default")
    assert api.requests[-1]["model"] == "gpt-4o-mini"
