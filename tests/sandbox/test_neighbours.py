"""Neighbours: a warm-pool kernel starts at the low CPU weight, so its start does not slow a
live session's cell, and a session never keeps it; a taken pool kernel is replaced once the
taker's first cell is over; a long cell goes on at the low weight, so a neighbour's short cell
comes first; a flooding session costs the host only its head. Run as root (cgroups); without a
cpu controller there is no weight to check."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from labbot.sandbox import kernel_client, pool
from labbot.sandbox.jail.cgroups import LOW_SHARES, NORMAL_SHARES
from labbot.sandbox.kernel_client import KernelProcess


def _weight_file(kernel: KernelProcess) -> Path:
    cgroup = kernel.cgroup
    dirs = getattr(cgroup, "dirs", {})
    if "cpu" in dirs:
        return dirs["cpu"] / "cpu.shares"
    folder = getattr(cgroup, "dir", None)
    if folder is not None and (folder / "cpu.weight").exists():
        return folder / "cpu.weight"
    pytest.skip("no cpu controller here: no CPU weight to set")


def _shares(kernel: KernelProcess) -> int:
    """The kernel's CPU weight as the host's cgroupfs has it, in v1 shares."""
    path = _weight_file(kernel)
    value = int(path.read_text())
    return value if path.name == "cpu.shares" else value * NORMAL_SHARES // 100


async def test_a_pool_kernel_starts_low_and_its_session_runs_at_the_normal_weight(
    make_interpreter,
) -> None:
    """The pooled kernel waits at the low weight; once a session has it, the normal one; the
    refill started for the next user is low again. Code inside cannot change it."""
    async with make_interpreter(SANDBOX_WARM_POOL=1) as (interpreter, _):
        await interpreter.sessions.wait_for_pool()
        pooled = interpreter.sessions._pool[0]
        assert _shares(pooled) == LOW_SHARES
        code = (
            "import glob\nrefused = []\n"
            "for path in glob.glob('/sys/fs/cgroup/**/cpu.*', recursive=True) + "
            "['/sys/fs/cgroup/cpu/cpu.shares', '/proc/self/cgroup']:\n"
            "    try:\n        open(path, 'w').write('2')\n"
            "    except OSError:\n        refused.append(path)\n"
            "'ok' if refused and len(refused) == len(set(refused)) else refused"
        )
        result = await interpreter.run("alice", "c", code)
        assert result.value == "'ok'", result
        assert interpreter.sessions.sessions[("alice", "c")].kernel is pooled
        assert _shares(pooled) == NORMAL_SHARES
        await interpreter.sessions.wait_for_pool()
        assert _shares(interpreter.sessions._pool[0]) == LOW_SHARES


async def test_a_pool_kernel_whose_weight_cannot_be_raised_serves_no_one(
    make_interpreter,
) -> None:
    """If the cgroup refuses the normal weight, the pooled kernel is killed and the session
    gets a kernel of its own, at the normal weight."""
    async with make_interpreter(SANDBOX_WARM_POOL=1) as (interpreter, _):
        await interpreter.sessions.wait_for_pool()
        pooled = interpreter.sessions._pool[0]
        _weight_file(pooled)  # skips without a cpu controller

        def refuse(shares: int) -> None:
            raise OSError(errno.EIO, "the cgroup file refused the write")

        pooled.cgroup._write_weight = refuse  # type: ignore[union-attr, method-assign]
        result = await interpreter.run("alice", "c", "print(1)")
        assert result.stdout == "1\n", result
        kernel = interpreter.sessions.sessions[("alice", "c")].kernel
        assert kernel is not pooled and not pooled.alive
        assert _shares(kernel) == NORMAL_SHARES


async def test_a_long_cell_goes_on_at_the_low_weight_and_the_next_cell_is_normal(
    make_interpreter, monkeypatch
) -> None:
    """A cell running past FOREGROUND_SECONDS is lowered (a neighbour's short cell then comes
    first); a neighbour's short cell meanwhile completes at the normal weight; once stopped,
    the session's next cell runs at the normal weight again."""
    monkeypatch.setattr(kernel_client, "FOREGROUND_SECONDS", 0.2)
    async with make_interpreter() as (interpreter, _):
        await interpreter.run("hog", "c", "x = 1")
        hog = interpreter.sessions.sessions[("hog", "c")].kernel
        _weight_file(hog)  # skips without a cpu controller
        running, lowered = asyncio.Event(), asyncio.Event()
        to_background = hog._to_background

        def observed() -> None:  # the real step, and a signal that it ran
            to_background()
            lowered.set()

        hog._to_background = observed  # type: ignore[method-assign]

        async def on_output(stream: str, text: str) -> None:
            running.set()

        spin = "print('running', flush=True)\nwhile True:\n    pass\n"
        task = asyncio.create_task(interpreter.run("hog", "c", spin, on_output=on_output))
        async with asyncio.timeout(20):
            await running.wait()
            await lowered.wait()
        assert _shares(hog) == LOW_SHARES
        assert (await interpreter.run("victim", "c", "print(1)")).stdout == "1\n"
        victim = interpreter.sessions.sessions[("victim", "c")].kernel
        assert _shares(victim) == NORMAL_SHARES
        assert await interpreter.stop("hog", "c")
        assert (await task).status == "error"  # interrupted: the session lives on
        assert hog.alive and _shares(hog) == LOW_SHARES  # held between cells anyway
        assert (await interpreter.run("hog", "c", "x + 1")).value == "2"
        assert _shares(hog) == NORMAL_SHARES


