"""The bubblewrap command line of one sandbox, and the launcher in front of it.

Inside: no network, a clean environment, a read-only root with read-only system, runtime and
user files, sized tmpfs where writing is needed (/tmp, /mnt/data, /dev/shm), uid 1000 with no
capabilities, and one PID namespace whose death takes every process of the session with it.

Behind the user namespace the sandbox is never host root: when the bot runs as root it drops to
a host uid of its own (leased from SANDBOX_UID_BASE.., see ``uids``) before bubblewrap starts.
Host uid 0 may write global sysctls and read root-only /proc files with no capability at all,
so a namespace alone is not enough. That uid cannot reach the runtime or the data folder on the
host (they may sit under /root), so a private mount namespace first binds exactly what the
sandbox needs under a fresh tmpfs, where bubblewrap, running as that uid, picks it up.

The kernel's code and /etc/passwd and /etc/group are copied into the sandbox's own root tmpfs
(``--file``), not bound from the host, so their host paths never show in its mountinfo.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from labbot.errors import SandboxUnavailable
from labbot.sandbox.jail.limits import SandboxLimits

log = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parents[1] / "runtime"
INSIDE_VENV = "/opt/labbot/venv"
INSIDE_KERNEL = "/opt/labbot/kernel"
INSIDE_FILES = "/mnt/files"
INSIDE_OUTPUT = "/mnt/data"
INSIDE_UID = 1000
# Where the launcher, in its private mount namespace only, puts a tmpfs holding the binds: the
# first of these that no bound folder lies under (the tmpfs hides what was there).
STAGE_CANDIDATES = ("/mnt", "/tmp", "/run", "/media", "/srv", "/var/tmp")

_JOIN_CGROUPS = 'for f in $LABBOT_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done'


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


@dataclass(frozen=True, slots=True)
class Bind:
    """A host folder shown read-only inside."""

    source: Path
    target: str


def _tool(name: str) -> str:
    """The path of a util-linux tool, or SandboxUnavailable naming the fix."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise SandboxUnavailable(
            f"{name} is not installed; the sandbox needs it to start.",
            hint="Install util-linux (`apt-get install util-linux`), or run `make setup`.",
        )
    return path


