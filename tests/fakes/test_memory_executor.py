"""The in-memory executor's own promises beyond the Executor contract (which
tests/remote/test_executor_contract.py holds it to): time limits, stops that do not land,
output kept apart between sessions, and relative paths in the session's folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import open_executor
from tests.fakes.app import fake_settings
from tests.fakes.memory_executor import InMemoryExecutor


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[InMemoryExecutor]:
    settings = fake_settings(tmp_path / "data", CODE_EXECUTION_TIMEOUT=1)
    async with open_executor(InMemoryExecutor, settings) as (executor, _):
        yield executor


async def test_a_cell_over_the_time_limit_ends_and_the_session_restarts(
    executor: InMemoryExecutor,
) -> None:
    await executor.run("u", "c", "kept = 1")
    result = await executor.run("u", "c", "import time\nwhile True:\n    time.sleep(0.01)")
    assert result.status == "timeout" and result.error and "1 s time limit" in result.error.message
    assert (await executor.run("u", "c", "'kept' in globals()")).value == "False"


async def test_a_stop_that_does_not_land_gives_the_session_up(executor: InMemoryExecutor) -> None:
    executor.stop_grace = 0.1
    started = asyncio.Event()

    async def on_output(name: str, text: str) -> None:
        started.set()

    # Code that swallows the interrupt, wherever it lands, and goes on for a while.
    code = (
        "import time\nfor _ in range(2):\n    try:\n        print('go', flush=True)\n"
        "        time.sleep(2)\n    except KeyboardInterrupt:\n        pass"
    )
    run = asyncio.create_task(executor.run("u", "c", code, on_output=on_output))
    async with asyncio.timeout(5):
        await started.wait()
        assert await executor.stop("u", "c")
        result = await run
    assert result.status == "killed" and "variables are gone" in result.notes[-1]
    assert (await executor.run("u", "c", "1 + 1")).value == "2"  # a fresh session


async def test_sessions_running_at_once_keep_their_output_apart(
    executor: InMemoryExecutor,
) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def collector(name: str):
        async def on_output(stream: str, text: str) -> None:
            seen[name].append(text)

        return on_output

    code = (
        "import time\nfor i in range(20):\n    print('{0}', i, flush=True)\n    time.sleep(0.001)"
    )
    a, b = await asyncio.gather(
        executor.run("u", "a", code.format("a"), on_output=collector("a")),
        executor.run("u", "b", code.format("b"), on_output=collector("b")),
    )
    assert a.stdout == "".join(f"a {i}\n" for i in range(20)) == "".join(seen["a"])
    assert b.stdout == "".join(f"b {i}\n" for i in range(20)) == "".join(seen["b"])


async def test_relative_paths_are_the_sessions_own(
    executor: InMemoryExecutor, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.txt"
    code = f"open('mine.txt', 'w').write('m')\nopen({str(outside)!r}, 'w').write('o')"
    result = await executor.run("u", "c", code)
    assert [f.name for f in result.files] == ["mine.txt"]
    assert outside.read_text() == "o" and not (Path.cwd() / "mine.txt").exists()
