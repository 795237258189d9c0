"""The host's side of one kernel: start it, run cells, interrupt, freeze or kill it.

Every frame the kernel sends is validated (``frames``) and every limit is enforced here again,
whatever the kernel claims: live output per stream, the number and bytes of output files, the
size of each result field. Anything that breaks the rules ends this session only, as a
``KernelLost`` the interpreter turns into a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from labbot.errors import SandboxUnavailable
from labbot.sandbox.frames import (
    FRAME,
    MAX_PIECES,
    FileEnd,
    FileStart,
    PieceStart,
    Ready,
    Result,
    Stream,
)
from labbot.sandbox.jail import Cgroup, Jail, SandboxLimits, new_kernel_name
from labbot.sandbox.jail.freezer import (
    Stopper,
    listed_pids,
    parked,
    tree_cpu_seconds,
    tree_pids,
)
from labbot.sandbox.runtime import protocol

log = logging.getLogger(__name__)

PARK_LOOK_AGAIN = 0.0005  # seconds: a kernel still on its way back to its waits, looked at again
STARTUP_TIMEOUT = 30.0  # imports take 1-2 s; a start that hangs is killed and retried
# On a loaded machine (load average over its cores) a start is slow, not broken: it may go on
# this long in all before it counts as failed.
STARTUP_TIMEOUT_BUSY = 150.0
# What bubblewrap says when user namespaces (or the rights to make them) are missing.
NAMESPACE_ERRORS = (
    "user namespace",
    "new namespace",
    "uid map",
    "unshare",
    "setting up uid",
    "no permissions to creat",
)
STDERR_KEEP = 4000
BWRAP_EXIT_GRACE = 2.0  # seconds for bubblewrap to exit after its kernel was killed
# A cell that has run this long goes on at the low CPU weight until it ends: the short cells of
# other sessions (a print, a first cell) are then served first, and long cells still share the
# CPU evenly among themselves, and all of it when no one else waits.
FOREGROUND_SECONDS = 1.0
STREAM_SLACK = 200  # the "[... N bytes of output omitted ...]" marker between head and tail

StreamHandler = Callable[[str, str], Awaitable[None]]
FileHandler = Callable[[str, AsyncIterator[bytes]], Awaitable[None]]


def machine_busy() -> bool:
    """True while the machine's load average is over its number of cores."""
    return os.getloadavg()[0] > (os.cpu_count() or 1)


LostStatus = Literal["timeout", "memory", "killed"]