@cache
def fixed_layout_allowed(setarch: str) -> bool:
    """Whether this host lets a process turn its address randomisation off (a container's
    seccomp profile may refuse the personality call); asked once."""
    try:
        done = subprocess.run(  # noqa: S603 - our own argv, no shell
            [setarch, "--addr-no-randomize", "--", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        log.warning("sandbox.layout_not_fixed: personality refused, sessions share no memory")
        return False
    return True


def stage_dir(sources: list[Path]) -> str:
    """The first candidate folder that exists, that anyone may pass through, and that holds
    none of the sources."""
    for candidate in STAGE_CANDIDATES:
        path = Path(candidate)
        if path.is_symlink() or not path.is_dir() or not path.stat().st_mode & 0o001:
            continue
        if not any(source == path or path in source.parents for source in sources):
            return candidate
    raise SandboxUnavailable(
        "No folder is free for the sandbox's mounts (all of"
        f" {', '.join(STAGE_CANDIDATES)} hold the data or runtime).",
        hint="Move LABBOT_DATA_DIR or LABBOT_RUNTIME_DIR elsewhere, e.g. under /var/lib.",
    )


def kernel_files() -> dict[str, bytes]:
    """The kernel's code as the sandbox sees it (path inside → bytes), with its /etc files."""
    files = {f"{INSIDE_KERNEL}/{p.name}": p.read_bytes() for p in sorted(KERNEL_DIR.glob("*.py"))}
    files["/etc/passwd"] = f"sandbox:x:{INSIDE_UID}:{INSIDE_UID}::/tmp:/bin/sh\n".encode()
    files["/etc/group"] = f"sandbox:x:{INSIDE_UID}:\n".encode()
    return files


class Command:
    """Builds the argv that starts one kernel: launcher (cgroups, identity, rlimits) + bwrap."""

    def __init__(
        self,
        *,
        bwrap: str,
        runtime: Runtime,
        limits: SandboxLimits,
        uid: int | None,
        nproc: int | None,
        cgroups: bool,
        same_layout: bool = False,
    ) -> None:
        self.bwrap = bwrap
        self.runtime = runtime
        self.limits = limits
        self.uid = uid  # the host uid (and gid) to drop to when the bot is root
        self.nproc = nproc
        self.cgroups = cgroups
        self.setpriv, self.prlimit = _tool("setpriv"), _tool("prlimit")
        # Every session's Python at the same addresses, so that its preloaded pages are the same
        # bytes in every session and can be merged (SANDBOX_SHARE_MEMORY).
        self.setarch = _tool("setarch") if same_layout else None
        if self.setarch is not None and not fixed_layout_allowed(self.setarch):
            self.setarch = None
        if uid is not None:
            self.unshare, self.mount = _tool("unshare"), _tool("mount")

    def binds(self, files_dir: Path) -> list[Bind]:
        """Every host folder the sandbox sees besides /usr."""
        binds = [Bind(self.runtime.venv, INSIDE_VENV), Bind(files_dir, INSIDE_FILES)]
        base = self.runtime.base_prefix
        if not str(base).startswith("/usr/"):
            binds.append(Bind(base, str(base)))
        return binds

    def argv(
        self,
        *,
        files_dir: Path,
        seccomp_fd: int,
        copies: dict[str, int],
        environment: dict[str, str],
        kernel: list[str],
    ) -> list[str]:
        """The whole command line: launcher, then bubblewrap, then the kernel. ``copies``: the
        files bubblewrap copies into the sandbox (path inside → a descriptor to read)."""
        binds = self.binds(files_dir)
        if self.uid is None:  # already unprivileged: bubblewrap reads the folders itself
            sources = [str(b.source) for b in binds]
            launcher = ["/bin/sh", "-c", f'{_JOIN_CGROUPS}; exec "$@"', "labbot-sandbox"]
        else:
            at = stage_dir([b.source for b in binds])
            sources = [f"{at}/{i}" for i in range(len(binds))]
            stage = [
                f"{shlex.quote(self.mount)} -t tmpfs -o size=64k,mode=0755,nosuid,nodev"
                f" labbot-stage {at} || exit 98"
            ]
            for path, bind in zip(sources, binds, strict=True):
                stage.append(
                    f"mkdir {path} && {shlex.quote(self.mount)} --bind"
                    f" {shlex.quote(str(bind.source))} {path} || exit 98"
                )
            script = "; ".join([_JOIN_CGROUPS, *stage, 'exec "$@"'])
            launcher = [
                self.unshare,
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                script,
                "labbot-sandbox",
            ]
        return [
            *launcher,
            *self._identity(),
            *self._rlimits(),
            *([self.setarch, "--addr-no-randomize", "--"] if self.setarch else []),
            *self._bwrap(binds, sources, seccomp_fd, copies, environment),
            "--",
            *kernel,
        ]

    def _identity(self) -> list[str]:
        argv = [self.setpriv, "--pdeathsig", "KILL"]
        if self.uid is not None:
            argv += [
                f"--reuid={self.uid}",
                f"--regid={self.uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--no-new-privs",
            ]
        return [*argv, "--"]

    def _rlimits(self) -> list[str]:
        limits = self.limits
        argv = [
            self.prlimit,
            f"--nofile={limits.open_files}",
            f"--fsize={limits.disk_bytes}",
            # No core dumps: below a page no file is written, and 1 (not 0) is the kernel's
            # own sign to start no helper when core_pattern pipes to one (as root).
            "--core=1",
        ]
        if self.nproc is not None:
            argv.append(f"--nproc={self.nproc}")
        if not self.cgroups:  # the address space stands in for the memory limit
            argv.append(f"--as={limits.memory_bytes * 2}")
        return [*argv, "--"]

    def _bwrap(
        self,
        binds: list[Bind],
        sources: list[str],
        seccomp_fd: int,
        copies: dict[str, int],
        environment: dict[str, str],
    ) -> list[str]:
        disk = str(self.limits.disk_bytes)
        args = [
            self.bwrap,
            "--unshare-all",
            "--die-with-parent",
            # The kernel is the namespace's init: no bubblewrap process runs inside, where user
            # code could write its memory through /proc/1/mem (same uid, so allowed).
            "--as-pid-1",
            "--new-session",
            "--clearenv",
            "--cap-drop",
            "ALL",
            "--unshare-user",
            "--uid",
            str(INSIDE_UID),
            "--gid",
            str(INSIDE_UID),
            "--disable-userns",
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
        for source, bind in zip(sources, binds, strict=True):
            args += ["--ro-bind", source, bind.target]
        args += ["--dir", INSIDE_KERNEL, "--dir", "/etc"]
        for inside, fd in copies.items():
            args += ["--perms", "0444", "--file", str(fd), inside]
        args += [
            "--size", disk, "--tmpfs", "/tmp",
            "--size", disk, "--tmpfs", INSIDE_OUTPUT,
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", disk, "--tmpfs", "/dev/shm",
            # No pseudo-terminals: their number is capped for the whole machine.
            "--size", "4096", "--tmpfs", "/dev/pts",
            "--remount-ro", "/dev",
            "--remount-ro", "/",  # last: the root tmpfs holds only mount points
            "--chdir", INSIDE_OUTPUT,
            "--seccomp", str(seccomp_fd),
        ]  # fmt: skip
        for name, value in environment.items():
            args += ["--setenv", name, value]
        return args