async def test_a_flood_costs_the_host_only_its_head_and_a_neighbour_runs_meanwhile(
    make_interpreter,
) -> None:
    """While one session floods its stdout without end, the host is sent (and parses) only the
    stream's head, live; a neighbour's cell completes meanwhile; stopped, the flood's result
    holds its head and tail within the output limit."""
    async with make_interpreter() as (interpreter, _):
        limits = interpreter.jail.limits
        live: list[str] = []
        flooding = asyncio.Event()

        async def on_output(stream: str, text: str) -> None:
            live.append(text)
            if sum(map(len, live)) >= limits.output_head:
                flooding.set()

        flood = "import sys\nwhile True:\n    sys.stdout.write('running ' * 1000 + '\\n')\n"
        task = asyncio.create_task(interpreter.run("flood", "c", flood, on_output=on_output))
        async with asyncio.timeout(30):
            await flooding.wait()
        for _ in range(3):
            assert (await interpreter.run("victim", "c", "print(1)")).stdout == "1\n"
        assert await interpreter.stop("flood", "c")
        result = await task
        assert sum(map(len, live)) == limits.output_head
        most = limits.output_head + limits.output_tail + kernel_client.STREAM_SLACK
        assert "omitted" in result.stdout and len(result.stdout) <= most


async def _running(interpreter, user: str, code: str) -> asyncio.Task:
    """Start ``code`` (which prints first) in a session of ``user``; return once it runs."""
    started = asyncio.Event()

    async def on_output(stream: str, text: str) -> None:
        started.set()

    task = asyncio.create_task(interpreter.run(user, "c", code, on_output=on_output))
    async with asyncio.timeout(30):
        await started.wait()
    return task


SLEEPER = "import time\nprint('running', flush=True)\ntime.sleep(600)\n"


async def test_a_taken_pool_kernel_is_replaced_once_the_takers_first_cell_is_over(
    make_interpreter, monkeypatch
) -> None:
    """No replacement starts while the taker's first cell runs (its start would compete with
    that very cell); once the cell is over, the pool fills again."""
    monkeypatch.setattr(pool, "REFILL_AFTER", 3600.0)
    async with make_interpreter(SANDBOX_WARM_POOL=1) as (interpreter, _):
        sessions = interpreter.sessions
        await sessions.wait_for_pool()
        task = await _running(interpreter, "alice", SLEEPER)
        assert (sessions.warm, len(sessions._starting), sessions.kernels) == (0, 0, 1)
        assert (await interpreter.run("bob", "c", "print(2)")).stdout == "2\n"  # its own kernel
        assert await interpreter.stop("alice", "c")
        await task
        async with asyncio.timeout(30):
            await sessions.wait_for_pool()
        assert sessions.warm == 1


async def test_a_long_first_cell_does_not_hold_the_refill_back_for_ever(
    make_interpreter, monkeypatch
) -> None:
    """After REFILL_AFTER the pool is refilled even while the taker's first cell still runs."""
    monkeypatch.setattr(pool, "REFILL_AFTER", 0.05)
    async with make_interpreter(SANDBOX_WARM_POOL=1) as (interpreter, _):
        await interpreter.sessions.wait_for_pool()
        task = await _running(interpreter, "alice", SLEEPER)
        async with asyncio.timeout(30):
            await interpreter.sessions.wait_for_pool()
        assert not task.done() and interpreter.sessions.warm == 1
        assert await interpreter.stop("alice", "c")
        await task


@pytest.mark.parametrize(("cpus", "threads"), [(1.0, "1"), (0.5, "1"), (2.5, "3")])
async def test_numeric_libraries_get_threads_for_the_sessions_cpu_share_only(
    make_interpreter, cpus: float, threads: str
) -> None:
    """OpenBLAS, OpenMP and MKL inside start as many threads as SANDBOX_CPUS allows, rounded
    up: more would only wait on the quota, and every extra thread is one more to stop and
    look at between cells."""
    async with make_interpreter(SANDBOX_CPUS=cpus) as (interpreter, _):
        code = "import os\n[os.environ[k + '_NUM_THREADS'] for k in ('OMP', 'OPENBLAS', 'MKL')]"
        result = await interpreter.run("u", "c", code)
        assert result.value == repr([threads] * 3), result
