"""A cgroup per session (v1 or v2): memory without swap, a process cap, a CPU quota and a CPU
weight. Every call here touches cgroupfs and is made from a worker thread, never the event loop
(but for the few single-file writes marked as cheap enough for it)."""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import threading
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labbot.sandbox.jail.limits import SandboxLimits

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
# Between cells a session's processes are stopped; should one run anyway (a way to be continued
# not yet known), its group gets 1 ms of CPU per 100 ms period: 1% of a core, at most.
IDLE_QUOTA_US = 1000
# CPU weights (v1 cpu.shares; v2 cpu.weight is this / 1024 * 100). A session gets the normal
# weight while it runs its cell; work that no one waits on now (a warm-pool kernel starting, a
# cell that has run for a while) gets an eighth of it, so a neighbour's short cell that wakes
# beside it is served first, while the two still share the CPU when nothing else waits.
NORMAL_SHARES = 1024
LOW_SHARES = NORMAL_SHARES // 8


class Cgroup:
    """A cgroup holding one session's processes, or nothing when none is writable."""

    version = "none"

    def __init__(self, name: str) -> None:
        self.name = name
        self.quota_us: int | None = None  # the CPU quota of a running cell, when there is one
        self._kept: dict[Path, int] = {}  # files written per cell, kept open
        # Writes run on the event loop, remove() in a worker thread: a descriptor is never
        # written after it is closed (its number could be another file's by then).
        self._kept_lock = threading.Lock()
        self.low = False  # the CPU weight is LOW_SHARES now (see ``prioritise``)

    def create(self, limits: SandboxLimits, *, low: bool = False) -> None:
        """Create the group and write its limits; ``low``: with the low CPU weight."""

    def hold(self) -> bool:
        """Hold the group to ``IDLE_QUOTA_US`` of CPU between cells; False if the quota could
        not be written. A write to one cgroup file: cheap enough for the event loop, where the
        stop between cells runs too."""
        return self._set_quota(IDLE_QUOTA_US)

    def restore(self) -> bool:
        """Give the group back its quota for a cell; False if it could not be written."""
        return self._set_quota(self.quota_us)

    def _set_quota(self, quota: int | None) -> bool:
        if quota is None:
            return True
        try:
            self._write_quota(quota)
        except OSError as exc:
            log.warning("cgroup.quota_failed name=%s error=%s", self.name, type(exc).__name__)
            return False
        return True

    def _write_quota(self, quota: int) -> None:
        """Write a CPU quota (µs per CPU_PERIOD_US)."""

    def prioritise(self, *, low: bool) -> bool:
        """Give the group the low or the normal CPU weight; False if it could not be written.
        One write to one cgroup file, skipped when the weight is already so: cheap enough for
        the event loop. (The file is the host's: nothing inside a sandbox can write it.)"""
        if low == self.low:
            return True
        try:
            self._write_weight(LOW_SHARES if low else NORMAL_SHARES)
        except OSError as exc:
            log.warning("cgroup.weight_failed name=%s error=%s", self.name, type(exc).__name__)
            return False
        self.low = low
        return True

    def _write_weight(self, shares: int) -> None:
        """Write a CPU weight, in v1 shares (nothing without a cpu controller)."""

    def _write_kept(self, path: Path, text: str) -> None:
        """Write a cgroup file through a descriptor kept open (writes per cell: an open and a
        buffered file object each time cost several times the write itself)."""
        with self._kept_lock:
            fd = self._kept.get(path)
            if fd is None:
                fd = self._kept[path] = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            os.write(fd, text.encode())

    def _close_kept(self) -> None:
        with self._kept_lock:
            kept, self._kept = self._kept, {}
            for fd in kept.values():
                os.close(fd)

    def procs_files(self) -> list[str]:
        """Files a new process writes its pid to, to join the group."""
        return []

    def oom_kills(self) -> int:
        """How many processes the out-of-memory killer has killed in this group."""
        return 0

    def pids(self) -> list[int]:
        """The processes in the group now."""
        for procs in self.procs_files():
            try:
                return [int(pid) for pid in Path(procs).read_text().split()]
            except OSError:
                return []
        return []

    def kill_all(self) -> None:
        """SIGKILL every process still in the group."""

    def remove(self) -> None:
        """Delete the group (after its processes are gone)."""


