"""An interpreter on a temporary data dir, with the real sandbox and the real file store
(``make_interpreter`` is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from labbot.sandbox import CodeInterpreter
from tests.conftest import Factory

FAKE_TOKEN = "MTAxNjk4NzY1NDMyMTA.fake-discord-token-for-tests"
FAKE_KEY = "sk-test-fake-openai-key-0123456789"


@pytest.fixture
async def interpreter(make_interpreter: Factory) -> AsyncIterator[CodeInterpreter]:
    async with make_interpreter(CODE_EXECUTION_TIMEOUT=30) as (interpreter, _):
        yield interpreter


@pytest.fixture
async def jailed(make_interpreter, monkeypatch):
    """An interpreter started while the bot's environment holds (fake) secrets."""
    monkeypatch.setenv("DISCORD_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    async with make_interpreter(
        CODE_EXECUTION_TIMEOUT=8, SANDBOX_MEMORY_MB=384, SANDBOX_DISK_MB=64
    ) as pair:
        yield pair
