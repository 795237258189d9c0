"""Nothing of a session runs between its cells: every process of the sandbox is stopped
(SIGSTOP) after a cell and continued (SIGCONT) before the next, unless the host sees that the
kernel is parked (``parked``): then there is nothing to stop.

Not the cgroup freezer: a task frozen by the v1 freezer does not die even from SIGKILL, so a bot
killed while its sessions were frozen would leave them frozen, and holding memory, for ever. A
stopped task still dies from SIGKILL, so the parent-death signal still ends the sandbox of a bot
that is gone. The processes come from the session's cgroup, or, without one, from the host's
process table (every process of the sandbox descends from its bubblewrap).

A cgroup's list is cheap (tens of microseconds read with bare system calls, as every file here
is: no buffered file objects on this path, which runs around every cell), so the processes are
stopped at once on the event loop as the result arrives, and checked a moment later: once each
has reached the stopped state, it cannot be inside a fork, so a listing then shows any child
that slipped past the first one (which is stopped in turn). Without a cgroup, the process table
is read in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import signal
import time
from collections import defaultdict
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_ROUNDS = 50  # stopped processes cannot fork, so new ones run out after a round or two
STOP_WAIT = 0.5  # seconds a process may take to reach the stopped state
CHECK_AFTER = 0.002  # seconds before the first check that every process has stopped


class Stopper:
    """Stops one sandbox's processes after a cell (``stop``) and continues them before the next
    (``resume``). ``list_pids`` names the processes; ``cheap`` says it may run on the loop."""

    def __init__(self, list_pids: Callable[[], list[int]], *, cheap: bool) -> None:
        self.list_pids = list_pids
        self.cheap = cheap
        self.stopped: list[int] = []
        self._task: asyncio.Task[list[int]] | None = None
        self._check: asyncio.TimerHandle | None = None
        self._settled = asyncio.Event()
        self._settled.set()

    def stop(self) -> None:
        """Stop every process now (or start doing so in a thread)."""
        self._settled.clear()
        loop = asyncio.get_running_loop()
        if not self.cheap:
            self._task = loop.create_task(asyncio.to_thread(stop_all, self.list_pids))
            self._task.add_done_callback(lambda _: self._settled.set())
            return
        self.stopped = []
        self._stop_new(self.list_pids())
        self._check = loop.call_later(CHECK_AFTER, self._verify, MAX_ROUNDS)

    def _stop_new(self, pids: list[int]) -> None:
        for pid in pids:
            if pid not in self.stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)

    def _verify(self, rounds: int) -> None:
        loop = asyncio.get_running_loop()
        if rounds and not all(map(_stopped, self.stopped)):
            self._check = loop.call_later(CHECK_AFTER, self._verify, rounds - 1)
            return
        new = [pid for pid in self.list_pids() if pid not in self.stopped]
        if new and rounds:
            self._stop_new(new)
            self._check = loop.call_later(CHECK_AFTER, self._verify, rounds - 1)
            return
        if new:
            log.warning("sandbox.stop_incomplete processes=%d", len(self.stopped))
        self._check = None
        self._settled.set()

    async def settle(self) -> None:
        """Return once the last stop is complete (every process seen stopped)."""
        await self._settled.wait()

    async def resume(self) -> None:
        """Continue what the last stop stopped."""
        if self._check is not None:
            self._check.cancel()  # the processes go on now anyway
            self._check = None
        if self._task is not None:
            task, self._task = self._task, None
            try:
                self.stopped = await task
            except Exception:  # noqa: BLE001 - a failed stop leaves the processes running
                log.exception("sandbox.stop_failed")
                self.stopped = []
        continue_all(self.stopped)
        self.stopped = []
        self._settled.set()


# Waits that only another task, the host or a signal ends (no timeout), by x86-64 syscall
# number (the sandbox's filter kills any other ABI; elsewhere every cell is stopped): futex
# waits with no timeout, a read of a pipe, and poll-family waits with an infinite timeout.
_X86_64 = platform.machine() == "x86_64"
_FUTEX, _READ = 202, 0
_FUTEX_WAITS = {0, 9}  # FUTEX_WAIT, FUTEX_WAIT_BITSET (private and clock flags masked off)
_INFINITE = {"0xffffffff", "0xffffffffffffffff"}  # an int timeout of -1
_POLLS = {7: (3, _INFINITE), 232: (4, _INFINITE), 281: (4, _INFINITE)}  # poll, epoll_wait(2)
_POLLS |= {23: (5, {"0x0"}), 270: (5, {"0x0"}), 271: (3, {"0x0"}), 441: (4, {"0x0"})}
# The signals the kernel itself catches (SIGINT: a stop; SIGXCPU: the CPU limit); user code
# that catches any other could be woken by a timer it armed.
KERNEL_SIGCATCH = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGXCPU - 1))


def _waits_for_ever(pid: int, call: bytes) -> bool:
    """True when a /proc/.../syscall line is a wait that no clock ends."""
    fields = call.decode("ascii", "replace").split()
    if len(fields) < 7 or not fields[0].isdigit():
        return False  # "running", or blocked outside a syscall
    number = int(fields[0])
    if number == _FUTEX:
        return int(fields[2], 16) & 0x7F in _FUTEX_WAITS and fields[4] == "0x0"
    if number == _READ:
        return os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}").startswith("pipe:")
    where, endless = _POLLS.get(number, (0, set()))
    return bool(where) and fields[where] in endless


def parked(pid: int, list_pids: Callable[[], list[int]]) -> bool:
    """True when nothing of the sandbox can run before the host writes the next cell, so
    there is nothing to stop. Seen from the host alone (nothing the kernel says is believed):

    - t1: every thread of the kernel is blocked in a wait that no clock ends (futex with no
      timeout, a pipe read, poll and the like with none), each with its scheduler counters;
    - t2: the kernel is the sandbox's only process, has the same threads, and catches no
      signal but the kernel's own;
    - t3: no thread's counters moved: none ran between t1 and t3, so none made a task after
      t2, when there was no other.

    Timers (alarm, setitimer) can then only deliver a signal whose default action ignores,
    stops or ends the process; POSIX timers, F_SETSIG, SIGCONT and inotify are refused inside.
    What this does not see (a wait on an fd set that user code filled with something a clock
    drives) is held by the session's 1% CPU share between cells, as any way past a stop is."""
    if not _X86_64:
        return False
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
        ran = {}
        for tid in tids:
            if not _waits_for_ever(pid, read_small(f"{base}/{tid}/syscall")):
                return False
            ran[tid] = read_small(f"{base}/{tid}/schedstat")
        if list_pids() != [pid]:
            return False
        fields = read_small(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
        if int(fields[17]) != len(tids) or int(fields[31]) & ~KERNEL_SIGCATCH:
            return False
        if sorted(os.listdir(base)) != sorted(tids):
            return False
        return all(read_small(f"{base}/{tid}/schedstat") == ran[tid] for tid in tids)
    except (OSError, ValueError, IndexError):
        return False


def read_small(path: str) -> bytes:
    """A small kernel file's whole text, with bare system calls (a fresh open each time: a v1
    cgroup's process list is cached per open file, so a re-read of one descriptor can be
    stale)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if len(data) < 65536:
            return data
        parts = [data]
        while chunk := os.read(fd, 65536):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def listed_pids(procs_file: str) -> list[int]:
    """The pids a cgroup.procs file lists now ([] when it cannot be read)."""
    try:
        return [int(pid) for pid in read_small(procs_file).split()]
    except OSError:
        return []


def _stopped(pid: int) -> bool:
    try:
        stat = read_small(f"/proc/{pid}/stat")
        return stat.rsplit(b")", 1)[1].split()[0] in (b"T", b"t", b"Z", b"X")
    except (OSError, IndexError):
        return True  # gone


def stop_all(list_pids: Callable[[], list[int]]) -> list[int]:
    """Stop every process ``list_pids`` names, again until no new one appears; return them."""
    stopped: set[int] = set()
    for _ in range(MAX_ROUNDS):
        todo = [pid for pid in list_pids() if pid not in stopped]
        if not todo:
            return sorted(stopped)
        for pid in todo:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped.add(pid)
        for pid in todo:
            _wait_until_stopped(pid)
    log.warning("sandbox.stop_incomplete processes=%d", len(stopped))
    return sorted(stopped)


def continue_all(pids: list[int]) -> None:
    """Let stopped processes run again."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _wait_until_stopped(pid: int) -> None:
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline and not _stopped(pid):
        time.sleep(0.0001)  # let it reach the stop (a spin would take its CPU)


def _process_table() -> tuple[dict[int, list[int]], dict[int, int]]:
    """(parent → children, pid → CPU clock ticks used, reaped children's included)."""
    children: dict[int, list[int]] = defaultdict(list)
    used: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(name)
        children[int(fields[1])].append(pid)
        used[pid] = sum(int(value) for value in fields[11:15])
    return children, used


def children(pid: int) -> list[int]:
    """A process's direct children (the main thread's)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def tree_pids(root: int) -> list[int]:
    """A process and all its descendants, from the host's process table."""
    children, _ = _process_table()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and all its descendants, reaped ones included."""
    children, used = _process_table()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")
