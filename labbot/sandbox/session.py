"""Live interpreters: one kernel per (user, conversation), an idle timeout, an LRU cap, and a
warm pool of kernels that already imported the data stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labbot.errors import SandboxUnavailable
from labbot.sandbox.jail import Cgroup, Jail, new_kernel_name
from labbot.sandbox.runtime import protocol

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 30.0  # imports take 1-2 s; a start that hangs is killed and retried
INTERRUPT_GRACE = 3.0
STDERR_KEEP = 4000
MAX_REMEMBERED_LOSSES = 10_000

StreamHandler = Callable[[str, str], Awaitable[None]]
FileHandler = Callable[[str, AsyncIterator[bytes]], Awaitable[None]]


class KernelLost(Exception):
    """The kernel died or was killed; ``status`` is "timeout", "memory" or "killed"."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class KernelProcess:
    """The host's handle on one kernel: start it, run cells, interrupt or kill it."""

    def __init__(self, jail: Jail, root: Path) -> None:
        self.jail = jail
        self.name = new_kernel_name()
        self.workdir = root / self.name
        self.files_dir = self.workdir / "files"
        self.output_dir = self.workdir / "output"
        self.process: asyncio.subprocess.Process | None = None
        self.cgroup: Cgroup | None = None
        self.startup_seconds = 0.0
        self._stderr = bytearray()
        self._cells = 0
        self._dead: KernelLost | None = None

    @property
    def alive(self) -> bool:
        """True while the kernel can take cells."""
        return self._dead is None and self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Spawn the kernel and wait until it has imported the data stack."""
        for path in (self.files_dir, self.output_dir):
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        self.process, self.cgroup = await self.jail.spawn(
            self.name, files_dir=self.files_dir, output_dir=self.output_dir
        )
        self._stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr())
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                kind, payload = await self._read()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.kill()
            detail = self._stderr.decode(errors="replace").strip()[-600:] or type(exc).__name__
            raise SandboxUnavailable(
                f"The sandbox failed to start: {detail}",
                hint="Check `labbot doctor`; bubblewrap needs user namespaces (run as root, or"
                " allow unprivileged ones), and LABBOT_SANDBOX=off is for development only.",
            ) from exc
        except BaseException:  # cancelled mid-start: never leave a sandbox behind
            await asyncio.shield(self.kill())
            raise
        message = json.loads(payload)
        self.startup_seconds = message.get("startup", 0.0)

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self._stderr += chunk
            del self._stderr[: max(len(self._stderr) - STDERR_KEEP, 0)]

    async def _read(self) -> tuple[bytes, bytes]:
        assert self.process is not None and self.process.stdout is not None
        header = await self.process.stdout.readexactly(protocol.HEADER.size)
        kind, size = protocol.HEADER.unpack(header)
        if size > (protocol.CHUNK if kind == protocol.BYTES else protocol.MAX_JSON):
            raise ConnectionError(f"oversized frame ({size} bytes)")
        return kind, await self.process.stdout.readexactly(size)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(protocol.encode_json(message))
        await self.process.stdin.drain()

    async def execute(
        self,
        code: str,
        *,
        files: dict[str, dict[str, Any]],
        limits: dict[str, Any],
        time_limit: float,
        on_stream: StreamHandler,
        on_file: FileHandler,
    ) -> dict[str, Any]:
        """Run one cell; return the kernel's result frame, or raise KernelLost."""
        if not self.alive:
            raise self._dead or KernelLost("killed", "the session had already ended")
        self._cells += 1
        cell = self._cells
        oom_before = await asyncio.to_thread(self.cgroup.oom_kills) if self.cgroup else 0
        try:
            async with asyncio.timeout(time_limit):
                await self._send(
                    {
                        "type": "execute",
                        "cell": cell,
                        "code": code,
                        "files": files,
                        "limits": limits,
                    }
                )
                skipped: list[dict[str, Any]] = []
                while True:
                    kind, payload = await self._read()
                    message = json.loads(payload)
                    if message["type"] == "stream":
                        await on_stream(message["name"], message["text"])
                    elif message["type"] == "file":
                        await self._receive_file(message["name"], on_file)
                    elif message["type"] == "file_skipped":
                        skipped.append(message)
                    elif message["type"] == "result" and message.get("cell") == cell:
                        return {**message, "skipped": skipped}
        except TimeoutError:
            await self.kill()
            self._dead = KernelLost(
                "timeout",
                f"the code ran longer than the {time_limit:g} s time limit and was"
                " stopped, with every process it started",
            )
            raise self._dead from None
        except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError) as exc:
            if self.process is not None:  # the channel closed: the process is ending
                await self.process.wait()
            death = await asyncio.to_thread(self._death, oom_before)  # before the cgroup goes
            await self.kill()
            raise death from exc
        except asyncio.CancelledError:
            # The caller gave up (/stop, a closing bot): never leave the cell running
            # unsupervised or the channel half-read.
            await asyncio.shield(self.kill())
            raise
        except Exception as exc:  # a frame that makes no sense: the code forged or broke it
            log.warning("kernel.protocol_error kind=%s", type(exc).__name__)
            await self.kill()
            self._dead = KernelLost("killed", "the interpreter broke its protocol and was stopped")
            raise self._dead from exc

    def _death(self, oom_before: int) -> KernelLost:
        """Why the kernel went away, in words."""
        if self.cgroup is not None and self.cgroup.oom_kills() > oom_before:
            limit = self.jail.limits.memory_bytes // (1024 * 1024)
            self._dead = KernelLost(
                "memory", f"the code ran out of memory (limit {limit} MiB) and was stopped"
            )
        else:
            code = self.process.returncode if self.process else None
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            self._dead = KernelLost("killed", f"the interpreter process ended ({how})")
        return self._dead

    async def _receive_file(self, name: str, on_file: FileHandler) -> None:
        """Hand a streamed output file to ``on_file``; keep the channel in step even if it
        stops reading early."""
        finished = False

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal finished
            while True:
                kind, payload = await self._read()
                if kind == protocol.BYTES:
                    yield payload
                else:
                    finished = True
                    return

        stream = chunks()
        try:
            await on_file(name, stream)
        finally:
            while not finished:
                async for _ in stream:
                    pass
                finished = True

    async def interrupt(self) -> None:
        """Ask the running cell to stop (KeyboardInterrupt); state is kept."""
        if self.alive:
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await self._send({"type": "interrupt"})

    async def kill(self) -> None:
        """Kill the sandbox and every process in it, and remove its folders."""
        if self._dead is None:
            self._dead = KernelLost("killed", "the session was closed")
        process, cgroup = self.process, self.cgroup
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)  # bwrap; --die-with-parent ends the rest
            await process.wait()
        if process is not None:
            process._transport.close()  # type: ignore[attr-defined]  # release the pipes now
        if cgroup is not None:
            await asyncio.to_thread(cgroup.kill_all)
            await asyncio.to_thread(cgroup.remove)
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)


