"""Worker machines (real `labbot worker` processes) and a bot-side RemoteExecutor over a real
nats-server and a real S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from labbot.config import Settings, load_settings
from labbot.files import FileStore
from labbot.remote.executor import RemoteExecutor
from tests.conftest import Factory, open_executor
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


RemoteFactory = Factory


@pytest.fixture
def make_remote(nats: Nats, s3_server: S3, tmp_path: Path) -> RemoteFactory:
    """A bot process's RemoteExecutor and FileStore (blobs in S3), closed by ``async with``."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[tuple[RemoteExecutor, FileStore]]:
        return open_executor(
            RemoteExecutor, bot_settings(nats, s3_server, tmp_path / "bot", **overrides)
        )

    return make
