"""Worker machines (real `labbot worker` processes) and a bot-side RemoteExecutor over a real
nats-server and a real S3 server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NotFoundError

from labbot.config import Settings, load_settings
from labbot.files import FileStore
from labbot.remote import bus
from labbot.remote.executor import RemoteExecutor
from tests.conftest import Factory, open_executor
from tests.servers import S3, Nats, Process, workers_running


@pytest.fixture(scope="module")
def workers(
    nats: Nats, s3_server: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Process]]:
    """Two worker machines, w1 and w2, shared by a test module."""
    with workers_running(("w1", "w2"), nats, s3_server, tmp_path_factory.mktemp("workers")) as up:
        yield up


def bot_settings(nats: Nats, s3: S3, data_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("CODE_EXECUTION_TIMEOUT", 30)
    return load_settings(
        LABBOT_DATA_DIR=data_dir,
        LABBOT_EXECUTOR="nats",
        **nats.bot_env(),
        **s3.env(),
        **overrides,
    )


RemoteFactory = Factory


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
        async with open_executor(RemoteExecutor, settings) as pair:
            yield pair

    return make


@asynccontextmanager
async def connected_as(
    nats: Nats, who: str, errors: asyncio.Queue[str] | None = None
) -> AsyncIterator[Client]:
    """A raw NATS connection with a worker's credentials ("w1") or the bot's ("bot"); what the
    server refuses goes to ``errors``."""
    env = nats.bot_env() if who == "bot" else nats.worker_env(who)

    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.put_nowait(str(exc))

    nc = await nats_client.connect(
        env["LABBOT_NATS_URL"],
        user=env["LABBOT_NATS_USER"],
        password=env["LABBOT_NATS_PASSWORD"],
        error_cb=on_error,
    )
    try:
        yield nc
    finally:
        await nc.close()
