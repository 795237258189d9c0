"""A kernel left parked between cells (every thread blocked with no clock to wake it) is not
stopped and continued, which only woke each of its threads twice per cell; anything that could
run later is stopped as before. Run as root (cgroups) and, through test_unprivileged.py, as an
unprivileged bot (no cgroup: always stopped)."""

from __future__ import annotations

import asyncio

import pytest

from labbot.sandbox.jail.freezer import KERNEL_SIGCATCH, _waits_for_ever


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


async def _idle_cpu(kernel) -> float:
    """CPU seconds the session uses in a one-second window between cells."""
    await kernel.settled()
    before = await asyncio.to_thread(kernel.cpu_seconds)
    await asyncio.sleep(1.0)  # a measuring window, not a synchronisation
    return await asyncio.to_thread(kernel.cpu_seconds) - before


async def test_an_idle_kernel_is_parked_not_stopped(jailed) -> None:
    """After an ordinary cell the kernel is parked: no process was sent SIGSTOP, it uses no
    CPU, and the next cell runs with its variables. (A result can reach the host before the
    kernel's threads are back in their waits; such a cell is stopped as before, so a few
    cells are run and one parked is enough.)"""
    interpreter, _ = jailed
    parked = []
    for n in range(5):
        assert (await interpreter.run("u", "c", f"x = [1, {n}]")).status == "ok"
        kernel = interpreter.sessions.sessions[("u", "c")].kernel
        await kernel.settled()
        if kernel.cgroup is None or not kernel.cgroup.procs_files():
            pytest.skip("no cgroup process list here: every cell is stopped")
        if kernel._parked:
            parked.append([_state(pid) for pid in kernel._pids()])
            break
    assert parked == [["S"]]  # sleeping, never stopped
    assert await _idle_cpu(kernel) < 0.05
    assert (await interpreter.run("u", "c", "sum(x)")).value == str(1 + n)


TIMED_THREAD = (
    "import threading, time\ndef tick():\n    while True:\n        time.sleep(0.001)\n"
    "        sum(range(20000))\nthreading.Thread(target=tick, daemon=True).start()"
)
TIMER_HANDLER = (
    "import signal\ndef work(*_):\n    sum(range(200000))\n"
    "signal.signal(signal.SIGALRM, work)\nsignal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)"
)
CHILD = (
    "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time\\n"
    "while True:\\n    time.sleep(0.001)\\n    sum(range(20000))'])"
)


@pytest.mark.parametrize(
    ("code", "may_park"),
    [(TIMED_THREAD, False), (TIMER_HANDLER, False), (CHILD, True)],
    ids=["timed-thread", "timer-handler", "child"],
)
async def test_what_could_run_later_is_stopped(jailed, code: str, may_park: bool) -> None:
    """A thread sleeping by the clock and a caught timer signal are not parked, so they are
    stopped as before (a cell's children end with it: once they are gone, parked is right);
    either way the session uses no CPU between cells."""
    interpreter, _ = jailed
    result = await interpreter.run("u", "c", code + "\nkeep = 1")
    assert result.status == "ok", result
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    await kernel.settled()
    assert may_park or not kernel._parked
    assert await _idle_cpu(kernel) < 0.05
    assert (await interpreter.run("u", "c", "keep")).value == "1"


@pytest.mark.parametrize(
    ("line", "endless"),
    [
        (b"202 0x55 0x189 0x0 0x0 0x0 0xffffffff 0x7ff 0x7fd", True),  # futex, no timeout
        (b"202 0x55 0x189 0x0 0x7ffd1000 0x0 0xffffffff 0x7ff 0x7fd", False),  # timed futex
        (b"202 0x55 0x81 0x1 0x0 0x0 0x0 0x7ff 0x7fd", False),  # FUTEX_WAKE is not a wait
        (b"232 0xa 0x7fdb 0x3 0xffffffff 0x0 0x0 0x7fdb 0x7fdb", True),  # epoll_wait(-1)
        (b"232 0xa 0x7fdb 0x3 0x3e8 0x0 0x0 0x7fdb 0x7fdb", False),  # epoll_wait(1000 ms)
        (b"7 0x7fdb 0x2 0xffffffff 0x0 0x0 0x0 0x7fdb 0x7fdb", True),  # poll(-1)
        (b"23 0x5 0x7fdb 0x0 0x0 0x7ffd 0x0 0x7fdb 0x7fdb", False),  # select with a timeout
        (b"230 0x1 0x0 0x7ffd 0x0 0x0 0x0 0x7fdb 0x7fdb", False),  # clock_nanosleep
        (b"running", False),
        (b"-1 0x7ffd 0x7fdb", False),  # blocked outside a syscall
    ],
)
def test_waits_that_no_clock_ends(line: bytes, endless: bool) -> None:
    """Which /proc/PID/syscall lines count as parked (pid 0: no fd is looked up here)."""
    assert _waits_for_ever(0, line) is endless


def test_only_the_kernels_own_handlers_are_allowed() -> None:
    """SIGINT (a stop) and SIGXCPU (the CPU limit) are the kernel's; SIGALRM is not."""
    import signal

    assert KERNEL_SIGCATCH & (1 << (signal.SIGINT - 1))
    assert KERNEL_SIGCATCH & (1 << (signal.SIGXCPU - 1))
    assert not KERNEL_SIGCATCH & (1 << (signal.SIGALRM - 1))
