"""MongoDB unreachable, at start and mid-run: clear errors, nothing lost, the bot keeps
answering. The client is the real pymongo one, pointed at a loopback port nobody serves; the
engine runs on the in-memory fakes."""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from labbot.app import open_app
from labbot.chat.mongo import MongoConversationStore
from labbot.config import load_settings
from labbot.core import Failed, Final
from labbot.errors import StorageError
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel

# pymongo's async monitor may drop a refused socket without closing it; collect it here, in
# this module, so the warning cannot land on an unrelated test.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def collect_sockets():
    yield
    gc.collect()


def closed_port() -> int:
    """A loopback port with no server behind it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_unreachable_mongo_at_start_is_one_clear_error(tmp_path: Path) -> None:
    """With MONGODB_URI pointing nowhere, start-up retries, then fails naming the setting."""
    settings = load_settings(
        LABBOT_DATA_DIR=tmp_path,
        MONGODB_URI=f"mongodb://127.0.0.1:{closed_port()}/labbot",
        MONGODB_TIMEOUT_SECONDS=0.2,
        SANDBOX_WARM_POOL=0,
    )
    with pytest.raises(StorageError, match="MONGODB_URI"):
        async with open_app(settings):
            pass


async def test_storage_lost_mid_run_keeps_the_bot_answering(tmp_path: Path) -> None:
    """When the conversation database goes away mid-run, a turn ends with a clear message
    instead of crashing, and the next turn works once storage is back."""
    model = ScriptedModel()
    model.enqueue(Reply.text("back to normal"))
    async with open_fake_app(fake_settings(tmp_path), model) as services:
        engine = services.engine
        assert engine is not None
        healthy = engine.conversations
        client: AsyncMongoClient = AsyncMongoClient(
            f"mongodb://127.0.0.1:{closed_port()}", serverSelectionTimeoutMS=200
        )
        engine.conversations = MongoConversationStore(client["labbot"])
        try:
            events = [e async for e in engine.turn("u", "c", "hello")]
        finally:
            await client.close()
        assert isinstance(events[-1], Failed)
        assert "database cannot be reached" in events[-1].text
        engine.conversations = healthy
        events = [e async for e in engine.turn("u", "c", "hello again")]
        assert isinstance(events[-1], Final) and events[-1].text == "back to normal"
