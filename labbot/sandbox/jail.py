"""The sandbox: a bubblewrap command line, a seccomp filter, cgroup limits and rlimits.

Isolation comes from the kernel (namespaces, seccomp, cgroups), never from inspecting code.
Inside: no network, a clean environment, read-only system and runtime, a size-limited /tmp and
output folder (also the working directory), this user's files read-only, uid 1000 with no
capabilities, and one PID namespace whose death takes every process of the session with it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from labbot.config import MIB, Settings
from labbot.errors import SandboxUnavailable

log = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent / "runtime"
INSIDE_VENV = "/opt/labbot/venv"
INSIDE_KERNEL = "/opt/labbot/kernel"
INSIDE_FILES = "/mnt/files"
INSIDE_OUTPUT = "/mnt/data"
SANDBOX_UID = 1000
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Syscalls user code never needs and kernel exploits love (anchors §C.2 and §D row 17).
_DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "chroot",
    "swapon",
    "swapoff",
    "reboot",
    "open_by_handle_at",
    "name_to_handle_at",
    "acct",
    "quotactl",
    "fanotify_init",
    "syslog",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
)
# Address families allowed for socket(): local and the (empty) IP stack; AF_ALG, AF_RXRPC,
# AF_PACKET and the rest are refused.
_ALLOWED_FAMILIES = {1, 2, 10, 16}  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
_CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-session limits, enforced by the kernel (cgroups, rlimits, tmpfs sizes)."""

    memory_bytes: int
    cpu_seconds: float
    cpus: float
    processes: int
    disk_bytes: int
    open_files: int
    wall_seconds: float
    output_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        """The limits the settings describe."""
        return cls(
            memory_bytes=settings.SANDBOX_MEMORY_MB * MIB,
            cpu_seconds=settings.SANDBOX_CPU_SECONDS,
            cpus=settings.SANDBOX_CPUS,
            processes=settings.SANDBOX_MAX_PROCESSES,
            disk_bytes=settings.SANDBOX_DISK_MB * MIB,
            open_files=settings.SANDBOX_OPEN_FILES,
            wall_seconds=settings.CODE_EXECUTION_TIMEOUT,
            output_bytes=settings.SANDBOX_OUTPUT_KB * 1024,
        )


@cache
def seccomp_filter() -> bytes:
    """The compiled BPF program bubblewrap installs before it runs the kernel."""
    import pyseccomp as sc

    rules = sc.SyscallFilter(sc.ALLOW)
    for name in _DENIED_SYSCALLS:
        try:
            rules.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            log.debug("seccomp.unknown_syscall name=%s", name)
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone(), checked below
    rules.add_rule(
        sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER)
    )
    rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, max(_ALLOWED_FAMILIES)))
    for family in set(range(max(_ALLOWED_FAMILIES))) - _ALLOWED_FAMILIES:
        rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as sink:
        rules.export_bpf(sink)
    with os.fdopen(read_end, "rb") as source:
        return source.read()


