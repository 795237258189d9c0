"""CodeInterpreter.run(...) → ExecutionResult: the one path through which user code runs on
this machine (the local Executor)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath

from labbot.config import MIB, Settings
from labbot.core import ExecError, ExecutionResult, OutputFile, SkippedFile, progress
from labbot.errors import FileError, StorageError
from labbot.files import FileStore
from labbot.files.cache import BlobCache
from labbot.files.receipt import format_size
from labbot.sandbox.checkpoints import RESTORED, Checkpoints, StorePieces
from labbot.sandbox.executor import OutputHandler
from labbot.sandbox.files import SessionFiles, StoreFiles, bounded_notes, link_files
from labbot.sandbox.frames import Result
from labbot.sandbox.jail import INSIDE_FILES, Jail, SandboxLimits, memory_available
from labbot.sandbox.kernel_client import KernelLost
from labbot.sandbox.packages import Allowlist, Installer, InstallPolicy
from labbot.sandbox.pool import Session, Sessions
from labbot.sandbox.slots import FairSlots

log = logging.getLogger(__name__)

# Seconds an interrupted cell has to end before its session is killed (variables lost); an
# interrupt lands in milliseconds unless the code ignores it.
INTERRUPT_GRACE = 3.0
BOT_MEMORY_RESERVE = 512 * 1024 * 1024  # left to the bot itself when sizing sessions


async def _nothing(name: str, text: str) -> None:
    return None


class SlotWaitTimeout(Exception):
    """No execution slot came free within EXECUTION_QUEUE_TIMEOUT; the message says why."""


def session_capacity(settings: Settings) -> int:
    """How many sandboxes fit in memory at their limit: the machine's (or the bot's cgroup's)
    memory, less a reserve for the bot, or SANDBOX_MEMORY_BUDGET_MB when set."""
    per_session = settings.SANDBOX_MEMORY_MB * 1024 * 1024
    if settings.SANDBOX_MEMORY_BUDGET_MB:
        budget = settings.SANDBOX_MEMORY_BUDGET_MB * 1024 * 1024
    else:
        budget = memory_available() - BOT_MEMORY_RESERVE
    if budget < per_session:
        log.warning(
            "sandbox.memory_short budget_mb=%d session_mb=%d: one session at a time",
            budget // 2**20,
            settings.SANDBOX_MEMORY_MB,
        )
    return max(1, budget // per_session)


class CodeInterpreter:
    """Runs code in the caller's session, with their files, under the sandbox's limits.

    interpreter = CodeInterpreter(settings, store)
    await interpreter.start()
    result = await interpreter.run("1234", "thread-9", "df = load_file('abc')\\ndf.head()")
    """

    def __init__(
        self,
        settings: Settings,
        store: FileStore | None,
        *,
        jail: Jail | None = None,
        files: SessionFiles | None = None,
    ) -> None:
        self.settings = settings
        self.checkpoints = Checkpoints(int(settings.SESSION_CHECKPOINT_MB * MIB))
        if files is None:
            assert store is not None, "a CodeInterpreter needs a FileStore or SessionFiles"
            cache_bytes = int(settings.LABBOT_BLOB_CACHE_MAX_GB * 1024**3)
            cache = BlobCache(store.blobs, settings.blob_cache_dir, max_bytes=cache_bytes)
            # Deleted means gone: this machine's copies of removed files go with them.
            store.on_removed(lambda records: cache.forget((r.user, r.id) for r in records))
            files = StoreFiles(store, cache, StorePieces(store, self.checkpoints.cap))
        self.files = files
        self.limits = SandboxLimits.from_settings(settings)
        capacity = session_capacity(settings)
        self.jail = jail or Jail(settings, self.limits, capacity=capacity)
        self.sessions = Sessions(
            self.jail,
            idle_seconds=settings.SESSION_IDLE_MINUTES * 60,
            max_sessions=settings.MAX_SESSIONS,
            capacity=capacity,
            per_user=max(
                settings.MAX_SESSIONS_PER_USER, settings.MAX_CONCURRENT_EXECUTIONS_PER_USER
            ),
            pool_size=settings.SANDBOX_WARM_POOL,
        )
        self.allowlist = Allowlist(extra=settings.PACKAGE_ALLOWLIST)
        self.installer = Installer(
            settings.LABBOT_RUNTIME_DIR, timeout=settings.PACKAGE_INSTALL_TIMEOUT
        )
        self.installs = InstallPolicy(
            self.allowlist, self.installer, per_user_hourly=settings.PACKAGE_INSTALLS_PER_HOUR
        )
        # Fair across users: a user with a cell running waits behind users with none; one over
        # USER_SLOT_SECONDS_PER_HOUR waits behind everyone (a token bucket of slot seconds).
        self.slots = FairSlots(
            settings.MAX_CONCURRENT_EXECUTIONS,
            budget=settings.USER_SLOT_SECONDS_PER_HOUR or None,
        )
        self._per_user: dict[str, asyncio.Semaphore] = {}
        self._running: dict[tuple[str, str], tuple[Session, asyncio.Event]] = {}

    async def start(self) -> None:
        """Start the sessions (warm pool, idle reaper)."""
        await self.sessions.start()

    async def close(self) -> None:
        """Kill every session."""
        await self.sessions.close()

    @property
    def live_sessions(self) -> int:
        """How many sessions hold an interpreter now."""
        return len(self.sessions.sessions)

    async def run(
        self,
        user: str,
        conversation: str,
        code: str,
        *,
        on_output: OutputHandler | None = None,
        files: SessionFiles | None = None,
    ) -> ExecutionResult:
        """Run ``code`` in the conversation's session. Waits its turn when the user or the
        machine is at its concurrency limit. Failures of the code are results, not exceptions.
        ``files`` replaces the interpreter's own file access for this run (a worker machine
        passes the files the bot sent).

        :raises SandboxUnavailable: the sandbox cannot start on this machine, or has no room.
        """
        semaphore = self._per_user.setdefault(
            user, asyncio.Semaphore(self.settings.MAX_CONCURRENT_EXECUTIONS_PER_USER)
        )
        async with semaphore:
            # Outside the machine-wide limit: a session that must start a kernel (seconds on a
            # busy host) does not hold up the cells of sessions that are already running.
            session = await self.sessions.get(user, conversation)
            try:
                async with session.lock:
                    done = asyncio.Event()
                    self._running[(user, conversation)] = (session, done)
                    try:
                        return await self._run(
                            session, code, on_output or _nothing, files or self.files
                        )
                    finally:
                        done.set()
                        self._running.pop((user, conversation), None)
                        session.last_used = time.monotonic()
            finally:
                self.sessions.release()  # unlocked now: the session may make room

    @asynccontextmanager
    async def _slot(self, user: str) -> AsyncIterator[None]:
        """Hold one of the machine's execution slots, waiting fairly (with a status saying
        why) for at most EXECUTION_QUEUE_TIMEOUT seconds.

        :raises SlotWaitTimeout: no slot came free in time.
        """
        ticket = self.slots.enter(user)
        try:
            if not ticket.granted:
                why = self.slots.why_wait(user)
                log.info("slots.waiting user=%s busy=%d queued=%d", user, self.slots.busy,
                         self.slots.waiting)  # fmt: skip
                limit = self.settings.EXECUTION_QUEUE_TIMEOUT
                with progress(why):
                    try:
                        async with asyncio.timeout(limit):
                            await ticket.wait()
                    except TimeoutError:
                        raise SlotWaitTimeout(
                            f"The code was not run: no sandbox slot came free within {limit:g} s"
                            f" ({why.removeprefix('waiting for a free sandbox slot: ')}). Try"
                            " again in a few minutes; variables and files are kept."
                        ) from None
            yield
        finally:
            ticket.leave()

    async def _run(
        self, session: Session, code: str, on_output: OutputHandler, files: SessionFiles
    ) -> ExecutionResult:
        try:
            return await self._run_in_slots(session, code, on_output, files)
        except SlotWaitTimeout as busy:
            log.warning("slots.gave_up user=%s", session.user)
            return ExecutionResult(status="error", error=ExecError("SandboxBusy", str(busy)))

    async def _run_in_slots(
        self, session: Session, code: str, on_output: OutputHandler, files: SessionFiles
    ) -> ExecutionResult:
        restarted = session.restarted
        restored: tuple[str, ...] = ()
        async with self._slot(session.user):
            self.sessions.forget_loss(session)  # told with this result (not if no slot came)
            if await self.checkpoints.needs_restore(
                session.user, session.conversation, session.kernel, files.pieces
            ):
                restored, failure = await self._restore(session, files)
                if failure is not None:
                    return failure
            result, missing = await self._execute(session, code, on_output, files)
        if missing and result.status == "error" and self.settings.SANDBOX_AUTO_INSTALL:
            # The install waits apart from the execution slots (other users' cells go on).
            with progress(f"installing a package for {missing!r}"):
                package, note = await self.installs.decide(session.user, missing)
            if note:
                result = replace(result, notes=(*result.notes, note))
            if package is not None and session.kernel.alive:
                async with self._slot(session.user):
                    retried, _ = await self._execute(session, code, on_output, files)
                result = replace(
                    retried,
                    packages_installed=(package.requirement,),
                    files=result.files + retried.files,
                )
        if restarted or restored:
            notice = (
                f"The session was restarted because {restarted}: variables from earlier"
                " executions are gone; files are kept."
            )
            if restored:  # the checkpoint brought them back: one sentence says both
                why = f" because {restarted}" if restarted else ""
                notice = f"The session was restarted{why}: {restored[0]}"
            notes = (notice, *restored[1:], *result.notes)
            result = replace(result, session_restarted=True, notes=notes)
        return result

    async def _restore(
        self, session: Session, files: SessionFiles
    ) -> tuple[tuple[str, ...], ExecutionResult | None]:
        """A fresh session's first step: put the conversation's checkpoint back (an empty cell
        that restores). Its notes; or a result instead of the cell when it ended the session."""
        result, _ = await self._execute(session, "", _nothing, files)
        if session.kernel.alive:  # the restore's note first
            notes = sorted(result.notes, key=lambda n: not n.startswith(RESTORED))
            return tuple(notes) if notes[:1] and notes[0].startswith(RESTORED) else (), None
        note = (
            "The saved variables of this conversation could not be restored (the restore ended"
            f" the session: {result.error.message if result.error else 'it failed'}); they will"
            " not be tried again: the session starts empty (files are kept). The code was not"
            " run: run it again."
        )
        return (), replace(result, notes=(note,))

    async def _execute(
        self, session: Session, code: str, on_output: OutputHandler, files: SessionFiles
    ) -> tuple[ExecutionResult, str | None]:
        """One cell: its result, and the top-level module it could not import, if any."""
        now = await files.look(session.user, session.conversation)
        refs = now.refs
        local = {ref.id: await files.local(session.user, ref) for ref in refs}
        present = {k: v for k, v in local.items() if v is not None}
        refs = [ref for ref in refs if ref.id in present]
        inside = Path(INSIDE_FILES) if self.jail.enabled else session.kernel.files_dir
        manifest = await asyncio.to_thread(
            link_files,
            session.kernel.files_dir,
            refs,
            present,
            inside=inside,
            shared=self.jail.user is not None,
        )
        made: list[OutputFile] = []
        skipped: list[SkippedFile] = []
        evictions: list[str] = []
        started = time.perf_counter()
        checkpoint = await self.checkpoints.begin(
            session.user,
            session.conversation,
            session.kernel,
            files.pieces,
            state=now.pieces,
            local=files.local,
            inside=inside,
            shared=self.jail.user is not None,
        )

        async def on_file(name: str, chunks: AsyncIterator[bytes]) -> None:
            display = PurePosixPath(name).name
            try:
                output, notes = await files.save_output(session.user, display, chunks)
            except (FileError, StorageError) as exc:
                skipped.append(SkippedFile(display, str(exc)))
                return
            made.append(output)
            evictions.extend(notes)

        try:
            raw = await session.kernel.execute(
                code,
                files=manifest,
                checkpoint=checkpoint.order if checkpoint else None,
                time_limit=self.limits.wall_seconds,
                on_stream=on_output,
                on_file=on_file,
                on_piece=checkpoint.on_piece if checkpoint else None,
            )
        except KernelLost as lost:
            if checkpoint is not None:
                self.checkpoints.restore_failed(checkpoint)
            # This result already tells the model; the next one need not repeat it.
            await self.sessions.end(session)
            lost_what = (
                "variables come back at the next execution, as the last finished cell left"
                " them (from its checkpoint)"
                if self.checkpoints.cap
                else "variables are gone"
            )
            stopped = (
                f"Execution stopped: {lost.reason}. The session was restarted: {lost_what};"
                " files are kept."
            )
            return ExecutionResult(
                status=lost.status,
                error=ExecError(lost.status.capitalize(), lost.reason),
                files=tuple(made),
                skipped_files=tuple(skipped),
                duration=time.perf_counter() - started,
                notes=(*bounded_notes(evictions, what="files were removed"), stopped),
            ), None
        skipped += self._skipped(raw)
        notes = self._notes(raw) + bounded_notes(evictions, what="files were removed")
        if checkpoint is not None:
            notes += await checkpoint.finish(raw.checkpoint)
        error = None if raw.error is None else ExecError(**raw.error.model_dump())
        result = ExecutionResult(
            status=raw.status,
            stdout=raw.stdout,
            stderr=raw.stderr,
            error=error,
            value=raw.value,
            files=tuple(made),
            skipped_files=tuple(skipped),
            duration=raw.duration,
            notes=tuple(notes),
        )
        return result, raw.missing_module if raw.error is not None else None

    def _skipped(self, raw: Result) -> list[SkippedFile]:
        """The output files the kernel did not send, each with its reason in words."""
        if not raw.skipped:
            return []  # the common case: no sizes to put in words
        limit = format_size(self.limits.max_file_bytes)
        count = f"over the {self.limits.max_output_files} files one execution may return"
        budget = (
            f"over the {format_size(self.limits.output_files_bytes)} of files one execution"
            " may return"
        )
        reasons = {"count": count, "budget": budget, "name": "its name is too long"}
        return [
            SkippedFile(
                PurePosixPath(s.name).name[:255],
                reasons.get(s.reason) or f"{format_size(s.size)} is over the {limit} file limit",
            )
            for s in raw.skipped
        ]

    def _notes(self, raw: Result) -> list[str]:
        """What the model is told beside the kernel's own result."""
        notes = []
        if raw.more_skipped:
            notes.append(
                f"{raw.more_skipped} more files were not returned (over the"
                f" {self.limits.max_output_files} files one execution may return)."
            )
        if raw.status == "timeout" and raw.error is not None:
            notes.append(raw.error.message)
        if raw.status == "memory":
            limit = self.limits.memory_bytes // (1024 * 1024)
            notes.append(
                f"The code ran out of memory (limit {limit} MiB, a MemoryError); variables are"
                " kept."
            )
        return notes

    async def stop(self, user: str, conversation: str) -> bool:
        """Interrupt the conversation's running code (variables kept); kill it if it will not
        stop. True if something was running."""
        running = self._running.get((user, conversation))
        if running is None:
            return False
        session, done = running
        asked = time.monotonic()
        await session.kernel.interrupt()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(INTERRUPT_GRACE):
                await done.wait()
                return True
        log.warning(
            "interpreter.stop_escalated waited=%.1f alive=%s",
            time.monotonic() - asked,
            session.kernel.alive,
        )
        if session.kernel.dead is None:
            session.kernel.dead = KernelLost(
                "killed",
                f"it did not stop within {INTERRUPT_GRACE:g} s of the stop, so it was ended",
            )
        await session.kernel.kill()
        return True

    async def reset(self, user: str, conversation: str) -> bool:
        """Forget the conversation's variables, its checkpoint too (files stay). True if a
        session was live."""
        live = await self.sessions.reset(user, conversation)
        if self.files.pieces is not None:
            await self.files.pieces.delete(user, conversation)
        return live
