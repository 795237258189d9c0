"""The Discord front end's test world: the real discord.py client, the loopback Discord and
OpenAI servers, and the users, role and channel the access tests need."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labbot.frontends.discord import create_bot
from labbot.frontends.discord.bot import LabBot
from tests.conftest import model_settings
from tests.fakes.discord_server import FakeDiscord, Sent, running
from tests.fakes.openai_server import FakeOpenAI, Reply

_markers = itertools.count(1)


@dataclass
class World:
    fake: FakeDiscord
    api: FakeOpenAI
    bot: LabBot
    ids: dict[str, int]
    muted: int  # a role
    quarantine: int  # a channel

    def where(self, place: str, user: str) -> int:
        """The channel id of "general", "quarantine" or "dm" (the user's DM with the bot)."""
        if place == "dm":
            return self.fake.dm_channel_of(user)
        return self.quarantine if place == "quarantine" else self.fake.channel_id


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """alice, bob, carol (role "muted"), mallory, eve and the admin root; a channel
    "quarantine". The settings (``request.param``) may name them in lists, or be functions of
    the loopback model API."""
    async with FakeOpenAI() as api, FakeDiscord() as fake:
        for name in ("carol", "mallory", "eve", "root"):
            fake.add_user(name)
        muted = await fake.add_role("muted")
        await fake.give_role("carol", muted)
        quarantine = await fake.add_channel("quarantine")
        ids = {name: int(user["id"]) for name, user in fake.users.items()}
        names = ids | {"muted": muted, "quarantine": quarantine}
        options: dict[str, Any] = {"ADMIN_IDS": [ids["root"]], "RATE_LIMIT_MESSAGES": 200}
        for key, value in getattr(request, "param", {}).items():
            if callable(value):  # computed from the model API, e.g. its URL
                value = value(api)
            options[key] = [names[v] for v in value] if isinstance(value, list) else value
        settings = model_settings(tmp_path / "data", api.base_url, **options)
        bot = create_bot(settings)
        async with running(bot, fake):
            yield World(fake, api, bot, ids, muted, quarantine)
            async with asyncio.timeout(30):
                await bot.wait_idle()


async def answer_to(fake: FakeDiscord, interaction: dict) -> Sent:
    """The first text the bot showed in answer to this interaction (response or followup)."""
    keys = (interaction["id"], interaction["token"])
    return await fake.wait_for(
        lambda s: any(k in s.route for k in keys) and bool(s.content or s.files)
    )


async def marker(world: World, author: str = "bob") -> None:
    """Wait until the bot has dealt with everything sent before: gateway events are handled
    in order, so once a later question is answered, the earlier ones went through the
    gate; then wait for handlers still running."""
    answer = f"marker answered {next(_markers)}"  # each call waits for its own answer
    world.api.enqueue(Reply.text(answer))
    await world.fake.user_message("marker", author=author, mention_bot=True)
    await world.fake.wait_for(lambda s: s.content == answer)
    async with asyncio.timeout(30):
        await world.bot.wait_idle()


def replies_to(world: World, messages: list[dict]) -> list[str]:
    """What the bot posted in reply to these messages."""
    ids = {int(m["id"]) for m in messages}
    return [
        s.content or ""
        for s in world.fake.sent
        if int((s.payload.get("message_reference") or {}).get("message_id", 0)) in ids
    ]
