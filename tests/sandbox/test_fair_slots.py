"""Fair shares of time on real sandboxes: a user with no cell running goes before queued cells
of users who hold slots, and is told why it waits; a start that times out on a busy machine is
reported as busy, not as a set-up problem. Cells wait on files the test writes (no sleeps)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from labbot.core import progress_to
from labbot.errors import SandboxUnavailable
from labbot.sandbox import CodeInterpreter, kernel_client
from labbot.sandbox.jail import INSIDE_FILES

HOLD = (
    "import os, time\nprint('running', flush=True)\n"
    f"while not os.path.exists('{INSIDE_FILES}/go'):\n    time.sleep(0.005)\n'released'"
)


async def _hold(interpreter: CodeInterpreter, user: str) -> tuple[asyncio.Task, Path]:
    """Start a cell that runs until the test writes its go file; return once it runs."""
    running = asyncio.Event()

    async def on_output(name: str, text: str) -> None:
        running.set()

    task = asyncio.create_task(interpreter.run(user, "c", HOLD, on_output=on_output))
    async with asyncio.timeout(60):
        await running.wait()
    return task, interpreter.sessions.sessions[(user, "c")].kernel.files_dir / "go"


async def test_a_user_with_nothing_running_goes_before_queued_cells_of_busy_users(
    make_interpreter,
) -> None:
    """Two slots, held by a and b with long cells; a and b each queue one more cell, then c
    asks for print(1): when a's long cell ends, c runs next (first come, first served would
    run a's second cell), while b's still runs; c is told why it waited."""
    async with make_interpreter(
        MAX_CONCURRENT_EXECUTIONS=2, MAX_CONCURRENT_EXECUTIONS_PER_USER=2, MAX_SESSIONS=8
    ) as (interpreter, _):
        for user in ("a", "b", "c"):  # sessions started beforehand: only slots are awaited
            for conversation in ("c", "d"):
                assert (await interpreter.run(user, conversation, "1")).status == "ok"
        a_long, a_go = await _hold(interpreter, "a")
        b_long, b_go = await _hold(interpreter, "b")
        order: list[str] = []
        waits: dict[str, str] = {}
        queued = {user: asyncio.Event() for user in "abc"}

        def start(user: str, code: str) -> asyncio.Task:
            async def ran(name: str, text: str) -> None:
                # Output arrives while the cell holds its slot: the order slots were given
                # (a cell's completion may lag behind the next one's under load).
                order.append(user)

            async def run() -> None:
                result = await interpreter.run(user, "d", code, on_output=ran)
                assert result.status == "ok", result

            def on_progress(name: str, *, started: bool) -> None:
                if started:
                    waits[user] = name
                    queued[user].set()

            with progress_to(on_progress):  # the task takes the hook with it
                return asyncio.create_task(run())

        a_next = start("a", "print('a2')")
        b_next = start("b", "print('b2')")
        async with asyncio.timeout(30):
            await queued["a"].wait()
            await queued["b"].wait()
        c_next = start("c", "print(1)")
        async with asyncio.timeout(30):
            await queued["c"].wait()
        assert waits["c"] == "waiting for a free sandbox slot: 2 cells of other users are running"
        assert waits["a"].endswith("1 cells of other users are running and 1 of yours")
        a_go.write_text("")
        assert (await a_long).value == "'released'"
        async with asyncio.timeout(30):
            await c_next
        assert order[:1] == ["c"] and not b_long.done()  # a2 may follow at once
        b_go.write_text("")
        await asyncio.gather(b_long, a_next, b_next)
        assert order[0] == "c" and sorted(order) == ["a", "b", "c"]
        assert interpreter.slots.busy == 0


async def test_a_wait_past_the_queue_limit_is_a_clear_result(make_interpreter) -> None:
    """One slot held; another user's cell gives up after EXECUTION_QUEUE_TIMEOUT with a result
    that says nothing ran and why, and their session and the slot count are intact."""
    async with make_interpreter(MAX_CONCURRENT_EXECUTIONS=1, EXECUTION_QUEUE_TIMEOUT=0.2) as (
        interpreter,
        _,
    ):
        assert (await interpreter.run("b", "c", "x = 5")).status == "ok"
        held, go = await _hold(interpreter, "a")
        result = await interpreter.run("b", "c", "print(x)")
        assert result.status == "error" and result.error is not None
        assert result.error.name == "SandboxBusy"
        assert "not run" in result.error.message and "1 cells of other users" in (
            result.error.message
        )
        go.write_text("")
        await held
        assert (await interpreter.run("b", "c", "print(x)")).stdout == "5\n"
        assert interpreter.slots.busy == 0 and interpreter.slots.waiting == 0


async def test_a_start_that_times_out_on_a_busy_machine_says_busy(
    make_interpreter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel that cannot get ready in time while the load average is over the cores: the
    error names the busy machine, not user namespaces or the set-up."""
    monkeypatch.setattr(kernel_client, "STARTUP_TIMEOUT", 0.001)
    monkeypatch.setattr(kernel_client, "STARTUP_TIMEOUT_BUSY", 0.002)
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores * 4.0, cores * 4.0, cores * 4.0))
    async with make_interpreter() as (interpreter, _):
        with pytest.raises(SandboxUnavailable) as caught:
            await interpreter.run("u", "c", "print(1)")
    text = f"{caught.value} {caught.value.hint}"
    assert "busy" in text and "namespace" not in text, text
