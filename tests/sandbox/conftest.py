"""An interpreter on a temporary data dir, with the real sandbox and the real file store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from labbot.config import load_settings
from labbot.files import FileStore
from labbot.sandbox import CodeInterpreter
from tests.conftest import make_store

Factory = Callable[..., Any]

FAKE_TOKEN = "MTAxNjk4NzY1NDMyMTA.fake-discord-token-for-tests"
FAKE_KEY = "sk-test-fake-openai-key-0123456789"


@pytest.fixture
def make_interpreter(tmp_path: Path) -> Factory:
    """Build an interpreter (and its store) with settings overrides; closed by the caller's
    ``async with``."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[tuple[CodeInterpreter, FileStore]]:
        overrides.setdefault("SANDBOX_WARM_POOL", 0)
        # Most tests need no data stack: interpreters start in milliseconds instead of seconds.
        overrides.setdefault("SANDBOX_PRELOAD", False)
        settings = load_settings(LABBOT_DATA_DIR=tmp_path / "data", **overrides)
        store = make_store(settings)
        await store.start()
        interpreter = CodeInterpreter(settings, store)
        await interpreter.start()
        try:
            yield interpreter, store
        finally:
            await interpreter.close()
            await store.close()

    return make


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
