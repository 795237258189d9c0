"""How one sandbox is built and bounded: its seccomp filter (``seccomp``), its cgroup
(``cgroups``), its bubblewrap command line and identity (``bwrap``), and its limits (``limits``).

Isolation comes from the kernel (namespaces, seccomp, cgroups), never from inspecting code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import shutil
import signal
import time
from functools import partial
from pathlib import Path

from labbot.config import Settings
from labbot.errors import SandboxUnavailable
from labbot.sandbox.jail.bwrap import (
    INSIDE_FILES,
    INSIDE_KERNEL,
    INSIDE_OUTPUT,
    INSIDE_VENV,
    KERNEL_DIR,
    Command,
    Runtime,
    _tool,
    kernel_files,
)
from labbot.sandbox.jail.cgroups import Cgroup, cgroup_kind, memory_available, stale_parents
from labbot.sandbox.jail.limits import SandboxLimits
from labbot.sandbox.jail.merging import start_merging
from labbot.sandbox.jail.seccomp import seccomp_filter
from labbot.sandbox.jail.uids import UidLease, UidRange

__all__ = [
    "Cgroup",
    "INSIDE_FILES",
    "INSIDE_OUTPUT",
    "Jail",
    "Runtime",
    "SandboxLimits",
    "UidRange",
    "memory_available",
    "new_kernel_name",
]

log = logging.getLogger(__name__)


class Jail:
    """Spawns kernels inside bubblewrap (or, with LABBOT_SANDBOX=off, as plain processes)."""

    def __init__(self, settings: Settings, limits: SandboxLimits, *, capacity: int = 1) -> None:
        # ``capacity`` (sessions that fit in memory) no longer sizes anything here: with a uid
        # per sandbox, RLIMIT_NPROC is per session. Kept for callers.
        del capacity
        self.enabled = settings.LABBOT_SANDBOX == "on"
        self.preload = settings.SANDBOX_PRELOAD
        self.share_memory = self.enabled and settings.SANDBOX_SHARE_MEMORY
        # One hash seed for every session of this bot (str hashes are stored in the objects,
        # so per-process seeds would make every session's pages differ); never the bot's own.
        self.hash_seed = str(secrets.randbelow(2**32))
        self.limits = limits
        self.cell_limits = limits.cell()  # what every cell's request carries
        self.root = settings.sandbox_dir
        self.runtime = Runtime.locate(settings.LABBOT_RUNTIME_DIR)
        self.cgroup_kind = cgroup_kind() if self.enabled else Cgroup
        self.bwrap = shutil.which("bwrap")
        # Not None when the bot is root: each sandbox then runs as a host uid of its own.
        self.user: UidRange | None = None
        self._leases: dict[str, UidLease] = {}
        self._copies = kernel_files()
        if self.enabled and self.bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed, so user code cannot run safely.",
                hint="Install it (`apt-get install bubblewrap`), or set LABBOT_SANDBOX=off for"
                " development only.",
            )
        if self.enabled and os.geteuid() == 0:
            self.user = UidRange(
                settings.SANDBOX_UID_BASE,
                settings.SANDBOX_UID_COUNT,
                fallback_locks=self.root / "uids",
            )
            self.user.check(settings.MAX_SESSIONS + settings.SANDBOX_WARM_POOL)
            if self.share_memory:
                start_merging()
        if not self.enabled:
            log.warning(
                "sandbox.disabled: LABBOT_SANDBOX=off runs user code WITHOUT isolation;"
                " never do this with users you do not trust"
            )

    def remove_stale_cgroups(self) -> int:
        """Kill what is left in the session cgroups of a bot that is gone, and remove them;
        returns how many went. A thread."""
        removed = 0
        for parent in stale_parents(self.cgroup_kind):
            for child in parent.glob("*/"):
                if _owner_alive(child.name):
                    continue  # another live labbot process's session, maybe not joined yet
                try:
                    pids = (child / "cgroup.procs").read_text().split()
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    for _ in range(100):
                        if not (child / "cgroup.procs").read_text().strip():
                            break
                        time.sleep(0.01)  # the killed are reaped by their parents
                    child.rmdir()
                    removed += 1
                except OSError:
                    continue
        return removed

    def describe(self) -> str:
        """One line for `labbot doctor`."""
        if not self.enabled:
            return "OFF (LABBOT_SANDBOX=off): code runs without isolation"
        who = (
            f"each sandbox as its own host uid from {self.user}"
            if self.user
            else f"every sandbox as uid {os.geteuid()} (unprivileged bot)"
        )
        return f"bubblewrap {self.bwrap}, cgroups {self.cgroup_kind.version}, {who}"

    def _command(self, cgroup: Cgroup, lease: UidLease | None) -> Command:
        cgroups = bool(cgroup.procs_files())
        # RLIMIT_NPROC counts every process of the real uid on the host: a session's own when
        # it has a uid of its own; the bot's (as before) when unprivileged without cgroups.
        nproc = self.limits.processes if lease is not None or not cgroups else None
        return Command(
            bwrap=self.bwrap or "bwrap",
            runtime=self.runtime,
            limits=self.limits,
            uid=lease.uid if lease is not None else None,
            nproc=nproc,
            cgroups=cgroups,
            same_layout=self.share_memory,
        )

    def environment(self, *, inside: bool) -> dict[str, str]:
        """The whole environment the kernel sees: nothing of the bot's."""
        venv = INSIDE_VENV if inside else str(self.runtime.venv)
        threads = str(max(1, math.ceil(self.limits.cpus)))  # more than its CPU share only waits
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
        env["LABBOT_PRELOAD"] = "1" if self.preload else "0"
        if inside and self.share_memory:
            env["LABBOT_SHARE_MEMORY"] = "1"
            env["PYTHONHASHSEED"] = self.hash_seed
        if inside:
            env["LABBOT_IN_SANDBOX"] = "1"  # the kernel may then clean up its PID namespace
        return env

    async def spawn(
        self, name: str, *, files_dir: Path, output_dir: Path, low: bool = False
    ) -> tuple[asyncio.subprocess.Process, Cgroup]:
        """Start a kernel process in a fresh sandbox; its stdin/stdout are the frame channel.
        ``low``: its cgroup starts with the low CPU weight (a warm-pool kernel)."""
        if not self.enabled:
            return await self._spawn_unsandboxed(output_dir), Cgroup(name)
        lease = await asyncio.to_thread(self.user.lease) if self.user is not None else None
        if lease is not None:
            self._leases[name] = lease  # given back by release(), once the sandbox is gone
        try:
            return await self._spawn(name, files_dir, lease, low)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.release, name))
            raise

    async def _spawn(
        self, name: str, files_dir: Path, lease: UidLease | None, low: bool
    ) -> tuple[asyncio.subprocess.Process, Cgroup]:
        cgroup = self.cgroup_kind(f"{os.getpid()}-{name}")
        try:
            await asyncio.to_thread(partial(cgroup.create, self.limits, low=low))
        except OSError as exc:
            log.warning("cgroup.create_failed errno=%s: using rlimits only", exc.errno)
            cgroup = Cgroup(name)
        command = await asyncio.to_thread(self._command, cgroup, lease)
        seccomp_fd = _memfd("seccomp", seccomp_filter())
        copies = {inside: _memfd("copy", data) for inside, data in self._copies.items()}
        passed = (seccomp_fd, *copies.values())
        # -E would ignore PYTHONHASHSEED; the environment is all ours anyway (--clearenv).
        isolated = [] if self.share_memory else ["-E"]
        kernel = [f"{INSIDE_VENV}/bin/python", *isolated, "-s", "-B", f"{INSIDE_KERNEL}/kernel.py"]
        argv = command.argv(
            files_dir=files_dir,
            seccomp_fd=seccomp_fd,
            copies=copies,
            environment=self.environment(inside=True),
            kernel=kernel,
        )
        # No preexec_fn: forking a threaded process and running Python before exec can
        # deadlock on a lock another thread held (seen as a rare hung start). A tiny shell joins
        # the cgroups and execs setpriv (identity, parent-death signal) and prlimit (rlimits).
        env = {"LABBOT_CGROUP_PROCS": " ".join(cgroup.procs_files())}  # bwrap clears it
        try:
            process = await self._exec(argv, env=env, cwd="/", pass_fds=passed)
        except OSError as exc:
            await asyncio.to_thread(cgroup.remove)
            raise SandboxUnavailable(f"The sandbox could not start: {exc.strerror}.") from exc
        finally:
            for fd in passed:
                os.close(fd)
        log.info(
            "sandbox.spawned name=%s pid=%d cgroup=%s uid=%s",
            name,
            process.pid,
            cgroup.version,
            lease.uid if lease else os.geteuid(),
        )
        return process, cgroup

    def release(self, name: str) -> None:
        """The sandbox ``name`` is killed and reaped: give its uid back once no process holds
        it (a thread)."""
        lease = self._leases.pop(name, None)
        if lease is not None and self.user is not None:
            self.user.release(lease)

    async def _spawn_unsandboxed(self, output_dir: Path) -> asyncio.subprocess.Process:
        argv = [
            _tool("setpriv"),
            "--pdeathsig",
            "KILL",
            "--",
            str(self.runtime.venv / "bin" / "python"),
            "-E",
            "-s",
            "-B",
            str(KERNEL_DIR / "kernel.py"),
        ]
        env = {**self.environment(inside=False), "LABBOT_OUTPUT_DIR": str(output_dir)}
        return await self._exec(argv, env=env, cwd=str(output_dir), pass_fds=())

    @staticmethod
    async def _exec(
        argv: list[str], *, env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
            start_new_session=True,
            limit=2**20,
        )


def _memfd(name: str, data: bytes) -> int:
    """A descriptor reading ``data`` from its start (a file in memory, not a pipe: the kernel's
    code is more than a pipe's buffer)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def new_kernel_name() -> str:
    """A unique, neutral name for a kernel's folders (it shows in the sandbox's mountinfo, so
    it says nothing of the bot or the user); its cgroup adds the owner's pid in front."""
    return secrets.token_hex(8)


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