class KernelLost(Exception):
    """The kernel died or was killed: how (``status``, an execution's status too), and why."""

    def __init__(self, status: LostStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ProtocolViolation(Exception):
    """The kernel sent something an honest kernel never sends."""


class _Budget:
    """What one execution may still send, counted by the host."""

    def __init__(self, limits: SandboxLimits, cell: int) -> None:
        self.limits = limits
        self.cell = cell
        self.live = {"stdout": 0, "stderr": 0}
        self.late = {"stdout": 0, "stderr": 0}
        self.files = 0
        self.file_bytes = 0
        self.pieces = 0

    def stream(self, frame: Stream) -> bool:
        """Count live output; False for output an earlier cell's thread printed late (dropped,
        and counted against an allowance of its own, as the kernel counts it per cell)."""
        self._check(frame.cell <= self.cell, "output of a cell not yet run")
        current = frame.cell == self.cell
        counts = self.live if current else self.late
        counts[frame.name] += len(frame.text)
        self._check(counts[frame.name] <= self.limits.output_head, "live output over limit")
        return current

    def file(self, frame: FileStart) -> None:
        self.files += 1
        self._check(self.files <= self.limits.max_output_files, "more output files than allowed")
        self._check(frame.size <= self.limits.max_file_bytes, "an output file over the size limit")

    def file_chunk(self, announced: int, received: int, chunk: int) -> None:
        self.file_bytes += chunk
        self._check(received <= announced, "more bytes than the file announced")
        self._check(self.file_bytes <= self.limits.output_files_bytes, "output bytes over limit")

    def piece(self, frame: PieceStart) -> None:
        """A checkpoint piece: its bytes count as the cell's output bytes (``file_chunk``)."""
        self.pieces += 1
        self._check(self.pieces <= MAX_PIECES, "more checkpoint pieces than allowed")

    def result(self, frame: Result) -> None:
        limits = self.limits
        self._check(frame.cell == self.cell, "the result of another cell")
        most = limits.output_head + limits.output_tail + STREAM_SLACK
        self._check(len(frame.stdout) <= most and len(frame.stderr) <= most, "output over limit")
        self._check(frame.status == "ok" or frame.error is not None, "an error without details")
        self._check(len(frame.skipped) <= limits.max_output_files, "too many skipped files")

    @staticmethod
    def _check(ok: bool, what: str) -> None:
        if not ok:
            raise ProtocolViolation(what)


class KernelProcess:
    """The host's handle on one kernel."""

    def __init__(self, jail: Jail, root: Path, *, background: bool = False) -> None:
        self.jail = jail
        self.root = root
        # A warm-pool kernel starts at the low CPU weight: no one waits for it yet, and its
        # start (imports, a second or two of CPU) must not slow the cells of live sessions.
        self.background = background
        self.reset_for_retry()

    def reset_for_retry(self) -> None:
        """Forget a failed start: the next ``start`` makes a new sandbox."""
        self.name = new_kernel_name()
        self.workdir = self.root / self.name
        self.files_dir = self.workdir / "files"
        self.output_dir = self.workdir / "output"
        self.process: asyncio.subprocess.Process | None = None
        self.cgroup: Cgroup | None = None
        self.stopper: Stopper | None = None  # stops its processes between cells
        self._parked = False  # the last cell left it parked: nothing was stopped
        self._second_look: asyncio.TimerHandle | None = None  # parked yet? (see _freeze)
        self._procs_file: str | None = None  # the cgroup's process list, when there is one
        self._stderr = bytearray()
        self._cells = 0
        self._reading = False  # a cell waits on the kernel's stdout
        self.dead: KernelLost | None = None
        self._killing: asyncio.Future[None] | None = None  # one kill, however many ask

    @property
    def alive(self) -> bool:
        """True while the kernel can take cells."""
        return self.dead is None and self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Spawn the kernel and wait until it has imported the data stack."""
        await asyncio.to_thread(self._make_folders)
        self.process, self.cgroup = await self.jail.spawn(
            self.name, files_dir=self.files_dir, output_dir=self.output_dir, low=self.background
        )
        self._procs_file = next(iter(self.cgroup.procs_files()), None)
        self._stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr())
        reader = asyncio.ensure_future(self._read())
        waited = 0.0
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=STARTUP_TIMEOUT)
                waited += STARTUP_TIMEOUT
                if not reader.done() and (waited >= STARTUP_TIMEOUT_BUSY or not machine_busy()):
                    raise TimeoutError
            ready = reader.result()
            if not isinstance(ready, Ready):
                raise ProtocolViolation("no ready frame")
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            ConnectionError,
            ProtocolViolation,
        ) as exc:
            await self._cancel(reader)
            oom = await asyncio.to_thread(self.cgroup.oom_kills) if self.cgroup else 0
            await self.kill()
            raise self._start_failure(exc, waited, oom) from exc
        except BaseException:  # cancelled mid-start: never leave a sandbox behind
            await asyncio.shield(self._cancel(reader))
            await asyncio.shield(self.kill())
            raise
        self._freeze()

    @staticmethod
    async def _cancel(reader: asyncio.Future[Any]) -> None:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader

    def _start_failure(self, exc: BaseException, waited: float, oom: int) -> SandboxUnavailable:
        """Why a start failed, in words: out of memory, a busy machine, a set-up problem."""
        detail = self._stderr.decode(errors="replace").strip()[-600:]
        if oom:
            limit = self.jail.limits.memory_bytes // 2**20
            return SandboxUnavailable(
                f"The sandbox ran out of memory while starting (limit {limit} MiB).",
                hint="Raise SANDBOX_MEMORY_MB, or set SANDBOX_PRELOAD=false so fewer packages"
                " are imported at start.",
            )
        if any(text in detail.lower() for text in NAMESPACE_ERRORS):
            return SandboxUnavailable(
                f"The sandbox failed to start: {detail}",
                hint="bubblewrap needs user namespaces: run as root, or allow unprivileged ones"
                " (`sysctl kernel.unprivileged_userns_clone=1`); `labbot doctor` checks this."
                " LABBOT_SANDBOX=off is for development only.",
            )
        if isinstance(exc, TimeoutError):
            load, cores = os.getloadavg()[0], os.cpu_count() or 1
            busy = " because this machine is busy" if load > cores else ""
            return SandboxUnavailable(
                f"The sandbox did not start within {waited:g} s{busy} (load {load:.1f} on"
                f" {cores} cores); nothing is wrong with its set-up. Try again in a minute.",
                hint="If this keeps happening, lower MAX_SESSIONS or SANDBOX_WARM_POOL, or give"
                " the bot more CPU.",
            )
        return SandboxUnavailable(
            f"The sandbox failed to start: {detail or type(exc).__name__}",
            hint="Run `labbot doctor`; its sandbox check says what is missing.",
        )

    def _make_folders(self) -> None:
        for path in (self.files_dir, self.output_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)  # the sandbox user reads the files folder (the data dir guards it)

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self._stderr += chunk
            del self._stderr[: max(len(self._stderr) - STDERR_KEEP, 0)]

    async def _frame(self) -> tuple[bytes, bytes]:
        assert self.process is not None and self.process.stdout is not None
        self._reading = True  # a kill meanwhile leaves the pipe to this reader (one at a time)
        try:
            header = await self.process.stdout.readexactly(protocol.HEADER.size)
            kind, size = protocol.HEADER.unpack(header)
            if kind not in (protocol.JSON, protocol.BYTES):
                raise ProtocolViolation("an unknown frame kind")
            if size > (protocol.CHUNK if kind == protocol.BYTES else protocol.MAX_JSON):
                raise ProtocolViolation(f"an oversized frame ({size} bytes)")
            return kind, await self.process.stdout.readexactly(size)
        finally:
            self._reading = False

    async def _read(self) -> Any:
        kind, payload = await self._frame()
        if kind != protocol.JSON:
            raise ProtocolViolation("bytes outside a file")
        try:
            return FRAME.validate_json(payload)
        except ValidationError as exc:
            raise ProtocolViolation(f"a malformed frame ({exc.error_count()} problems)") from exc

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(protocol.encode_json(message))
        await self.process.stdin.drain()

    def _pids(self) -> list[int]:
        """Every process of this sandbox now but the outer bubblewrap, which runs no user
        code and is outside the sandbox's PID namespace (a thread)."""
        if self.process is None:
            return []
        if self._procs_file is not None:
            found = listed_pids(self._procs_file)
        else:
            found = tree_pids(self.process.pid)
        return [pid for pid in found if pid != self.process.pid]

    def _freeze(self) -> None:
        """Stop the sandbox's processes until the next cell, unless it is parked (every thread
        blocked with no clock to wake it: then a stop and continue would only wake each thread
        twice). Either way its cgroup gets 1% of a core until the next cell."""
        if not self.jail.enabled:
            return
        if self.cgroup is not None:
            self.cgroup.hold()  # should a process run anyway, it gets 1% of a core
        # Parked is judged with a cgroup's process list only: without one, listing the
        # processes is a scan of the host's process table. The result often arrives while the
        # kernel's threads are still on their way back to their waits: one more look shortly.
        if self._procs_file is not None:
            if self._kernel_parked():
                self._parked = True
                return
            loop = asyncio.get_running_loop()
            self._second_look = loop.call_later(PARK_LOOK_AGAIN, self._freeze_later)
            return
        self._stop()

    def _freeze_later(self) -> None:
        self._second_look = None
        if self._kernel_parked():
            self._parked = True
        else:
            self._stop()

    def _stop(self) -> None:
        if self.stopper is None:
            self.stopper = Stopper(self._pids, cheap=self._procs_file is not None)
        self.stopper.stop()

    async def settled(self) -> None:
        """Return once what follows a cell is decided and done: parked, or every process seen
        stopped."""
        if self._second_look is not None:
            self._second_look.cancel()
            self._freeze_later()
        if self.stopper is not None:
            await self.stopper.settle()

    def _kernel_parked(self) -> bool:
        pids = self._pids()
        return len(pids) == 1 and parked(pids[0], self._pids)

    def foreground(self) -> bool:
        """A session has this kernel now: give it the normal CPU weight (a cheap write, for the
        event loop). False if that failed: then it must not serve a session."""
        self.background = False
        return self.cgroup is None or self.cgroup.prioritise(low=False)

    async def _thaw(self) -> None:
        self._parked = False
        if self._second_look is not None:  # the cell goes on now anyway
            self._second_look.cancel()
            self._second_look = None
        if self.cgroup is not None and not (self.cgroup.restore() and self.foreground()):
            # A cell held to 1% of a core (or left at the low weight) would miss every
            # deadline (a stop's grace included): the session ends instead, and the next cell
            # gets a fresh one.
            await self.kill()
            raise KernelLost("killed", "the sandbox's CPU share could not be given back")
        if self.stopper is not None:
            await self.stopper.resume()

    async def execute(
        self,
        code: str,
        *,
        files: dict[str, protocol.FileEntry],
        checkpoint: protocol.CheckpointOrder | None,
        time_limit: float,
        on_stream: StreamHandler,
        on_file: FileHandler,
        on_piece: FileHandler | None = None,
    ) -> Result:
        """Run one cell, under the jail's limits; return its validated result, or raise
        KernelLost. ``on_piece`` takes the pieces of the session's checkpoint (none are
        expected without it)."""
        if not self.alive:
            raise self.dead or KernelLost("killed", "the session had already ended")
        self._cells += 1
        budget = _Budget(self.jail.limits, self._cells)
        # One small cgroup file: read on the loop (a thread's hand-off per cell cost more).
        oom_before = self.cgroup.oom_kills() if self.cgroup else 0
        await self._thaw()
        background = asyncio.get_running_loop().call_later(FOREGROUND_SECONDS, self._to_background)
        try:
            async with asyncio.timeout(time_limit):
                request = protocol.ExecuteRequest(
                    budget.cell, code, files, self.jail.cell_limits, checkpoint
                )
                await self._send(request.message())
                while True:
                    frame = await self._read()
                    if isinstance(frame, Stream):
                        if budget.stream(frame):
                            await on_stream(frame.name, frame.text)
                    elif isinstance(frame, FileStart):
                        budget.file(frame)
                        await self._receive_file(frame, budget, on_file)
                    elif isinstance(frame, PieceStart) and on_piece is not None:
                        budget.piece(frame)
                        await self._receive_file(frame, budget, on_piece)
                    elif isinstance(frame, Result):
                        budget.result(frame)
                        self._freeze()
                        return frame
                    else:
                        raise ProtocolViolation(f"an unexpected {type(frame).__name__} frame")
        except TimeoutError:
            await self.kill()
            self.dead = KernelLost(
                "timeout",
                f"the code ran longer than the {time_limit:g} s time limit and was"
                " stopped, with every process it started",
            )
            raise self.dead from None
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
        except ProtocolViolation as exc:  # user code forged or broke the channel
            log.warning("kernel.protocol_violation what=%s", exc)
            await self.kill()
            self.dead = KernelLost(
                "killed", f"the interpreter sent something it must not ({exc}) and was stopped"
            )
            raise self.dead from exc
        finally:
            background.cancel()

    def _to_background(self) -> None:
        """The cell has run a while: the low CPU weight until the next cell (see _thaw)."""
        if self.alive and self.cgroup is not None:
            self.cgroup.prioritise(low=True)  # if refused, it just keeps the normal weight

    def _death(self, oom_before: int) -> KernelLost:
        """Why the kernel went away, in words."""
        if self.cgroup is not None and self.cgroup.oom_kills() > oom_before:
            limit = self.jail.limits.memory_bytes // (1024 * 1024)
            self.dead = KernelLost(
                "memory", f"the code ran out of memory (limit {limit} MiB) and was stopped"
            )
        else:
            code = self.process.returncode if self.process else None
            signal_number = -code if code is not None and code < 0 else None
            if code is not None and code > 128:  # the shell's way: 128 + the signal
                signal_number = code - 128
            how = f"killed by signal {signal_number}" if signal_number else f"exit code {code}"
            self.dead = KernelLost("killed", f"the interpreter process ended ({how})")
        return self.dead

    async def _receive_file(
        self, start: FileStart | PieceStart, budget: _Budget, on_file: FileHandler
    ) -> None:
        """Hand a streamed output file to ``on_file``, counting its bytes; keep the channel in
        step even if the handler stops reading early."""
        finished = False
        received = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal finished, received
            while True:
                kind, payload = await self._frame()
                if kind == protocol.BYTES:
                    received += len(payload)
                    budget.file_chunk(start.size, received, len(payload))
                    yield payload
                    continue
                try:
                    end = FRAME.validate_json(payload)
                except ValidationError as exc:
                    raise ProtocolViolation("a malformed frame inside a file") from exc
                if not isinstance(end, FileEnd):
                    raise ProtocolViolation("a file without its end")
                finished = True
                return

        stream = chunks()
        try:
            await on_file(start.name, stream)
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
        """Kill the sandbox and every process in it, and remove its folders. Callers at once
        (a stop's escalation, the cell's own reader, a reset) share one kill, which goes on
        to its end if a caller is cancelled: its cgroup is removed and its uid given back
        once."""
        if self.dead is None:  # not alive from now: nothing hands it out in the meantime
            self.dead = KernelLost("killed", "the session was closed")
        if self._killing is None:
            self._killing = asyncio.ensure_future(self._kill())
        await asyncio.shield(self._killing)

    async def _kill(self) -> None:
        process, cgroup = self.process, self.cgroup
        await self.settled()  # never race a stop; stopped tasks still die of SIGKILL
        if process is not None and process.returncode is None:
            # The kernel first: it is the namespace's init, so every process inside dies with
            # it, even if the code cleared its parent-death signal.
            pids = await asyncio.to_thread(self._pids)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if pids:
                # bubblewrap then reaps the kernel and exits by itself: killed first, it would
                # leave the kernel a zombie for the host's init, holding the session's uid.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BWRAP_EXIT_GRACE):
                        await self._reap(process, drain=not self._reading)
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)  # the launcher chain ends in bwrap
                await self._reap(process, drain=not self._reading)
        if process is not None:
            process._transport.close()  # type: ignore[attr-defined]  # release the pipes now
        if cgroup is not None:
            await asyncio.to_thread(cgroup.kill_all)
            await asyncio.to_thread(cgroup.remove)
        await asyncio.to_thread(self.jail.release, self.name)  # its uid, once nothing holds it
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)

    @staticmethod
    async def _reap(process: asyncio.subprocess.Process, *, drain: bool) -> None:
        """Wait for a killed kernel. asyncio's wait() also waits for the end of its pipes, and
        a kernel that flooded its channel has the reading paused: read to the end first, unless
        a cell's reader is waiting on the pipe already (it reads to the end itself: a stream
        takes one reader at a time)."""
        try:
            async with asyncio.timeout(10):
                if process.stdout is not None and drain:
                    while await process.stdout.read(2**16):
                        pass
                await process.wait()
        except (TimeoutError, ConnectionError):
            log.warning("kernel.reap_slow pid=%d", process.pid)
            process._transport.close()  # type: ignore[attr-defined]
            await process.wait()

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process of this sandbox (host view; a thread)."""
        if self.process is None:
            return 0.0
        return tree_cpu_seconds(self.process.pid)
