"""The Discord front end's test world: the real discord.py client against the loopback Discord
emulator, on the in-memory fakes (ScriptedModel, InMemoryExecutor) or on the real openai SDK
against the loopback API and the real sandbox; the users, role and channel the access tests
need."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labbot.app import App, open_app
from labbot.frontends.discord import create_bot
from labbot.frontends.discord.bot import LabBot
from tests.conftest import model_settings
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.discord_server import FakeDiscord, Sent, running
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.scripted_model import ScriptedModel

Model = ScriptedModel | FakeOpenAI  # enqueue(...) and requests, either way


@asynccontextmanager
async def labbot_on(
    fake: FakeDiscord,
    data_dir: Path,
    options: dict[str, Any],
    *,
    api: FakeOpenAI | None = None,
    **client_options: Any,
) -> AsyncIterator[tuple[Model, LabBot]]:
    """The bot running on the emulator: on the in-memory fakes, or (given the loopback API)
    the real openai SDK and the real sandbox. Waits for the last answer before closing."""
    async with AsyncExitStack() as stack:
        model: Model
        app: App
        if api is None:
            model = ScriptedModel()
            settings = fake_settings(data_dir, **options)
            app = await stack.enter_async_context(open_fake_app(settings, model))
        else:
            model, settings = api, model_settings(data_dir, api.base_url, **options)
            app = await stack.enter_async_context(open_app(settings))
        bot = create_bot(app, **client_options)
        async with running(bot, fake):
            yield model, bot
            async with asyncio.timeout(30):
                await bot.wait_idle()
        # Nothing the bot posted made Discord fetch a link, but those users posted themselves.
        fetched = {url for sent in fake.sent for url in sent.previews}
        assert fetched <= fake.user_links(), fetched - fake.user_links()


_markers = itertools.count(1)


@dataclass
class World:
    fake: FakeDiscord
    api: Model
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
    the loopback model API: then the bot runs on the real openai SDK against it, else on the
    in-memory fakes."""
    params: dict[str, Any] = getattr(request, "param", {})
    async with AsyncExitStack() as stack:
        api = None
        if any(callable(value) for value in params.values()):
            api = await stack.enter_async_context(FakeOpenAI())
        fake = await stack.enter_async_context(FakeDiscord())
        for name in ("carol", "mallory", "eve", "root"):
            fake.add_user(name)
        muted = await fake.add_role("muted")
        await fake.give_role("carol", muted)
        quarantine = await fake.add_channel("quarantine")
        ids = {name: int(user["id"]) for name, user in fake.users.items()}
        names = ids | {"muted": muted, "quarantine": quarantine}
        options: dict[str, Any] = {"ADMIN_IDS": [ids["root"]], "RATE_LIMIT_MESSAGES": 200}
        for key, value in params.items():
            if callable(value):  # computed from the model API, e.g. its URL
                value = value(api)
            options[key] = [names[v] for v in value] if isinstance(value, list) else value
        bot_on = labbot_on(fake, tmp_path / "data", options, api=api)
        model, bot = await stack.enter_async_context(bot_on)
        yield World(fake, model, bot, ids, muted, quarantine)


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