class CgroupV1(Cgroup):
    """Memory (+swap), pids and (when mounted and writable) cpu controllers of a cgroup v1
    hierarchy."""

    version = "v1"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.dirs = {ctrl: _v1_parent(ctrl) / "labbot" / name for ctrl in v1_controllers()}

    def create(self, limits: SandboxLimits, *, low: bool = False) -> None:
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        memory = self.dirs["memory"]
        (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limits.memory_bytes))  # memory + swap = memory: no swap
        (self.dirs["pids"] / "pids.max").write_text(str(limits.processes))
        if "cpu" in self.dirs:  # at most `cpus` cores' worth of time per period
            (self.dirs["cpu"] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            cpus = min(limits.cpus, _v1_cpu_ceiling())
            self.quota_us = max(1000, int(cpus * CPU_PERIOD_US))
            self._write_quota(self.quota_us)
            if low:  # before any process joins: low from the first instruction
                self._write_weight(LOW_SHARES)
                self.low = True

    def _write_weight(self, shares: int) -> None:
        if "cpu" in self.dirs:
            self._write_kept(self.dirs["cpu"] / "cpu.shares", str(shares))

    def _write_quota(self, quota: int) -> None:
        target = self.dirs["cpu"] / "cpu.cfs_quota_us"
        try:
            self._write_kept(target, str(quota))
        except OSError as exc:
            ceiling = _v1_cpu_ceiling()
            if exc.errno != errno.EINVAL or math.isinf(ceiling):
                raise
            # A cgroup above us was limited since the session started (v1 refuses a child
            # above its ancestors): the session gets what they allow, from now on (the next
            # cells write it at once).
            allowed = max(1000, min(quota, int(ceiling * CPU_PERIOD_US)))
            target.write_text(str(allowed))
            if quota == self.quota_us:
                self.quota_us = allowed

    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs.values()]

    def oom_kills(self) -> int:
        return _counter(self.dirs["memory"] / "memory.oom_control", "oom_kill")

    def kill_all(self) -> None:
        for path in self.dirs.values():
            _kill_listed(path / "cgroup.procs")

    def remove(self) -> None:
        self._close_kept()
        for path in self.dirs.values():
            _rmdir(path)