class Cgroup:
    """A cgroup holding one session's processes (v1 or v2), or nothing when none is writable."""

    version = "none"

    def __init__(self, name: str) -> None:
        self.name = name

    def create(self, limits: SandboxLimits) -> None:
        """Create the group and write its limits."""

    def procs_files(self) -> list[str]:
        """Files a new process writes its pid to, to join the group."""
        return []

    def oom_kills(self) -> int:
        """How many processes the out-of-memory killer has killed in this group."""
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process still in the group."""

    def remove(self) -> None:
        """Delete the group (after its processes are gone)."""


CPU_PERIOD_US = 100_000


class CgroupV1(Cgroup):
    """Memory (+swap), pids and (when mounted) cpu controllers of a cgroup v1 hierarchy."""

    version = "v1"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.dirs = {ctrl: _v1_parent(ctrl) / "labbot" / name for ctrl in v1_controllers()}

    def create(self, limits: SandboxLimits) -> None:
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
            quota = max(1000, int(cpus * CPU_PERIOD_US))
            (self.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))

    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs.values()]

    def oom_kills(self) -> int:
        return _counter(self.dirs["memory"] / "memory.oom_control", "oom_kill")

    def kill_all(self) -> None:
        for path in self.dirs.values():
            _kill_listed(path / "cgroup.procs")

    def remove(self) -> None:
        for path in self.dirs.values():
            _rmdir(path)


class CgroupV2(Cgroup):
    """A child of the unified hierarchy with memory.max, memory.swap.max and pids.max."""

    version = "v2"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.dir = CGROUP_ROOT / "labbot" / name

    def create(self, limits: SandboxLimits) -> None:
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
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            (self.dir / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")

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


@cache
def v1_controllers() -> tuple[str, ...]:
    """The v1 controllers a session uses: memory and pids, and cpu where it is writable."""
    try:
        cpu = (
            os.access(_v1_parent("cpu"), os.W_OK)
            and (_v1_parent("cpu") / "cpu.cfs_quota_us").exists()
        )
    except OSError:
        cpu = False
    return ("memory", "pids", "cpu") if cpu else ("memory", "pids")


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except OSError:
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


@dataclass(frozen=True, slots=True)
class Runtime:
    """The runtime venv and the base Python it points to."""

    venv: Path
    base_prefix: Path

    @classmethod
    def locate(cls, venv: Path) -> Runtime:
        """Find the runtime venv, or raise SandboxUnavailable naming the fix."""
        cfg = venv / "pyvenv.cfg"
        if not (venv / "bin" / "python").exists() or not cfg.exists():
            raise SandboxUnavailable(
                f"The sandbox runtime is missing at {venv}.",
                hint="Run `make setup` (or set LABBOT_RUNTIME_DIR to a built runtime).",
            )
        home = next(
            (
                line.split("=", 1)[1].strip()
                for line in cfg.read_text().splitlines()
                if line.split("=", 1)[0].strip() == "home"
            ),
            "/usr/bin",
        )
        return cls(venv=venv, base_prefix=Path(home).resolve().parent)


class Jail:
    """Spawns kernels inside bubblewrap (or, with LABBOT_SANDBOX=off, as plain processes)."""

    def __init__(self, settings: Settings, limits: SandboxLimits) -> None:
        self.enabled = settings.LABBOT_SANDBOX == "on"
        self.limits = limits
        self.root = settings.sandbox_dir
        self.runtime = Runtime.locate(settings.LABBOT_RUNTIME_DIR)
        self.cgroup_kind = cgroup_kind() if self.enabled else Cgroup
        self.bwrap = shutil.which("bwrap")
        if self.enabled and self.bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed, so user code cannot run safely.",
                hint="Install it (`apt-get install bubblewrap`), or set LABBOT_SANDBOX=off for"
                " development only.",
            )
        if not self.enabled:
            log.warning(
                "sandbox.disabled: LABBOT_SANDBOX=off runs user code WITHOUT isolation;"
                " never do this with users you do not trust"
            )

    def remove_stale_cgroups(self) -> int:
        """Remove empty session cgroups left by a crashed bot; returns how many went."""
        kind = self.cgroup_kind
        parents = []
        if kind is CgroupV1:
            parents = [_v1_parent(c) / "labbot" for c in v1_controllers()]
        elif kind is CgroupV2:
            parents = [CGROUP_ROOT / "labbot"]
        removed = 0
        for parent in parents:
            for child in parent.glob("*/"):
                if _owner_alive(child.name):
                    continue  # another live labbot process's session, maybe not joined yet
                try:
                    if not (child / "cgroup.procs").read_text().strip():
                        child.rmdir()
                        removed += 1
                except OSError:
                    continue
        return removed

    def _limit_argv(self, fallback: bool) -> list[str]:
        """setpriv and prlimit in front of the sandbox: die with the bot, and the rlimits."""
        limits = self.limits
        argv = [
            shutil.which("setpriv") or "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
            shutil.which("prlimit") or "prlimit",
            f"--nofile={limits.open_files}",
            f"--fsize={limits.disk_bytes}",
            "--core=0",
        ]
        if fallback and self.enabled:
            # No memory cgroup: cap address space instead (looser; numpy reserves VA).
            argv.append(f"--as={limits.memory_bytes * 2}")
            if os.geteuid() != 0:
                argv.append(f"--nproc={limits.processes}")
        return [*argv, "--"]

    def describe(self) -> str:
        """One line for `labbot doctor`."""
        if not self.enabled:
            return "OFF (LABBOT_SANDBOX=off): code runs without isolation"
        return f"bubblewrap {self.bwrap}, cgroups {self.cgroup_kind.version}"

    def _etc(self) -> Path:
        etc = self.root / "etc"
        if not (etc / "passwd").exists():
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "passwd").write_text(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}::/tmp:/bin/sh\n")
            (etc / "group").write_text(f"sandbox:x:{SANDBOX_UID}:\n")
        return etc

    def command(self, *, files_dir: Path, output_dir: Path, seccomp_fd: int | None) -> list[str]:
        """The argv that starts a kernel for one session."""
        kernel = [f"{INSIDE_VENV}/bin/python", "-E", "-s", "-B", f"{INSIDE_KERNEL}/kernel.py"]
        if not self.enabled:
            return [
                str(self.runtime.venv / "bin" / "python"),
                "-E",
                "-s",
                "-B",
                str(KERNEL_DIR / "kernel.py"),
            ]
        disk = str(self.limits.disk_bytes)
        args = [
            self.bwrap or "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for top in ("bin", "lib", "lib32", "lib64", "sbin"):
            host = Path("/") / top
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{top}"]
        base = str(self.runtime.base_prefix)
        if not base.startswith("/usr/"):
            args += ["--ro-bind", base, base]
        etc = self._etc()
        args += [
            "--ro-bind",
            str(self.runtime.venv),
            INSIDE_VENV,
            "--ro-bind",
            str(KERNEL_DIR),
            INSIDE_KERNEL,
            "--ro-bind",
            str(files_dir),
            INSIDE_FILES,
            "--ro-bind",
            str(etc / "passwd"),
            "/etc/passwd",
            "--ro-bind",
            str(etc / "group"),
            "/etc/group",
            "--size",
            disk,
            "--tmpfs",
            "/tmp",
            "--size",
            disk,
            "--tmpfs",
            INSIDE_OUTPUT,
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--chdir",
            INSIDE_OUTPUT,
        ]
        if os.geteuid() == 0:
            args += [
                "--unshare-user",
                "--uid",
                str(SANDBOX_UID),
                "--gid",
                str(SANDBOX_UID),
                "--disable-userns",
            ]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        for name, value in self.environment(inside=True).items():
            args += ["--setenv", name, value]
        return args + ["--", *kernel]

    def environment(self, *, inside: bool) -> dict[str, str]:
        """The whole environment the kernel sees: nothing of the bot's."""
        venv = INSIDE_VENV if inside else str(self.runtime.venv)
        threads = "2"
        env = {
            "PATH": f"{venv}/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "USER": "sandbox",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": f"{venv}/mplconfig",
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TMPDIR": "/tmp",
        }
        if inside:
            env["LABBOT_IN_SANDBOX"] = "1"  # the kernel may then clean up its PID namespace
        return env

    async def spawn(
        self,
        name: str,
        *,
        files_dir: Path,
        output_dir: Path,
    ) -> tuple[asyncio.subprocess.Process, Cgroup]:
        """Start a kernel process in a fresh sandbox; its stdin/stdout are the frame channel."""
        cgroup = self.cgroup_kind(name)
        if self.enabled:
            try:
                await asyncio.to_thread(cgroup.create, self.limits)
            except OSError as exc:
                log.warning("cgroup.create_failed errno=%s: using rlimits only", exc.errno)
                cgroup = Cgroup(name)
        procs = cgroup.procs_files()
        # No preexec_fn: forking a threaded process and running Python before exec can
        # deadlock on a lock another thread held (seen as a rare hung start). A tiny shell joins
        # the cgroups and execs setpriv (parent-death signal) and prlimit (rlimits), all in C.
        launcher = [_SH, "-c", _JOIN_AND_EXEC, "labbot-sandbox", *self._limit_argv(not procs)]
        read_fd = None
        pass_fds: tuple[int, ...] = ()
        if self.enabled:
            read_fd, write_fd = os.pipe()
            os.write(write_fd, seccomp_filter())
            os.close(write_fd)
            pass_fds = (read_fd,)
        env = (
            {}
            if self.enabled
            else {**self.environment(inside=False), "LABBOT_OUTPUT_DIR": str(output_dir)}
        )
        env["LABBOT_CGROUP_PROCS"] = " ".join(procs)  # the launcher's input; bwrap clears it
        argv = launcher + self.command(
            files_dir=files_dir, output_dir=output_dir, seccomp_fd=read_fd
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=str(output_dir) if not self.enabled else "/",
                pass_fds=pass_fds,
                start_new_session=True,
                limit=2**20,
            )
        except OSError as exc:
            await asyncio.to_thread(cgroup.remove)
            raise SandboxUnavailable(f"The sandbox could not start: {exc.strerror}.") from exc
        finally:
            if read_fd is not None:
                os.close(read_fd)
        log.info("sandbox.spawned name=%s pid=%d cgroup=%s", name, process.pid, cgroup.version)
        return process, cgroup


_SH = shutil.which("sh") or "/bin/sh"
_JOIN_AND_EXEC = 'for f in $LABBOT_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; exec "$@"'


def new_kernel_name() -> str:
    """A unique name for a kernel's cgroup and folders, led by the owning process's pid."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _owner_alive(name: str) -> bool:
    owner = name.split("-", 1)[0]
    if not owner.isdigit():
        return False
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
