"""CPU weights between neighbours: a warm-pool kernel starts at the low CPU weight, so its start
does not slow a live session's cell, and a session never keeps it. Run as root (cgroups);
without a cpu controller there is no weight to check."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

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