class CgroupV2(Cgroup):
    """A child of the unified hierarchy with memory.max, memory.swap.max, pids.max and
    cpu.max."""

    version = "v2"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.dir = CGROUP_ROOT / "labbot" / name

    def create(self, limits: SandboxLimits, *, low: bool = False) -> None:
        parent = self.dir.parent
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text("+memory +pids")
        try:
            (parent / "cgroup.subtree_control").write_text("+cpu")
        except OSError:
            pass  # no cpu controller here: memory and pids still apply
        self.dir.mkdir(exist_ok=True)
        (self.dir / "memory.max").write_text(str(limits.memory_bytes))
        if (self.dir / "memory.swap.max").exists():
            (self.dir / "memory.swap.max").write_text("0")
        (self.dir / "pids.max").write_text(str(limits.processes))
        if (self.dir / "cpu.max").exists():
            self.quota_us = max(1000, int(limits.cpus * CPU_PERIOD_US))
            self._write_quota(self.quota_us)
            if low:
                self._write_weight(LOW_SHARES)
                self.low = True

    def _write_quota(self, quota: int) -> None:
        self._write_kept(self.dir / "cpu.max", f"{quota} {CPU_PERIOD_US}")

    def _write_weight(self, shares: int) -> None:
        if (self.dir / "cpu.weight").exists():
            weight = max(1, shares * 100 // NORMAL_SHARES)  # v2's default weight is 100
            self._write_kept(self.dir / "cpu.weight", str(weight))

    def procs_files(self) -> list[str]:
        return [str(self.dir / "cgroup.procs")]

    def oom_kills(self) -> int:
        return _counter(self.dir / "memory.events", "oom_kill")

    def kill_all(self) -> None:
        kill = self.dir / "cgroup.kill"
        if kill.exists():
            kill.write_text("1")
        else:
            _kill_listed(self.dir / "cgroup.procs")

    def remove(self) -> None:
        self._close_kept()
        _rmdir(self.dir)


def _v1_parent(controller: str) -> Path:
    """Our own cgroup in a v1 controller's hierarchy, so sessions nest inside the bot's."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    return CGROUP_ROOT / controller


def _v1_cpu_ceiling() -> float:
    """The fewest cores any cgroup above ours allows (inf when none is limited). A session's
    quota may not exceed it: v1 refuses such a child, e.g. under systemd's CPUQuota=."""
    ceiling = math.inf
    path = _v1_parent("cpu")
    root = CGROUP_ROOT / "cpu"
    while True:
        try:
            quota = int((path / "cpu.cfs_quota_us").read_text())
            period = int((path / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            quota = period = -1
        if quota > 0 and period > 0:
            ceiling = min(ceiling, quota / period)
        if path == root or path == path.parent:
            return ceiling
        path = path.parent


def _writable(controller: str, probe: str) -> bool:
    try:
        parent = _v1_parent(controller)
        return os.access(parent, os.W_OK) and (parent / probe).exists()
    except OSError:
        return False


@cache
def v1_controllers() -> tuple[str, ...]:
    """The v1 controllers a session uses: memory and pids, and cpu where it is writable."""
    if _writable("cpu", "cpu.cfs_quota_us"):
        return ("memory", "pids", "cpu")
    return ("memory", "pids")


def _counter(path: Path, key: str) -> int:
    # Bare system calls: read before every cell, on the event loop.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 65536)
        finally:
            os.close(fd)
        for line in text.splitlines():
            name, _, value = line.partition(b" ")
            if name == key.encode():
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _kill_listed(procs: Path) -> None:
    try:
        pids = [int(p) for p in procs.read_text().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rmdir(path: Path) -> None:
    # SIGKILLed processes leave the group only once the kernel has reaped them: retry briefly.
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cgroup.remove_failed path=%s errno=%s", path, exc.errno)
                return
            _kill_listed(path / "cgroup.procs")
            time.sleep(0.01)  # a worker thread, never the event loop
    log.warning("cgroup.remove_failed path=%s: still busy", path)


@cache
def cgroup_kind() -> type[Cgroup]:
    """The cgroup flavour this machine lets us write: v2, v1, or none."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and {"memory", "pids"} <= set(controllers.read_text().split()):
        if os.access(CGROUP_ROOT, os.W_OK):
            return CgroupV2
    try:
        if all(os.access(_v1_parent(c), os.W_OK) for c in ("memory", "pids")):
            return CgroupV1
    except OSError:
        pass
    return Cgroup


def stale_parents(kind: type[Cgroup]) -> list[Path]:
    """The folders holding our session groups, for removing those a crashed bot left."""
    if kind is CgroupV1:
        return [_v1_parent(c) / "labbot" for c in v1_controllers()]
    if kind is CgroupV2:
        return [CGROUP_ROOT / "labbot"]
    return []


def memory_available() -> int:
    """The memory this process may use: the machine's, or less when a cgroup above it limits
    it (v1 memory.limit_in_bytes or v2 memory.max on any ancestor)."""
    total = _meminfo_total()
    limits: list[int] = []
    try:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            path = CGROUP_ROOT / _v2_path().lstrip("/")
            limits += _ancestor_values(path, CGROUP_ROOT, "memory.max")
        else:
            limits += _ancestor_values(
                _v1_parent("memory"), CGROUP_ROOT / "memory", "memory.limit_in_bytes"
            )
    except OSError:
        pass
    return min([total, *limits])


def _meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 2**62


def _v2_path() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


def _ancestor_values(path: Path, root: Path, name: str) -> list[int]:
    values = []
    while True:
        try:
            raw = (path / name).read_text().strip()
            if raw.isdigit():
                values.append(int(raw))
        except OSError:
            pass
        if path == root or path == path.parent:
            return values
        path = path.parent
