"""Attacks a review found after the sandbox-escape fixes, each a test: the namespace's init
taken over through /proc/1/mem, SIGCONT undoing the stop between cells, machine-wide and
per-uid pools drained (AIO, PTYs, inotify, pipe buffers), a kernel that clears its
parent-death signal, and honest code that used to be taken for a forger."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import signal
import warnings
import zipfile

import pytest

from labbot.files import sniff, ziplisting
from labbot.sandbox.jail.freezer import tree_pids
from tests.sandbox.test_attacks import FORGE

FORGED_RESULT = (
    "channel.send({'type': 'result', 'cell': cell, 'status': 'ok', 'error': None, 'value': None,"
    " 'stdout': '', 'stderr': '', 'duration': 0.0, 'files': [], 'skipped': [],"
    " 'more_skipped': 0, 'missing_module': None})\n"
)


async def test_no_bubblewrap_process_inside_to_take_over(jailed) -> None:
    """The kernel is the namespace's init: no process inside runs bubblewrap, whose memory
    user code could write through /proc/1/mem."""
    interpreter, _ = jailed
    code = (
        "import os\nnames = {}\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
        "        names[int(p)] = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0]\n"
        "names"
    )
    result = await interpreter.run("u", "c", code)
    names = eval(result.value)  # noqa: S307 - our own dict repr
    assert names[1].endswith(b"python") and not [n for n in names.values() if b"bwrap" in n]


async def test_sigcont_cannot_undo_the_stop(jailed) -> None:
    """Thirty processes sending SIGCONT to everything, a spinning thread, and a forged result
    so the cell's clean-up never runs: SIGCONT is refused, and the session uses no CPU once
    the host has stopped it."""
    interpreter, _ = jailed
    code = (
        FORGE + "import os, signal, threading, time\n"
        "try:\n    os.kill(os.getpid(), signal.SIGCONT)\n    refused = False\n"
        "except PermissionError:\n    refused = True\n"
        "for _ in range(30):\n    if os.fork() == 0:\n        while True:\n"
        "            try:\n                os.kill(-1, signal.SIGCONT)\n"
        "            except OSError:\n                pass\n"
        "def spin():\n    while True:\n        pass\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "verdict = 'refused' if refused else 'ALLOWED'\n"
        # The verdict rides in the forged result itself: the live stream's pump thread may
        # not be scheduled before the forged result ends the cell (30 spinning processes).
        "time.sleep(0.5)\n"
        + FORGED_RESULT.replace("'stdout': ''", "'stdout': verdict")
        + "time.sleep(10**6)\n"
    )
    result = await interpreter.run("u", "c", code)
    assert result.stdout == "refused", result
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    await kernel.settled()
    before = await asyncio.to_thread(kernel.cpu_seconds)
    await asyncio.sleep(1.0)  # a measuring window, not a synchronisation
    assert await asyncio.to_thread(kernel.cpu_seconds) - before < 0.05


async def test_machine_wide_and_per_user_pools_are_out_of_reach(jailed) -> None:
    """AIO contexts, inotify instances and message queues are not available, pipe buffers
    cannot grow, and no pseudo-terminal can be opened."""
    interpreter, _ = jailed
    code = (
        "import ctypes, fcntl, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
        "ctx = ctypes.c_ulong(0)\n"
        "out['io_setup'] = (libc.syscall(206, 1, ctypes.byref(ctx)), ctypes.get_errno())\n"
        "out['inotify'] = (libc.inotify_init(), ctypes.get_errno())\n"
        "r, w = os.pipe()\n"
        "try:\n    fcntl.fcntl(r, 1031, 1 << 20)\n    out['pipe'] = 'GREW'\n"
        "except OSError as exc:\n    out['pipe'] = exc.errno\n"
        "try:\n    os.openpty()\n    out['pty'] = 'OPENED'\n"
        "except OSError as exc:\n    out['pty'] = exc.errno\n"
        "out"
    )
    result = await interpreter.run("u", "c", code)
    out = eval(result.value)  # noqa: S307
    assert out["io_setup"] == (-1, 38) and out["inotify"] == (-1, 38), out  # ENOSYS
    assert out["pipe"] == 1 and out["pty"] not in ("OPENED",), out  # EPERM


async def test_a_kernel_without_its_parent_death_signal_still_dies(jailed) -> None:
    """Code that clears the kernel's parent-death signal and starts a daemon: resetting the
    session leaves no process of it on the host."""
    interpreter, _ = jailed
    code = (
        "import ctypes, os\nctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\n"
        "if os.fork() == 0:\n    os.setsid()\n    while True:\n        pass\n'ok'"
    )
    assert (await interpreter.run("u", "c", FORGE + code)).value == "'ok'"
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    pids = await asyncio.to_thread(tree_pids, kernel.process.pid)
    assert len(pids) >= 2
    await interpreter.reset("u", "c")
    left = [p for p in pids if await asyncio.to_thread(_alive, p)]
    assert left == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


async def test_late_output_of_a_background_thread_is_not_a_forgery(jailed) -> None:
    """A thread that keeps printing after its cell returns does not end the session; its late
    output is dropped, the next cells run."""
    interpreter, _ = jailed
    code = (
        "import threading, time\ndef tick():\n    while True:\n        print('tick')\n"
        "        time.sleep(0.001)\nthreading.Thread(target=tick, daemon=True).start()\n"
        "time.sleep(0.05)\nkeep = 3"
    )
    assert (await interpreter.run("u", "c", code)).status == "ok"
    for _ in range(3):
        result = await interpreter.run("u", "c", "keep")
        assert result.value == "3" and not result.session_restarted, result


async def test_a_name_too_long_is_skipped_not_a_forgery(jailed) -> None:
    """An output nested five 250-character folders deep is named as skipped; the session
    stays."""
    interpreter, _ = jailed
    code = (
        "import os\npath = '/'.join(['d' * 250] * 5)\nos.makedirs(path)\n"
        "open(os.path.join(path, 'x.txt'), 'w').write('1')\nkeep = 1"
    )
    result = await interpreter.run("u", "c", code)
    assert result.status == "ok" and result.skipped_files, result
    assert "too long" in result.skipped_files[0].reason
    assert (await interpreter.run("u", "c", "keep")).value == "1"


@pytest.mark.parametrize("duration", ["float('inf')", "float('nan')", "1e999"])
async def test_infinite_numbers_are_forgeries(jailed, duration: str) -> None:
    """A result whose duration is not a finite number ends the session, as any bad frame."""
    interpreter, _ = jailed
    forged = FORGED_RESULT.replace("'duration': 0.0", f"'duration': {duration}")
    result = await interpreter.run("u", "c", FORGE + forged + "import time\ntime.sleep(10)")
    assert result.status == "killed" and "must not" in result.error.message


def test_sniffing_an_output_reads_one_marker_member(monkeypatch, tmp_path) -> None:
    """A zip of 2,000 members all named "mimetype" is sniffed by reading one of them, not all
    (each read inflates on the host)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # zipfile warns of each duplicate name: the point here
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for _ in range(2000):
                archive.writestr("mimetype", b"\0" * 4096)
    path = tmp_path / "many.zip"
    path.write_bytes(buffer.getvalue())
    reads = []
    original = ziplisting._member

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - passed through
        reads.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ziplisting, "_member", counted)
    names, peek = sniff._zip_members(path.read_bytes()[:4096], path)
    assert len(names) == 2000 and list(peek) == ["mimetype"]
    assert len(reads) == 1


