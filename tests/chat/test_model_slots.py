"""The cap on concurrent model requests, per bot and per guild, counted by the loopback model
server itself while every request is held open; the waiting turns are told why."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from labbot.app import open_app
from labbot.chat.budgets import Payer
from labbot.core import Final, Status
from tests.conftest import model_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import Reply

pytestmark = pytest.mark.sandbox  # open_app builds the real interpreter (no cell runs here)


async def test_model_requests_are_capped_per_bot_and_per_guild(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Ten users at once, six of them in one guild; at most 3 requests in flight in all and 2
    of that guild's, counted server-side; the turns that waited got a status saying why."""
    release = asyncio.Event()
    inflight: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def handler(body: dict[str, Any]) -> Reply:
        text = body["messages"][-1]["content"]
        guild = "g1" if text.startswith("g1") else "none"
        for key in ("all", guild):
            inflight[key] += 1
            peak[key] = max(peak[key], inflight[key])
        try:
            await release.wait()
        finally:
            for key in ("all", guild):
                inflight[key] -= 1
        return Reply.text("ok")

    fake_openai.respond_with(handler)
    settings = model_settings(
        tmp_path / "data",
        fake_openai.base_url,
        MAX_CONCURRENT_MODEL_REQUESTS=3,
        MAX_CONCURRENT_MODEL_REQUESTS_PER_GUILD=2,
    )
    async with open_app(settings) as app:
        assert app.engine is not None
        engine = app.engine
        statuses: dict[str, list[str]] = {}
        finals: list[str] = []
        users = [(f"g{n}", "g1") for n in range(6)] + [(f"d{n}", None) for n in range(4)]
        all_told = asyncio.Event()  # every turn beyond the first three said it waits

        async def turn(user: str, guild: str | None) -> None:
            text = f"{guild or 'dm'} hello from {user}"
            async for event in engine.turn(user, "c", text, payer=Payer(user, guild=guild)):
                if isinstance(event, Status):
                    statuses.setdefault(user, []).append(event.text)
                    if len(statuses) == len(users) - 3:
                        all_told.set()
                elif isinstance(event, Final):
                    finals.append(user)

        tasks = [asyncio.create_task(turn(user, guild)) for user, guild in users[:6]]
        async with asyncio.timeout(30):
            await fake_openai.wait_for_requests(2)  # the guild's two; its others wait
            tasks += [asyncio.create_task(turn(user, guild)) for user, guild in users[6:]]
            await fake_openai.wait_for_requests(3)
            await all_told.wait()
        assert inflight["all"] == 3 and inflight["g1"] == 2
        waiting = [text for texts in statuses.values() for text in texts]
        assert all(text.startswith("waiting for a free model slot") for text in waiting)
        assert any("of this server" in text for text in waiting)
        release.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
    assert sorted(finals) == sorted(user for user, _ in users)
    assert peak["all"] == 3 and peak["g1"] == 2
    assert len(fake_openai.requests) == len(users)
