"""Attacks on the sharing of the CPU between sessions, as hostile code (or a hostile user's
quick commands) would try them: a scheduling priority above the others', a cell lost while a
newer session of the same conversation starts, and a stop and a reset at once on code that
ignores interrupts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from labbot.sandbox import interpreter as interpreter_module
from labbot.sandbox.pool import Session


def _started(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


SCHEDULING = """
import errno, os, resource
outcomes = {}
def attempt(name, call):
    try:
        call()
        outcomes[name] = 'allowed'
    except OSError as exc:
        outcomes[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    except ValueError:  # Python's refusal to raise a hard limit (the kernel's EPERM)
        outcomes[name] = 'EPERM'
attempt('nice', lambda: os.nice(-5))
attempt('setpriority', lambda: os.setpriority(os.PRIO_PROCESS, 0, -10))
attempt('setpriority_group', lambda: os.setpriority(os.PRIO_PGRP, 0, -10))
attempt('setpriority_user', lambda: os.setpriority(os.PRIO_USER, 0, -10))
attempt('fifo', lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)))
attempt('rr', lambda: os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)))
attempt('rtprio', lambda: resource.setrlimit(resource.RLIMIT_RTPRIO, (99, 99)))
attempt('rlimit_nice', lambda: resource.setrlimit(resource.RLIMIT_NICE, (40, 40)))
(outcomes, os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0))
"""


async def test_code_cannot_raise_its_scheduling_priority(jailed) -> None:
    """A negative nice value, a real-time policy, or the limits that would allow either, are
    refused: the cgroup's weight is the only say a session has, and the host sets it."""
    interpreter, _ = jailed
    result = await interpreter.run("u", "c", SCHEDULING)
    assert result.status == "ok", result
    outcomes, nice, policy = eval(result.value)  # noqa: S307 - our own tuple repr
    # Every attempt is refused (EPERM, or EACCES for a lower nice value), none allowed.
    assert all(value in {"EPERM", "EACCES", "EINVAL"} for value in outcomes.values()), outcomes
    assert nice >= 0 and policy == os.SCHED_OTHER


async def test_a_lost_cell_does_not_end_the_session_started_after_it(
    make_interpreter, monkeypatch
) -> None:
    """A cell that will not stop is killed; before its run has cleaned up, the same user's
    next run (two at once are allowed here) has already started a new session for the
    conversation. The lost cell's clean-up ends its own session only, never the new one."""
    monkeypatch.setattr(interpreter_module, "INTERRUPT_GRACE", 0.2)
    async with make_interpreter(MAX_CONCURRENT_EXECUTIONS_PER_USER=2) as (interpreter, _):
        await interpreter.run("u", "c", "x = 1")
        first = interpreter.sessions.sessions[("u", "c")]
        running = asyncio.Event()
        newer: list[Session] = []
        kill = first.kernel.kill

        async def kill_after_a_newer_session_started() -> None:
            if not newer:  # the kernel is dead already (the stop said so): a get replaces it
                newer.append(await interpreter.sessions.get("u", "c"))
            await kill()

        first.kernel.kill = kill_after_a_newer_session_started  # type: ignore[method-assign]

        async def on_output(stream: str, text: str) -> None:
            running.set()

        stubborn = (
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('running', flush=True)\nwhile True:\n    pass\n"
        )
        task = asyncio.create_task(interpreter.run("u", "c", stubborn, on_output=on_output))
        async with asyncio.timeout(20):
            await running.wait()
            assert await interpreter.stop("u", "c")
            assert (await task).status == "killed"
        assert newer and newer[0] is not first
        assert interpreter.sessions.sessions.get(("u", "c")) is newer[0]
        assert newer[0].kernel.alive
        result = await interpreter.run("u", "c", "print(2)")
        assert result.stdout == "2\n" and interpreter.sessions.sessions[("u", "c")] is newer[0]


async def test_a_stop_and_a_reset_at_once_leave_nothing_behind(jailed, monkeypatch) -> None:
    """Code that ignores SIGINT (and KeyboardInterrupt) in the kernel and in a child process,
    stopped and reset at once: every process ends, the cgroup and the folder go, the uid is
    given back, and the conversation's next cell runs in a fresh session."""
    monkeypatch.setattr(interpreter_module, "INTERRUPT_GRACE", 0.2)
    interpreter, _ = jailed
    running = asyncio.Event()

    async def on_output(stream: str, text: str) -> None:
        running.set()

    code = (
        "import signal, subprocess, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal\\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: pass'])\n"
        "print('running', flush=True)\nwhile True:\n    try:\n        while True:\n"
        "            pass\n    except KeyboardInterrupt:\n        pass\n"
    )
    await interpreter.run("u", "c", "x = 1")
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    if kernel.cgroup is None:
        pytest.skip("no cgroup here")
    cgroup, workdir, name = kernel.cgroup, kernel.workdir, kernel.name
    task = asyncio.create_task(interpreter.run("u", "c", code, on_output=on_output))
    async with asyncio.timeout(20):
        await running.wait()
        pids = await asyncio.to_thread(lambda: {pid: _started(pid) for pid in cgroup.pids()})
        assert len(pids) >= 2, pids
        stopped, reset = await asyncio.gather(
            interpreter.stop("u", "c"), interpreter.reset("u", "c")
        )
        assert stopped and reset
        result = await task
    assert result.status == "killed", result
    assert not kernel.alive
    # The same pid with the same start time: the same process (a pid may be reused).
    left = await asyncio.to_thread(lambda: [p for p, t in pids.items() if _started(p) == t])
    assert not left
    folders = [*getattr(cgroup, "dirs", {}).values(), getattr(cgroup, "dir", None), workdir]
    assert not await asyncio.to_thread(lambda: [f for f in folders if f and f.exists()])
    assert name not in interpreter.jail._leases
    after = await interpreter.run("u", "c", "'x' in globals()")
    assert after.value == "False", after


async def test_new_conversations_at_once_keep_to_the_per_user_limit(make_interpreter) -> None:
    """A user at their limit of live sessions opens two new conversations at once (two runs at
    once are allowed): each makes room among the user's own sessions, counting the one still
    starting, so the user never holds more than their share of the server's kernels."""
    async with make_interpreter(MAX_SESSIONS_PER_USER=2, MAX_CONCURRENT_EXECUTIONS_PER_USER=2) as (
        interpreter,
        _,
    ):
        sessions = interpreter.sessions
        await sessions.get("u", "a")
        await sessions.get("u", "b")
        await asyncio.gather(sessions.get("u", "c"), sessions.get("u", "d"))
        mine = [key for key in sessions.sessions if key[0] == "u"]
        assert sorted(mine) == [("u", "c"), ("u", "d")]
