"""Several hosts on one machine: network namespaces joined by a bridge, each worker host in a
cgroup with a CPU quota. The control host runs nats-server, SeaweedFS and the bot engine
(``tests/remote/drive.py``); each worker host runs `labbot worker`. Needs root.

Everything started is stopped by its PID; namespaces and cgroups are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import S3, Nats, Process, clean_env, nats_server, seaweedfs, start_worker

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.231.0"
CONTROL_IP = f"{SUBNET}.1"
CPU_CGROUP = Path("/sys/fs/cgroup/cpu")


def can_build() -> str | None:
    """Why a cluster cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, cgroups)"
    if not shutil.which("ip"):
        return "needs iproute2 (`ip`)"
    if not (CPU_CGROUP / "cpu.cfs_quota_us").exists():
        return "needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    return None


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@dataclass
class WorkerHost:
    name: str
    netns: str
    ip: str
    veth: str  # its cable's end on the control host's bridge
    cgroup: Path | None
    process: Process | None = None


@dataclass
class Cluster:
    """A control host and worker hosts; use as a context manager."""

    root: Path
    cpu_quota: float | None = 0.25
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, WorkerHost] = field(default_factory=dict)
    nats: Nats | None = None
    s3: S3 | None = None

    @property
    def control(self) -> str:
        return f"lbc-{self.tag}"

    def in_control(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.control}"]

    def __enter__(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        self._stack.callback(self._delete_control)
        sh("ip", "netns", "add", self.control)
        sh("ip", "-n", self.control, "link", "set", "lo", "up")
        sh("ip", "-n", self.control, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.control, "addr", "add", f"{CONTROL_IP}/24", "dev", "br0")
        sh("ip", "-n", self.control, "link", "set", "br0", "up")
        workers = [f"w{i}" for i in range(1, 5)]
        self.nats = self._stack.enter_context(
            nats_server(self.root / "nats", workers, host=CONTROL_IP, prefix=self.in_control())
        )
        self.s3 = self._stack.enter_context(
            seaweedfs(self.root / "seaweedfs", host=CONTROL_IP, prefix=self.in_control())
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for host in list(self.hosts.values()):
            self._remove_host(host)
        self._stack.close()

    def add_worker(self, name: str, **settings: str) -> WorkerHost:
        """A new worker host on the bridge, in its own CPU-limited cgroup, running a worker."""
        index = int(name.lstrip("w"))
        host = WorkerHost(
            name,
            f"lb{name}-{self.tag}",
            f"{SUBNET}.{10 + index}",
            f"lbv{index}{self.tag}",
            None,
        )
        self.hosts[name] = host
        inner = f"lbi{index}{self.tag}"
        sh("ip", "netns", "add", host.netns)
        sh("ip", "-n", host.netns, "link", "set", "lo", "up")
        sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", host.veth, "netns", self.control)
        sh("ip", "link", "set", inner, "netns", host.netns)
        sh("ip", "-n", self.control, "link", "set", host.veth, "master", "br0", "up")
        sh("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", inner)
        sh("ip", "-n", host.netns, "link", "set", inner, "up")
        prefix = ["nsenter", f"--net=/run/netns/{host.netns}"]
        if self.cpu_quota is not None:
            host.cgroup = CPU_CGROUP / f"labbot-test-{host.netns}"
            host.cgroup.mkdir()
            (host.cgroup / "cpu.cfs_period_us").write_text("100000")
            # Unlimited while it starts; the driver applies the quota when it measures.
            (host.cgroup / "cpu.cfs_quota_us").write_text("-1")
            # Join the cgroup, then exec into the namespace: the worker and its sandboxes
            # inherit both.
            join = 'echo $$ > "$0" && exec "$@"'
            prefix = ["sh", "-c", join, str(host.cgroup / "cgroup.procs"), *prefix]
        assert self.nats is not None and self.s3 is not None
        host.process = start_worker(
            name,
            self.nats,
            self.s3,
            self.root / name,
            prefix=prefix,
            **settings,
        )
        return host

    def kill(self, name: str) -> None:
        """kill -9 every process of a worker host, by PID."""
        host = self.hosts[name]
        for pid in self.pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cut(self, name: str) -> None:
        """Unplug a worker host's cable: its processes live on, unreachable."""
        sh("ip", "-n", self.control, "link", "set", self.hosts[name].veth, "down")

    def pids(self, host: WorkerHost) -> list[int]:
        done = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=False
        )
        return [int(p) for p in done.stdout.split()]

    def _remove_host(self, host: WorkerHost) -> None:
        if host.process is not None:
            host.process.stop()
        for pid in self.pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", host.netns], check=False, capture_output=True)
        if host.cgroup is not None:
            with contextlib.suppress(OSError):
                _remove_cgroup_tree(host.cgroup)
        self.hosts.pop(host.name, None)

    def _delete_control(self) -> None:
        subprocess.run(["ip", "netns", "del", self.control], check=False, capture_output=True)

    def drive(self, **job: Any) -> dict[str, Any]:
        """Run ``tests/remote/drive.py`` on the control host (the bot engine) and return what it
        printed (JSON)."""
        assert self.nats is not None and self.s3 is not None
        env = clean_env(
            **self.nats.bot_env(),
            **self.s3.env(),
            LABBOT_DATA_DIR=str(self.root / "bot"),
            LABBOT_EXECUTOR="nats",
            PYTHONPATH=str(REPO),
        )
        job.setdefault("pids", {n: h.process.proc.pid for n, h in self.hosts.items() if h.process})
        job.setdefault("veths", {n: h.veth for n, h in self.hosts.items()})
        job.setdefault("cgroups", {n: str(h.cgroup) for n, h in self.hosts.items() if h.cgroup})
        job.setdefault("quota", self.cpu_quota)
        done = subprocess.run(
            [*self.in_control(), sys.executable, "-m", "tests.remote.drive", json.dumps(job)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def _remove_cgroup_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir():
            child.rmdir()
    path.rmdir()
