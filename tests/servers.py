"""Real servers for the scale-out tests: nats-server (JetStream, with the README's per-role
permissions) and SeaweedFS (an S3 API), started from their PyPI wheels and stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from obstore.store import S3Store

from labbot.remote.natsconf import server_config

BIN = Path(sys.executable).parent
READY_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output is drained by a thread; ``wait_for`` a line of it."""

    def __init__(
        self,
        argv: list[str],
        log: Path,
        *,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self._lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            [*(prefix or []), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                with self._seen:
                    self._lines.append(line)
                    self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = READY_TIMEOUT) -> None:
        """Block until a line containing ``text`` appears (or fail with the log)."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while not any(text in line for line in self._lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise RuntimeError(f"{text!r} never came; log:\n{''.join(self._lines)[-3000:]}")
                self._seen.wait(remaining)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM by PID (the whole process group; a paused one is woken to get it), SIGKILL
        after ``grace`` seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
                os.killpg(self.proc.pid, signal.SIGCONT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Nats:
    """A running nats-server with a bot user and one user per worker id."""

    url: str
    bot_password: str
    worker_passwords: dict[str, str]
    process: Process
    config: Path = field(repr=False)

    def bot_env(self) -> dict[str, str]:
        return {
            "LABBOT_NATS_URL": self.url,
            "LABBOT_NATS_USER": "bot",
            "LABBOT_NATS_PASSWORD": self.bot_password,
        }

    def worker_env(self, host: str) -> dict[str, str]:
        return {
            "LABBOT_NATS_URL": self.url,
            "LABBOT_NATS_USER": f"worker-{host}",
            "LABBOT_NATS_PASSWORD": self.worker_passwords[host],
            "LABBOT_HOST_ID": host,
        }


@contextlib.contextmanager
def nats_server(
    root: Path,
    workers: list[str],
    *,
    host: str = "127.0.0.1",
    prefix: list[str] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[Nats]:
    """nats-server with JetStream on a free port; every process stopped by PID afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(host) if prefix is None else 4222
    bot_password = secrets.token_urlsafe(16)
    passwords = {w: secrets.token_urlsafe(16) for w in workers}
    config = root / "nats.conf"
    config.write_text(
        server_config(
            listen=f"{host}:{port}",
            store_dir=root / "jetstream",
            bot_password=bot_password,
            workers=passwords,
            tls=tls,
        )
    )
    argv = [str(BIN / "nats-server"), "-c", str(config)]
    process = Process(argv, root / "nats.log", prefix=prefix)
    try:
        process.wait_for("Server is ready")
        scheme = "tls" if tls else "nats"
        yield Nats(f"{scheme}://{host}:{port}", bot_password, passwords, process, config)
    finally:
        process.stop()


@dataclass
class S3:
    """A running SeaweedFS S3 gateway with one bucket and one access key."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: Process

    def env(self, prefix: str = "files") -> dict[str, str]:
        return {
            "LABBOT_BLOB_URL": f"s3://{self.bucket}/{prefix}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def bucket_store(self) -> S3Store:
        """The bucket opened directly with the S3 keys (which every machine of a deployment
        has): what an intruder holding them can read and write."""
        return S3Store(
            self.bucket,
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region="us-east-1",
            client_options={"allow_http": True},
        )


@contextlib.contextmanager
def seaweedfs(
    root: Path, *, host: str = "127.0.0.1", prefix: list[str] | None = None
) -> Iterator[S3]:
    """SeaweedFS (master, volume, filer, S3) on free ports with a bucket named ``labbot``."""
    root.mkdir(parents=True, exist_ok=True)
    access, secret = "labbot" + secrets.token_hex(4), secrets.token_urlsafe(24)
    identity = {
        "name": "labbot",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    names = ("master", "volume", "filer", "s3")
    if prefix is not None:  # in a namespace of its own: the usual ports are free
        ports = dict(zip(names, (9333, 8080, 8888, 8333), strict=True))
    else:
        ports = {name: free_port(host) for name in names}
        while (
            len({*ports.values(), *(p + 10000 for p in ports.values())}) < 8
            or max(ports.values()) > 55000
        ):  # gRPC ports are port + 10000
            ports = {name: free_port(host) for name in names}
    weed = str(BIN / "weed")
    argv = [
        weed,
        "server",
        f"-dir={root}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-filer",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.config={root / 's3.json'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=16",
    ]
    process = Process(argv, root / "weed.log", prefix=prefix)
    try:
        process.wait_for("Start Seaweed S3 API Server")
        shell = [*(prefix or []), weed, "shell", f"-master={host}:{ports['master']}"]
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # the master may still be electing itself: retry until it answers
            done = subprocess.run(
                shell, input="s3.bucket.create -name labbot\n", capture_output=True, text=True
            )
            if "created bucket" in done.stdout or "already exist" in done.stdout:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bucket not created: {done.stdout}{done.stderr}")
        yield S3(f"http://{host}:{ports['s3']}", "labbot", access, secret, process)
    finally:
        process.stop(grace=1.0)  # its data is thrown away: no need to wait for a clean exit
        for sock in Path("/tmp").glob("seaweedfs-*-grpc-*.sock"):
            if any(f"-{p + 10000}.sock" in sock.name for p in ports.values()):
                sock.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any labbot setting, plus ``extra``."""
    prefixes = ("LABBOT_", "AWS_", "DISCORD_", "OPENAI_", "MONGODB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def start_worker(
    host: str,
    nats: Nats,
    s3: S3,
    data_dir: Path,
    *,
    prefix: list[str] | None = None,
    url: str | None = None,
    **settings: str,
) -> Process:
    """`labbot worker` as a child process, returned once it serves its subjects."""
    env = clean_env(
        **nats.worker_env(host),
        **s3.env(),
        **{
            "LABBOT_DATA_DIR": str(data_dir),
            "SANDBOX_WARM_POOL": "1",
            # Test cells are tiny: room for every session the tests start on one machine
            # (memory admission would otherwise size 2 GiB sessions to this machine).
            "SANDBOX_MEMORY_MB": "512",
            "SANDBOX_PRELOAD": "false",  # kernels start in milliseconds, even at a quarter core
            "MAX_SESSIONS_PER_USER": "16",  # tests hold many conversations of one user
            "CODE_EXECUTION_TIMEOUT": "30",  # as the tests' bots (a longer one gets no cells)
            "LOG_LEVEL": "INFO",
            **settings,
        },
    )
    if url:
        env["LABBOT_NATS_URL"] = url
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "labbot", "worker"]
    process = Process(argv, data_dir / "worker.log", prefix=prefix, env=env)
    process.wait_for("worker.ready")
    return process


@contextlib.contextmanager
def workers_running(
    hosts: Iterable[str], nats: Nats, s3: S3, root: Path, **settings: str
) -> Iterator[dict[str, Process]]:
    """`labbot worker` processes for ``hosts`` (data dirs under ``root``), stopped on exit."""
    started: dict[str, Process] = {}
    try:
        for host in hosts:
            started[host] = start_worker(host, nats, s3, root / host, **settings)
        yield started
    finally:
        for process in started.values():
            process.stop()
