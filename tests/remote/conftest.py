"""Worker machines (real `labbot worker` processes) and a bot-side RemoteExecutor over a real
nats-server and a real S3 server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest
from nats.js.errors import BucketNotFoundError, NotFoundError

from labbot.config import Settings, load_settings
from labbot.files import FileStore
from labbot.remote import bus
from labbot.remote.executor import RemoteExecutor
from tests.conftest import make_store
from tests.servers import S3, Nats, Process, start_worker


@pytest.fixture(scope="module")
def workers(
    nats: Nats, s3_server: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Process]]:
    """Two worker machines, w1 and w2, shared by a test module."""
    root = tmp_path_factory.mktemp("workers")
    started: dict[str, Process] = {}
    try:
        for host in ("w1", "w2"):
            started[host] = start_worker(host, nats, s3_server, root / host)
        yield started
    finally:
        for process in started.values():
            process.stop()


def bot_settings(nats: Nats, s3: S3, data_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("CODE_EXECUTION_TIMEOUT", 30)
    return load_settings(
        LABBOT_DATA_DIR=data_dir,
        LABBOT_EXECUTOR="nats",
        **nats.bot_env(),
        **s3.env(),
        **overrides,
    )


RemoteFactory = Callable[..., Any]


async def empty_placements(nats: Nats) -> None:
    """No session placed anywhere: the placement bucket (shared by every test of the session)
    is removed, so what the bot counts per worker is this test's alone."""
    nc = await nats_client.connect(nats.url, user="bot", password=nats.bot_password)
    try:
        with contextlib.suppress(NotFoundError, BucketNotFoundError):
            await nc.jetstream().delete_key_value(bus.KV_BUCKET)
    finally:
        await nc.close()


@pytest.fixture
def make_remote(nats: Nats, s3_server: S3, tmp_path: Path) -> RemoteFactory:
    """A bot process's RemoteExecutor and FileStore (blobs in S3), closed by ``async with``.
    The test's first bot starts on a cluster with no sessions placed."""
    emptied: list[bool] = []

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[tuple[RemoteExecutor, FileStore]]:
        if not emptied:
            await empty_placements(nats)
            emptied.append(True)
        settings = bot_settings(nats, s3_server, tmp_path / "bot", **overrides)
        store = make_store(settings)
        await store.start()
        executor = RemoteExecutor(settings, store)
        await executor.start()
        try:
            yield executor, store
        finally:
            await executor.close()
            await store.close()

    return make
