"""The Executor contract: sessions on this machine (CodeInterpreter) and on worker machines over
NATS (RemoteExecutor, real `labbot worker` processes, blobs in a real S3 server) behave alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from labbot.config import load_settings
from labbot.files import FileStore
from labbot.sandbox import CodeInterpreter, Executor
from tests.conftest import make_store
from tests.remote.conftest import RemoteFactory

Make = Callable[..., AbstractAsyncContextManager[tuple[Executor, FileStore]]]


@pytest.fixture(params=["local", "remote"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    if request.param == "remote":
        request.getfixturevalue("workers")
        remote: RemoteFactory = request.getfixturevalue("make_remote")
        return remote

    @asynccontextmanager
    async def local(**overrides: Any) -> AsyncIterator[tuple[Executor, FileStore]]:
        overrides.setdefault("CODE_EXECUTION_TIMEOUT", 30)
        overrides.setdefault("SANDBOX_WARM_POOL", 1)
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

    return local


def conversation() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_variables_persist_and_errors_are_results(make: Make) -> None:
    async with make() as (executor, _):
        c = conversation()
        assert (await executor.run("u1", c, "x = 41")).status == "ok"
        result = await executor.run("u1", c, "x + 1")
        assert (result.status, result.value) == ("ok", "42")
        assert not result.session_restarted
        failed = await executor.run("u1", c, "1 / 0")
        assert failed.status == "error" and failed.error.name == "ZeroDivisionError"
        other = await executor.run("u1", conversation(), "'x' in globals()")
        assert other.value == "False"  # another conversation, another session


async def test_load_file_sees_the_users_files(make: Make) -> None:
    async with make() as (executor, store):
        saved = await store.save("u2", "sales.csv", chunks(b"region,amount\nnorth,3\nsouth,4\n"))
        code = f"df = load_file({saved.record.id!r})\nint(df['amount'].sum()), df.shape"
        result = await executor.run("u2", conversation(), code)
        assert result.value == "(7, (2, 2))", result.to_json()


async def test_written_files_come_back_with_ids_under_the_users_limits(make: Make) -> None:
    async with make(MAX_FILES_PER_USER=2) as (executor, store):
        first = await store.save("u3", "a.txt", chunks(b"a"))
        await store.save("u3", "b.txt", chunks(b"b"))
        code = "import pandas as pd\npd.DataFrame({'n': [1, 2]}).to_csv('out.csv', index=False)"
        result = await executor.run("u3", conversation(), code)
        assert [f.name for f in result.files] == ["out.csv"], result.to_json()
        out = result.files[0]
        assert out.kind == "csv" and out.size == len(b"n\n1\n2\n")
        assert await store.read_bytes("u3", out.id) == b"n\n1\n2\n"
        assert any(first.record.id in note for note in result.notes)  # the oldest was evicted
        assert {r.name for r in await store.list("u3")} == {"b.txt", "out.csv"}


async def test_output_streams_in_order(make: Make) -> None:
    async with make() as (executor, _):
        seen: list[str] = []

        async def on_output(name: str, text: str) -> None:
            seen.append(text)

        code = "import sys\nfor i in range(5):\n    print(i, flush=True)\n"
        result = await executor.run("u4", conversation(), code, on_output=on_output)
        assert result.stdout == "0\n1\n2\n3\n4\n"
        assert "".join(seen) == result.stdout


async def test_stop_interrupts_and_keeps_variables(make: Make) -> None:
    async with make() as (executor, _):
        c = conversation()
        await executor.run("u5", c, "kept = 7")
        started = asyncio.Event()

        async def on_output(name: str, text: str) -> None:
            started.set()

        code = "import time\nprint('go', flush=True)\ntime.sleep(60)"
        run = asyncio.create_task(executor.run("u5", c, code, on_output=on_output))
        async with asyncio.timeout(20):
            await started.wait()
        assert await executor.stop("u5", c)
        result = await asyncio.wait_for(run, 20)
        assert result.status == "error" and result.error.name == "KeyboardInterrupt"
        assert (await executor.run("u5", c, "kept")).value == "7"
        assert not await executor.stop("u5", c)  # nothing running now


async def test_reset_forgets_variables(make: Make) -> None:
    async with make() as (executor, _):
        c = conversation()
        await executor.run("u6", c, "y = 1")
        assert await executor.reset("u6", c)
        result = await executor.run("u6", c, "'y' in globals()")
        assert result.value == "False"


async def test_no_network_and_no_storage_keys_inside(make: Make) -> None:
    async with make() as (executor, _):
        code = (
            "import os, socket\n"
            "keys = sorted(k for k in os.environ if k.startswith(('AWS', 'LABBOT_NATS')))\n"
            "try:\n"
            "    socket.create_connection(('127.0.0.1', 4222), timeout=2)\n"
            "    net = 'reached'\n"
            "except OSError:\n"
            "    net = 'blocked'\n"
            "keys, net"
        )
        result = await executor.run("u7", conversation(), code)
        assert result.value == "([], 'blocked')", result.to_json()