SIGNAL_PROBES = """
import ctypes, errno, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
HIGH = 1 << 32  # the kernel reads int arguments as 32 bits: 18 | HIGH arrives as 18

def call(nr, *args):
    ctypes.set_errno(0)
    done = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if done == 0 and nr == 56:  # a clone() that went through: the child leaves at once
        os._exit(0)
    return errno.errorcode.get(ctypes.get_errno(), 'ok') if done == -1 else 'ok'

signal.pthread_sigmask(signal.SIG_BLOCK, {34})  # a queued real-time signal would wait here
me, buf = os.getpid(), ctypes.create_string_buffer(128)
read_end, _ = os.pipe()
pidfd = os.pidfd_open(me)
{
    'kill SIGCONT, high bits': call(62, me, 18 | HIGH),
    'tkill SIGCONT, high bits': call(200, me, 18 | HIGH),
    'tgkill SIGCONT, high bits': call(234, me, me, 18 | HIGH),
    'pidfd_send_signal SIGCONT, high bits': call(424, pidfd, 18 | HIGH, 0, 0),
    'rt_sigqueueinfo SIGCONT': call(129, me, 18, ctypes.addressof(buf)),
    'kill a real-time signal': call(62, me, 34),
    'tgkill a real-time signal, high bits': call(234, me, me, 40 | HIGH),
    'rt_sigqueueinfo a real-time signal': call(129, me, 34, ctypes.addressof(buf)),
    'rt_tgsigqueueinfo SIGRTMAX': call(297, me, me, 64, ctypes.addressof(buf)),
    'timer_create': call(222, 1, 0, ctypes.addressof(buf)),
    'fcntl F_SETSIG SIGCONT': call(72, read_end, 10, 18),
    'fcntl F_SETPIPE_SZ, high bits': call(72, read_end, 1031 | HIGH, 1 << 20),
    'prctl PR_SET_PDEATHSIG SIGCONT': call(157, 1, 18),
    'clone with SIGCONT as exit signal': call(56, 18, 0, 0, 0, 0),
}
"""