@dataclass
class Session:
    """A conversation's live kernel."""

    user: str
    conversation: str
    kernel: KernelProcess
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    restarted: str | None = None  # why the previous session of this conversation was lost


class SessionManager:
    """Keeps live kernels per (user, conversation) with an idle timeout, an LRU cap and a warm
    pool. A pooled kernel is handed to exactly one session and never returns to the pool."""

    def __init__(
        self, jail: Jail, *, idle_seconds: float, max_sessions: int, pool_size: int
    ) -> None:
        self.jail = jail
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self.pool_size = pool_size
        self.sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._lost: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._pool: list[KernelProcess] = []
        self._starting: set[KernelProcess] = set()
        # Two one-way signals, so no wake-up is lost: takers ask for a refill, the filler says
        # when the pool is full.
        self._need_fill = asyncio.Event()
        self._pool_full = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._starts = asyncio.Semaphore(os.cpu_count() or 2)
        self.dropped = asyncio.Event()  # set whenever a session is ended for a reason

    async def start(self) -> None:
        """Start filling the warm pool and reaping idle sessions."""
        await asyncio.to_thread(self.jail.root.mkdir, parents=True, exist_ok=True)
        if self.jail.enabled:
            await asyncio.to_thread(self.jail.remove_stale_cgroups)
        self._tasks = [
            asyncio.create_task(self._fill_pool()),
            asyncio.create_task(self._reap_idle()),
        ]

    async def close(self) -> None:
        """Kill every kernel, pooled or live."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        kernels = [*self._pool, *self._starting, *(s.kernel for s in self.sessions.values())]
        self._pool, self.sessions = [], OrderedDict()
        await asyncio.gather(*(k.kill() for k in kernels), return_exceptions=True)

    @property
    def warm(self) -> int:
        """Started kernels waiting in the pool."""
        return len(self._pool)

    async def wait_for_pool(self) -> None:
        """Return once the warm pool is full (for benchmarks and tests)."""
        await self._pool_full.wait()

    async def _fill_pool(self) -> None:
        while True:
            self._need_fill.clear()  # before filling: a take during the fill sets it again
            while len(self._pool) < self.pool_size:
                kernel = KernelProcess(self.jail, self.jail.root)
                try:
                    await self._start(kernel)
                except Exception:  # keep refilling: a passing failure must not end the pool
                    log.exception("pool.start_failed")
                    await asyncio.sleep(5)
                    continue
                self._pool.append(kernel)
            self._pool_full.set()
            await self._need_fill.wait()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.idle_seconds / 2))
            now = time.monotonic()
            for key, session in list(self.sessions.items()):
                if now - session.last_used > self.idle_seconds and not session.lock.locked():
                    minutes = self.idle_seconds / 60
                    await self._drop(key, f"it was idle for more than {minutes:g} minutes")

    async def _drop(self, key: tuple[str, str], reason: str) -> None:
        session = self.sessions.pop(key, None)
        if session is None:
            return
        self._lost[key] = reason
        while len(self._lost) > MAX_REMEMBERED_LOSSES:
            self._lost.popitem(last=False)
        log.info("session.dropped user=%s reason=%s", key[0], reason)
        await session.kernel.kill()
        self.dropped.set()

    async def get(self, user: str, conversation: str) -> Session:
        """The conversation's live session, starting one (from the pool when it can)."""
        key = (user, conversation)
        async with self._lock:
            session = self.sessions.get(key)
            if session is not None and session.kernel.alive:
                self.sessions.move_to_end(key)
                session.last_used = time.monotonic()
                return session
            if session is not None:
                reason = (
                    session.kernel._dead.reason if session.kernel._dead else "its interpreter ended"
                )
                self.sessions.pop(key)
                self._lost[key] = reason
            while len(self.sessions) >= self.max_sessions:
                victim = next((k for k, s in self.sessions.items() if not s.lock.locked()), None)
                if victim is None:
                    break
                await self._drop(victim, "the server needed room for other sessions")
            kernel = self._take_pooled()
        if kernel is None:
            kernel = await self._fresh_kernel()
        session = Session(user, conversation, kernel, restarted=self._lost.pop(key, None))
        async with self._lock:
            self.sessions[key] = session
        return session

    async def _fresh_kernel(self, attempts: int = 2) -> KernelProcess:
        """Start a kernel now; a start that fails or hangs is retried once."""
        for attempt in range(1, attempts + 1):
            kernel = KernelProcess(self.jail, self.jail.root)
            try:
                await self._start(kernel)
                return kernel
            except SandboxUnavailable:
                if attempt == attempts:
                    raise
                log.warning("kernel.start_retry attempt=%d", attempt)
        raise AssertionError("unreachable")

    async def _start(self, kernel: KernelProcess) -> None:
        # A start costs a second or two of CPU; a burst of them at once would each take too
        # long and time out, so they queue here (running cells are not held up by this).
        async with self._starts:
            self._starting.add(kernel)
            try:
                await kernel.start()
            finally:
                self._starting.discard(kernel)

    def _take_pooled(self) -> KernelProcess | None:
        kernel = None
        while self._pool and kernel is None:
            candidate = self._pool.pop(0)
            kernel = candidate if candidate.alive else None
        if self.pool_size:
            self._pool_full.clear()
            self._need_fill.set()
        return kernel

    async def reset(self, user: str, conversation: str) -> bool:
        """End the conversation's session (variables go; files stay). True if one was live."""
        key = (user, conversation)
        async with self._lock:
            session = self.sessions.pop(key, None)
            self._lost.pop(key, None)
        if session is None:
            return False
        await session.kernel.kill()
        return True

    def forget_loss(self, session: Session) -> None:
        """The restart notice was delivered; do not repeat it."""
        session.restarted = None
