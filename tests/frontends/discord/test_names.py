"""File names are cleaned and Markdown-escaped wherever Discord shows them (issue 12,
finding 9)."""

from __future__ import annotations

import pytest

from tests.frontends.discord.world import World, answer_to

CONTROLS = ("\u202e", "\x07", "\x1b", "\x00", "\u2066")
# A right-to-left override, a bell, an ANSI colour, a NUL and Markdown that would turn bold.
NASTY = "in\u202evoice\x07\x1b[31m\x00**bold**\u2066.csv"
SHOWN = "invoice[31m\\*\\*bold\\*\\*.csv"  # what a user must see


def assert_clean(text: str) -> None:
    for control in CONTROLS:
        assert control not in text, f"{control!r} posted: {text!r}"
    assert "**bold**" not in text, text


@pytest.mark.parametrize("world", [{"MAX_FILE_SIZE_MB": 1}], indirect=True)
async def test_file_names_are_cleaned_and_escaped(world: World) -> None:
    """A name with bidi, bell, escape and NUL characters and Markdown shows cleaned and
    escaped: in the oversize warning, the upload confirmation, /files and its menu."""
    fake = world.fake
    await fake.user_message(
        "",
        files={NASTY: b"a\n1\n", "big" + NASTY: b"x"},
        declared_sizes={"big" + NASTY: 50 * 2**20},
        mention_bot=True,
    )
    reply = await fake.wait_for(lambda s: "not downloaded" in (s.content or ""))
    assert_clean(reply.content)
    assert f"File uploaded: {SHOWN}" in reply.content
    assert f"big{SHOWN}" in reply.content
    listing = await answer_to(fake, await fake.slash("files"))
    assert_clean(listing.content)
    assert SHOWN in listing.content
    options = listing.components[0]["components"][0]["options"]
    assert [o["label"] for o in options] == ["invoice[31m**bold**.csv"]  # plain text, cleaned
    menu = fake.messages[listing.message_id]
    picked = await answer_to(
        fake,
        await fake.click(
            menu, listing.components[0]["components"][0]["custom_id"], values=[options[0]["value"]]
        ),
    )
    assert_clean(picked.content)
    assert SHOWN in picked.content