async def test_no_way_to_have_sigcont_sent_or_signals_queued(jailed) -> None:
    """Every way user code could have SIGCONT sent (and so undo the stop between cells) is
    refused, high bits or not: kill-family calls, a POSIX timer, F_SETSIG, the parent-death
    signal, a clone() exit signal; real-time signals, which queue without bound against the
    one budget every session shares, are refused too. Ordinary signals still work."""
    interpreter, _ = jailed
    result = await interpreter.run("u", "c", SIGNAL_PROBES)
    assert result.status == "ok", result
    outcomes = eval(result.value)  # noqa: S307 - our own dict repr
    expected = {name: "EPERM" for name in outcomes} | {"timer_create": "ENOSYS"}
    assert outcomes == expected
    code = "import os, signal\nsignal.signal(signal.SIGUSR1, lambda *a: print('got it'))\n"
    result = await interpreter.run("u", "c", code + "os.kill(os.getpid(), signal.SIGUSR1)")
    assert result.stdout == "got it\n"


async def test_a_session_continued_between_cells_gets_a_sliver_of_cpu(jailed) -> None:
    """Should a way to continue the stopped processes exist that is not yet known (here the
    test sends SIGCONT itself, as no code inside can), the session's cgroup holds it to 1% of a
    core until its next cell, which runs at full speed again."""
    interpreter, _ = jailed
    spin = "import threading\ndef spin():\n    while True:\n        pass\n"
    await interpreter.run("u", "c", spin + "threading.Thread(target=spin, daemon=True).start()")
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    if kernel.cgroup is None or kernel.cgroup.quota_us is None:
        pytest.skip("no cpu cgroup here: the stop between cells is the only guard")
    await kernel.settled()
    for pid in kernel.stopper.stopped:
        os.kill(pid, signal.SIGCONT)
    before = await asyncio.to_thread(kernel.cpu_seconds)
    await asyncio.sleep(1.0)  # a measuring window, not a synchronisation
    assert await asyncio.to_thread(kernel.cpu_seconds) - before < 0.05
    result = await interpreter.run(
        "u",
        "c",
        "import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.2:\n    pass\n'done'",
    )
    assert result.value == "'done'" and result.duration < 5


async def test_a_syscall_of_another_abi_ends_the_session_at_once(jailed) -> None:
    """An x32 syscall (refused by the filter's architecture check) ends the whole kernel, so
    the cell returns at once as killed instead of hanging until the time limit; the next cell
    gets a fresh session."""
    interpreter, _ = jailed
    code = "import ctypes\nctypes.CDLL(None).syscall(ctypes.c_long(0x40000000 | 39))\n"
    async with asyncio.timeout(20):  # the time limit is 30 s: a hang would fail here
        result = await interpreter.run("u", "c", code)
    assert result.status == "killed", result
    assert (await interpreter.run("u", "c", "print(1)")).stdout == "1\n"


async def test_a_cpu_share_that_cannot_be_given_back_ends_the_session(jailed) -> None:
    """If the cgroup refuses the write that gives a session its CPU back before a cell, the
    session ends (its cell reported killed, with why) instead of running at 1% of a core, where
    a stop's grace and every deadline would be missed; the next cell gets a fresh session."""
    interpreter, _ = jailed
    await interpreter.run("u", "c", "x = 1")
    kernel = interpreter.sessions.sessions[("u", "c")].kernel
    if kernel.cgroup is None or kernel.cgroup.quota_us is None:
        pytest.skip("no cpu cgroup here")

    def refuse(quota: int) -> None:
        raise OSError(errno.EIO, "the cgroup file refused the write")

    kernel.cgroup._write_quota = refuse  # the kernel's answer, as a failing cgroupfs gives it
    result = await interpreter.run("u", "c", "x")
    assert result.status == "killed", result
    assert any("CPU share could not be given back" in note for note in result.notes), result
    assert (await interpreter.run("u", "c", "print(2)")).stdout == "2\n"
