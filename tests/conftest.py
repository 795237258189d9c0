"""Common fixtures: a clean environment, settings on tmp_path, a file store with a test clock."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labbot.app import blob_store
from labbot.config import Settings, load_settings
from labbot.files import FileStore, Limits, SqliteMetadataStore
from tests.fixtures import FORMATS
from tests.servers import S3, Nats, nats_server, seaweedfs

FIXTURES = FORMATS  # the in-repo format fixtures (tests/fixtures/make_fixtures.py writes them)


_PREFIXES = (
    "LABBOT_",
    "OPENAI_",
    "DISCORD_",
    "MONGODB_",
    "FILE_",
    "MAX_",
    "LOG_",
    "CODE_",
    "AWS_",
)


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # strictly increasing, like real saves
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's shell or a stray .env."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return load_settings(LABBOT_DATA_DIR=data_dir)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_store(settings: Settings) -> FileStore:
    """A file store on the embedded SQLite file and the settings' blob store (not started)."""
    return FileStore(
        SqliteMetadataStore(settings.database_path),
        blob_store(settings),
        Limits.from_settings(settings),
    )


@pytest.fixture
async def store(settings: Settings, clock: Clock) -> AsyncIterator[FileStore]:
    store = make_store(settings)
    store.clock = clock
    await store.start()
    yield store
    await store.close()


def model_settings(data_dir: Path, base_url: str, **overrides: Any) -> Settings:
    """Settings for tests that talk to the loopback model API: no warm pool, no retries."""
    values: dict[str, Any] = {
        "LABBOT_DATA_DIR": data_dir,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": base_url,
        "DEFAULT_MODEL": "gpt-4o-mini",
        "SANDBOX_WARM_POOL": 0,
        "SANDBOX_PRELOAD": False,  # interpreters start in milliseconds
        "LLM_MAX_RETRIES": 0,
        "CODE_EXECUTION_TIMEOUT": 30,
    }
    return load_settings(**(values | overrides))


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    """An upload stream made of the given chunks."""
    for part in parts:
        yield part


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A real SeaweedFS S3 gateway on loopback, shared by the session."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


WORKER_IDS = ["w1", "w2", "w3", "w4"]


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A real nats-server with JetStream and per-role users (bot; workers w1-w4) on loopback."""
    with nats_server(tmp_path_factory.mktemp("nats"), WORKER_IDS) as server:
        yield server


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name in list(logging.root.manager.loggerDict):
        logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
