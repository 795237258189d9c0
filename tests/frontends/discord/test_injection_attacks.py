"""Attacks on link previews beyond the injection suite (test_injection.py): the real bot on the
Discord emulator with an obedient scripted model, trying to make Discord fetch a link that
carries data although every link the policy sees is one the user posted.

- Discord's own autolink runs up to whitespace or "<": a quote, a bar, a backtick, ">" or a
  full-width look-alike of "<" after a user's link makes it a longer link, carrying whatever
  follows, while a parser that stops at those sees only the user's link.
- In a thread everyone talks in one conversation: a link one user posted there is not a link
  another user posted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labbot.frontends.discord.posting import LinkPolicy
from labbot.frontends.web.links import LinkSigner
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import Reply
from tests.frontends.discord.world import labbot_on

THEIRS = "https://example.org/report"
SECRET = "bob-salary-91000"
# What follows a user's link and becomes part of it for Discord.
SUFFIXES = {
    "bar": f"|{SECRET}",
    "quote": f'"{SECRET}x',
    "backtick": f"`{SECRET}`x",
    "greater-than": f">{SECRET}",
    "full-width less-than": f"\uff1c{SECRET}",
    "full-width bar": f"\uff5c{SECRET}",
    "full-width quote": f"\uff02{SECRET}",
    "zero-width space": f"\u200b{SECRET}",
}
OPTIONS = {"CODE_EXECUTION_TIMEOUT": 60, "MAX_FILE_SIZE_MB": 1}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple]:
    async with FakeDiscord() as fake:
        fake.patch_discord()
        bot_on = labbot_on(fake, tmp_path / "data", OPTIONS, guild_ready_timeout=0.05)
        async with bot_on as (model, bot):
            yield fake, model, bot


@pytest.mark.parametrize("form", list(SUFFIXES))
def test_a_users_link_with_data_glued_on_is_not_theirs(form: str) -> None:
    """posting.py alone: the user's link followed by a character Discord keeps in a link."""
    policy = LinkPolicy()
    policy.remember("c", f"what does {THEIRS} say?")
    assert policy.previews([f"Read {THEIRS}."], "c")  # the user's own link still previews
    assert not policy.previews([f"Read {THEIRS}{SUFFIXES[form]} now"], "c")


@pytest.mark.parametrize("form", ["bar", "quote", "full-width less-than"])
async def test_the_bot_makes_discord_fetch_nothing_but_the_users_link(env, form: str) -> None:
    """Driven from outside: the emulator fetches links as Discord's autolink finds them, and
    the world fixture fails the test if the bot made it fetch anything a user did not post."""
    fake, model, _ = env
    model.enqueue(Reply.text(f"See {THEIRS}{SUFFIXES[form]} for details."))
    await fake.user_message(f"what does {THEIRS} say?", dm=True)
    answer = await fake.wait_for(lambda s: SECRET in (s.content or "") and not s.components)
    assert answer.suppressed and answer.previews == []


async def test_a_link_another_user_posted_in_a_thread_is_not_previewed(env) -> None:
    """alice (the attacker) posts her link in a shared thread; bob's answer repeats it (a
    planted instruction chose which of her links to repeat: a covert channel of her own
    choosing). Her link is not bob's: his answer goes out without previews."""
    fake, model, _ = env
    hers = "https://attacker.example/bit-1"
    thread = await fake.create_thread("shared analysis", owner="alice")
    tid = int(thread["id"])
    model.enqueue(Reply.text("noted"), Reply.text(f"See {hers} for more."))
    await fake.user_message(f"remember {hers}", author="alice", channel_id=tid, mention_bot=True)
    await fake.wait_for(lambda s: s.content == "noted" and not s.components)
    await fake.user_message("summarise my file", author="bob", channel_id=tid, mention_bot=True)
    answer = await fake.wait_for(lambda s: hers in (s.content or "") and not s.components)
    assert answer.suppressed and answer.previews == []


def test_only_an_untouched_signed_link_of_ours_previews() -> None:
    """The bot's own signed link previews; with anything glued on, or its path changed, it
    is no longer ours and previews are off."""
    signer = LinkSigner(
        b"k" * 32, "https://bot.example", now=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    policy = LinkPolicy(allow=signer.is_ours)
    ours = signer.url("7", "a" * 26)
    assert policy.previews([f"📥 big.csv (12 MiB): {ours}"])
    for changed in (
        f'{ours}"{SECRET}',
        f"{ours}|{SECRET}",
        ours.replace("/7/", "/8/"),
        ours + "/x",
    ):
        assert not policy.previews([f"📥 big.csv (12 MiB): {changed}"]), changed


@pytest.mark.parametrize("text", ["a" * 40_000, "a1" * 20_000, "https://" + "." * 40_000])
def test_reading_links_is_linear_on_the_event_loop(text: str) -> None:
    """Every message the bot posts or reads is searched for links on the event loop: a
    pattern that could start at any letter took 0.8 s on 4,000 letters (quadratic: minutes on
    these); one pass each now (milliseconds). Generous ceiling."""
    started = time.perf_counter()
    policy = LinkPolicy()
    policy.remember("c", text)
    assert not policy.previews([text], "c")
    assert time.perf_counter() - started < 2.0
