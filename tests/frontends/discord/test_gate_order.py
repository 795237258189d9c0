"""The gate decides before Discord is asked anything, and fails closed (security review of
issue 12): the lists and the rate limit come before any REST call; a DM author's roles are
looked up once per ROLE_CACHE_SECONDS; a thread discord.py has not cached is checked against
its parent's channel rules. The real discord.py client against the loopback Discord emulator;
the emulator counts the bot's requests."""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from labbot.frontends.discord.gate import ROLE_CACHE_SECONDS
from tests.fakes.openai_server import Reply
from tests.frontends.discord.world import World, replies_to

MEMBER_GET = re.compile(r"/guilds/\d+/members/\d+$")
MESSAGE_GET = re.compile(r"/channels/\d+/messages/\d+$")

LISTS = {
    "BLOCKED_USER_IDS": ["mallory"],
    "BLOCKED_ROLE_IDS": ["muted"],
    "BLOCKED_CHANNEL_IDS": ["quarantine"],
    "RATE_LIMIT_MESSAGES": 3,
}


def gets(world: World, pattern: re.Pattern[str], since: int = 0) -> int:
    """GET requests the bot made since request number ``since`` whose path matches."""
    return sum(1 for m, p in world.fake.requests[since:] if m == "GET" and pattern.search(p))


def answers(world: World, messages: list[dict]) -> list[str]:
    """What the bot's replies to these messages finally read (after their streaming edits)."""
    ids = {m["id"] for m in messages}
    return [
        m["content"]
        for m in world.fake.messages.values()
        if (m.get("message_reference") or {}).get("message_id") in ids
    ]


def echo(body: dict) -> Reply:
    """The loopback model answers every question with its text."""
    return Reply.text(f"echo: {body['messages'][-1]['content']}")


async def settle(world: World, author: str = "bob") -> None:
    """Wait until the bot has dealt with everything sent before: a later question of an
    allowed user is answered (gateway events are handled in order), then no handler runs."""
    text = f"settle {next(_settles)}"
    await world.fake.user_message(text, author=author, mention_bot=True)
    await world.fake.wait_for(lambda s: s.content == f"echo: {text}")
    async with asyncio.timeout(30):
        await world.bot.wait_idle()


_settles = itertools.count()


class Monotonic:
    """The gate's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("world", [LISTS], indirect=True)
async def test_refused_and_limited_users_cost_no_api_calls(world: World) -> None:
    """A blocked user's 30 DMs and 30 autocomplete keystrokes make no member lookup; an
    allowed user's 30 DMs over a limit of 3 make one (roles are kept), reach the model 3
    times and get one "Slow down"."""
    fake = world.fake
    world.api.respond_with(echo)
    dm = fake.dm_channel_of("mallory")
    for n in range(30):
        await fake.user_message(f"spam {n}", author="mallory", dm=True)
        await fake.autocomplete("model", [{"name": "name", "value": "g" * (n % 5 + 1)}],
                                user="mallory", channel_id=dm)  # fmt: skip
    await settle(world)
    assert gets(world, MEMBER_GET) == 0

    before = len(fake.requests)
    eve = [await fake.user_message(f"flood {n}", author="eve", dm=True) for n in range(30)]
    await settle(world)
    assert gets(world, MEMBER_GET, before) == 1
    answers = replies_to(world, eve)
    assert len([a for a in answers if a.startswith("Slow down")]) == 1
    asked = [r["messages"][-1]["content"] for r in world.api.requests]
    assert sorted(a for a in asked if a.startswith("flood")) == ["flood 0", "flood 1", "flood 2"]


@pytest.mark.parametrize("world", [LISTS], indirect=True)
async def test_replies_to_a_deleted_message_fetch_nothing(world: World) -> None:
    """20 replies to a deleted message, from a blocked user in a blocked channel, make no
    request for the message (the reference is looked at only for admitted messages, and a
    deleted one is known to be gone)."""
    fake = world.fake
    world.api.respond_with(echo)
    target = await fake.user_message("soon gone", author="bob", channel_id=world.quarantine)
    del fake.messages[int(target["id"])]
    before = len(fake.requests)
    for n in range(20):
        await fake.user_message(
            f"re {n}", author="mallory", channel_id=world.quarantine, reply_to=int(target["id"])
        )
    await settle(world)
    assert gets(world, MESSAGE_GET, before) == 0


@pytest.mark.parametrize("world", [{"BLOCKED_ROLE_IDS": ["muted"]}], indirect=True)
async def test_dm_roles_are_kept_for_a_while_then_asked_again(world: World) -> None:
    """A DM author's roles are looked up once and kept for ROLE_CACHE_SECONDS: a blocked role
    given meanwhile counts from then on; carol, who has it, is looked up once for many DMs."""
    fake, gate = world.fake, world.bot.gate
    clock = gate.clock = Monotonic()
    world.api.respond_with(echo)
    asked = [await fake.user_message(f"hi {n}", author="carol", dm=True) for n in range(5)]
    first = await fake.user_message("hi from bob", author="bob", dm=True)
    await settle(world, "alice")
    assert answers(world, asked) == [] and answers(world, [first]) == ["echo: hi from bob"]
    assert gets(world, MEMBER_GET) == 2  # carol once, bob once

    await fake.give_role("bob", world.muted)
    clock.now += ROLE_CACHE_SECONDS - 1
    kept = await fake.user_message("still there?", author="bob", dm=True)
    await settle(world, "alice")
    assert answers(world, [kept]) == ["echo: still there?"]  # the roles seen a moment ago
    clock.now += 1
    late = await fake.user_message("and now?", author="bob", dm=True)
    await settle(world, "alice")
    assert answers(world, [late]) == []
    assert gets(world, MEMBER_GET) == 3


SETTINGS_THREADS = {"BLOCKED_CHANNEL_IDS": ["quarantine"]}


@pytest.mark.parametrize("world", [SETTINGS_THREADS], indirect=True)
async def test_uncached_threads_follow_their_parents_channel_rules(world: World) -> None:
    """A thread the bot never heard of reaches discord.py without its parent: the gate asks
    Discord for it once. Under a blocked channel the thread is refused; under an open one it
    is answered (one channel lookup for two messages); when Discord cannot say, refused."""
    fake = world.fake
    world.api.respond_with(echo)
    hidden = await fake.create_thread("sneaky", parent_id=world.quarantine, announce=False)
    open_ = await fake.create_thread("fine", announce=False)
    unknown = await fake.create_thread("unknown", announce=False)
    fake.inject("GET", rf"/channels/{unknown['id']}$", 403, {"message": "Missing Access"})
    asked = {}
    for thread in (hidden, open_, open_, unknown):
        message = await fake.user_message("hello?", channel_id=int(thread["id"]), mention_bot=True)
        asked.setdefault(thread["name"], []).append(message)
    await settle(world)
    assert answers(world, asked["sneaky"]) == []
    assert answers(world, asked["fine"]).count("echo: hello?") == 2
    assert answers(world, asked["unknown"]) == []
    assert gets(world, re.compile(rf"/channels/{open_['id']}$")) == 1
