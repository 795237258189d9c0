"""One host uid per live sandbox, when the bot is root.

The kernel keeps many budgets per uid (epoll watches, pipe buffer pages, inotify instances and
watches, fds in flight over unix sockets, RLIMIT_NPROC, pending signals, POSIX message queue
bytes): sandboxes sharing one uid share them, and one session could exhaust them for all. So
each sandbox leases a uid of its own from a reserved range (SANDBOX_UID_BASE, COUNT uids, none
of them in /etc/passwd) while it lives.

A uid goes back to the range only when no process on the host holds it: every lease scans /proc
first, and a uid still held by a process (a previous session's straggler) is skipped until that
process is gone. Leases of several labbot processes on one host (the bot, `labbot exec`, a
worker) exclude each other by a lock file per uid, released by the kernel if a process dies.
Every call here reads /proc or takes a lock: worker threads only, never the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from labbot.errors import SandboxUnavailable

log = logging.getLogger(__name__)

LOCK_DIRS = (Path("/run/labbot/uids"),)  # host-wide, so every labbot process sees one range
REAP_POLLS = 20  # looks for a straggler over ~0.2 s before setting its uid aside
UID_LIMIT = 2**31 - 1  # above it some tools read uids as negative numbers


@dataclass(frozen=True, slots=True)
class UidLease:
    """One host uid (and the gid of the same number) a sandbox runs as while it lives."""

    uid: int
    lock_fd: int

    @property
    def gid(self) -> int:
        """The sandbox's host gid: the same number, so no group is shared either."""
        return self.uid


def uids_with_processes(low: int, high: int, proc: Path = Path("/proc")) -> set[int]:
    """The uids in [low, high) that some process on the host holds now (real, effective,
    saved or filesystem uid)."""
    held: set[int] = set()
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"Uid:"):
                        held.update(u for u in map(int, line.split()[1:]) if low <= u < high)
                        break
        except OSError:
            continue  # gone meanwhile
    return held


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


class UidRange:
    """The reserved range, and the leases this process holds from it."""

    def __init__(self, base: int, count: int, *, fallback_locks: Path) -> None:
        self.base = base
        self.count = count
        self.fallback_locks = fallback_locks
        self._locks: Path | None = None
        self._held: dict[int, UidLease] = {}
        self._quarantine: dict[int, UidLease] = {}  # released while a process still held it
        self._cursor = 0  # leases rotate through the range: a freed uid is the last reused
        self._mutex = threading.Lock()

    def __str__(self) -> str:
        return f"{self.base}-{self.base + self.count - 1}"

    def check(self, needed: int) -> None:
        """Raise SandboxUnavailable, naming the fix, when the range cannot serve ``needed``
        sandboxes safely: too small, holding 0 or the bot's uid, or an /etc/passwd user's."""
        fix = "set SANDBOX_UID_BASE and SANDBOX_UID_COUNT to a range no user has (see README)"
        top = self.base + self.count
        if self.base <= 0 or top > UID_LIMIT:
            raise SandboxUnavailable(f"The sandbox uid range {self} is out of bounds.", hint=fix)
        if self.base <= os.geteuid() < top or self.base <= os.getuid() < top:
            raise SandboxUnavailable(
                f"The sandbox uid range {self} holds the bot's own uid.", hint=fix
            )
        users = [e.pw_name for e in pwd.getpwall() if self.base <= e.pw_uid < top]
        if users:
            raise SandboxUnavailable(
                f"The sandbox uid range {self} holds the uid of the user {users[0]!r}: its"
                " processes would share budgets with sandboxes (and could signal them).",
                hint=fix,
            )
        for line in _read_lines(Path("/etc/subuid")):
            owner, _, rest = line.partition(":")
            start, _, size = rest.partition(":")
            if start.isdigit() and size.isdigit() and int(start) < top < UID_LIMIT + 1:
                if int(start) + int(size) > self.base:
                    raise SandboxUnavailable(
                        f"The sandbox uid range {self} overlaps the subordinate uids of"
                        f" {owner!r} (/etc/subuid): that user's containers would share them.",
                        hint=fix,
                    )
        if self.count < needed:
            raise SandboxUnavailable(
                f"The sandbox uid range {self} has {self.count} uids, fewer than the"
                f" {needed} sandboxes that may live at once (MAX_SESSIONS + SANDBOX_WARM_POOL).",
                hint="Raise SANDBOX_UID_COUNT, or lower MAX_SESSIONS.",
            )

    def lease(self) -> UidLease:
        """A uid no process holds and no other lease has, locked for this sandbox."""
        with self._mutex:
            busy = uids_with_processes(self.base, self.base + self.count)
            for uid in [u for u in self._quarantine if u not in busy]:
                self._unlock(self._quarantine.pop(uid))
            locks = self._lock_dir()
            for step in range(self.count):
                offset = (self._cursor + step) % self.count
                uid = self.base + offset
                if uid in busy or uid in self._held or uid in self._quarantine:
                    continue
                fd = os.open(locks / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)  # another labbot process's sandbox
                    continue
                self._cursor = offset + 1
                lease = self._held[uid] = UidLease(uid, fd)
                return lease
        raise SandboxUnavailable(
            f"Every uid of the sandbox range {self} is in use (by live sandboxes, or by processes"
            " of ended ones not yet gone), so no new sandbox can start now.",
            hint="Try again in a moment; if it persists, raise SANDBOX_UID_COUNT.",
        )

    def release(self, lease: UidLease) -> bool:
        """Give the uid back once no process holds it; if one still does, keep it out of use
        until a later lease finds it gone. True when it went back at once."""
        with self._mutex:
            if self._held.pop(lease.uid, None) is None:
                return True
            for _ in range(REAP_POLLS):
                if not uids_with_processes(lease.uid, lease.uid + 1):
                    break
                # The kernel, its namespace's init, is often a zombie for a moment: killed
                # with bubblewrap, it is reparented to the host's init, which reaps it soon.
                time.sleep(0.01)  # a worker thread
            else:
                log.info("sandbox.uid_quarantined uid=%d: a process still holds it", lease.uid)
                self._quarantine[lease.uid] = lease
                return False
            self._unlock(lease)
            return True

    def in_use(self) -> int:
        """How many uids this process holds (leased or quarantined)."""
        return len(self._held) + len(self._quarantine)

    @staticmethod
    def _unlock(lease: UidLease) -> None:
        with contextlib.suppress(OSError):
            os.close(lease.lock_fd)  # closing drops the flock

    def _lock_dir(self) -> Path:
        if self._locks is None:
            for candidate in (*LOCK_DIRS, self.fallback_locks):
                try:
                    candidate.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError:
                    continue
                if os.access(candidate, os.W_OK):
                    self._locks = candidate
                    break
            else:
                raise SandboxUnavailable("No folder is writable for the sandbox uid leases.")
        return self._locks
