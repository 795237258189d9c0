"""The Executor contract: sessions on this machine (CodeInterpreter), on worker machines over
NATS (RemoteExecutor, real `labbot worker` processes, blobs in a real S3 server), and the
in-memory test fake (InMemoryExecutor) behave alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from labbot.config import load_settings
from labbot.files import FileStore
from labbot.sandbox import Executor
from tests.conftest import open_executor
from tests.fakes.memory_executor import InMemoryExecutor

Make = Callable[..., AbstractAsyncContextManager[tuple[Executor, FileStore]]]


@pytest.fixture(
    params=[
        pytest.param("local", marks=pytest.mark.sandbox),
        pytest.param("remote", marks=[pytest.mark.sandbox, pytest.mark.nats, pytest.mark.s3]),
        "memory",
    ]
)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    if request.param == "remote":
        request.getfixturevalue("workers")
        return request.getfixturevalue("make_remote")
    if request.param == "local":
        make_interpreter: Make = request.getfixturevalue("make_interpreter")
        return lambda **overrides: make_interpreter(
            **{"CODE_EXECUTION_TIMEOUT": 30, "SANDBOX_WARM_POOL": 1, **overrides}
        )

    def memory(**overrides: Any) -> AbstractAsyncContextManager[tuple[Executor, FileStore]]:
        settings = load_settings(LABBOT_DATA_DIR=tmp_path / "data", **overrides)
        return open_executor(InMemoryExecutor, settings)

    return memory


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
        saved = await store.save("u2", "sales.json", chunks(b'{"north": 3, "south": 4}'))
        code = (
            f"d = load_file({saved.record.id!r})\nsame = load_file('sales.json')\n"
            "print([f['name'] for f in list_files()], list(FILES))\n"
            "sum(d.values()), same == d"
        )
        result = await executor.run("u2", conversation(), code)
        assert result.value == "(7, True)", result.to_json()
        assert result.stdout == f"['sales.json'] [{saved.record.id!r}]\n"
        missing = await executor.run("u2", conversation(), "load_file('nope.csv')")
        assert missing.error and missing.error.name == "FileNotFoundError"
        assert "sales.json" in missing.error.message


async def test_written_files_come_back_with_ids_under_the_users_limits(make: Make) -> None:
    async with make(MAX_FILES_PER_USER=2) as (executor, store):
        first = await store.save("u3", "a.txt", chunks(b"a"))
        await store.save("u3", "b.txt", chunks(b"b"))
        c = conversation()
        result = await executor.run("u3", c, "open('out.csv', 'w').write('n\\n1\\n2\\n')")
        assert [f.name for f in result.files] == ["out.csv"], result.to_json()
        out = result.files[0]
        assert out.kind == "csv" and out.size == len(b"n\n1\n2\n")
        assert await store.read_bytes("u3", out.id) == b"n\n1\n2\n"
        assert any(first.record.id in note for note in result.notes)  # the oldest was evicted
        assert {r.name for r in await store.list("u3")} == {"b.txt", "out.csv"}
        assert (await executor.run("u3", c, "print('nothing new')")).files == ()


async def test_output_streams_in_order(make: Make) -> None:
    async with make() as (executor, _):
        seen: list[tuple[str, str]] = []

        async def on_output(name: str, text: str) -> None:
            seen.append((name, text))

        code = (
            "import sys\nfor i in range(5):\n    print(i, flush=True)\nprint('e', file=sys.stderr)"
        )
        result = await executor.run("u4", conversation(), code, on_output=on_output)
        assert (result.stdout, result.stderr) == ("0\n1\n2\n3\n4\n", "e\n")
        assert "".join(text for name, text in seen if name == "stdout") == result.stdout
        assert "".join(text for name, text in seen if name == "stderr") == result.stderr


async def test_errors_are_results_with_the_users_lines(make: Make) -> None:
    async with make() as (executor, _):
        code = "def f(d):\n    return d['missing']\n\nprint('before')\nf({})\n"
        result = await executor.run("u8", conversation(), code)
        assert result.status == "error" and result.stdout == "before\n"
        assert result.error is not None and result.error.name == "KeyError"
        assert "line 5, in <module>" in result.error.traceback
        assert "line 2, in f" in result.error.traceback
        broken = await executor.run("u8", conversation(), "x = 1\nif x\n    pass")
        assert broken.error is not None and broken.error.name == "SyntaxError"


async def test_stop_interrupts_and_keeps_variables(make: Make) -> None:
    async with make() as (executor, _):
        c = conversation()
        await executor.run("u5", c, "kept = 7")
        started = asyncio.Event()

        async def on_output(name: str, text: str) -> None:
            started.set()

        # Short sleeps: the in-memory fake's interrupt lands between bytecodes, not in a call.
        code = "import time\nprint('go', flush=True)\nwhile True:\n    time.sleep(0.02)"
        run = asyncio.create_task(executor.run("u5", c, code, on_output=on_output))
        async with asyncio.timeout(20):
            await started.wait()
        assert await executor.stop("u5", c)
        result = await asyncio.wait_for(run, 20)
        assert result.status == "error" and result.error.name == "KeyboardInterrupt"
        assert (await executor.run("u5", c, "kept")).value == "7"
        assert not await executor.stop("u5", c)  # nothing running now


async def test_a_stop_that_does_not_land_ends_the_session(make: Make) -> None:
    """Code that ignores the interrupt (SIGINT ignored): stop() gives the session up after its
    grace (True, no error out of it), the cell is reported killed, and the next cell runs in a
    fresh one, which the checkpoint made after the last finished cell gives its variables back."""
    async with make() as (executor, _):
        if isinstance(executor, InMemoryExecutor):
            pytest.skip("the in-memory fake interrupts between bytecodes, not by a signal")
        c = conversation()
        await executor.run("u9", c, "kept = 7")
        started = asyncio.Event()

        async def on_output(name: str, text: str) -> None:
            started.set()

        code = (
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('go', flush=True)\nwhile True:\n    time.sleep(0.02)"
        )
        run = asyncio.create_task(executor.run("u9", c, code, on_output=on_output))
        async with asyncio.timeout(20):
            await started.wait()
        assert await executor.stop("u9", c)
        result = await asyncio.wait_for(run, 20)
        assert result.status == "killed", result
        after = await executor.run("u9", c, "kept")
        assert after.value == "7" and after.session_restarted, after


async def test_reset_forgets_variables_and_keeps_files(make: Make) -> None:
    async with make() as (executor, _):
        c = conversation()
        await executor.run("u6", c, "y = 1\nopen('keep.txt', 'w').write('k')")
        assert await executor.reset("u6", c)
        code = "print(sorted(f['name'] for f in list_files()))\n'y' in globals()"
        result = await executor.run("u6", c, code)
        assert (result.value, result.stdout) == ("False", "['keep.txt']\n")  # files stay


async def test_no_network_and_no_storage_keys_inside(make: Make) -> None:
    async with make() as (executor, _):
        if isinstance(executor, InMemoryExecutor):
            pytest.skip("the in-memory fake isolates nothing: only real sandboxes are held to this")
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
