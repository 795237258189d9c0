"""CodeInterpreter.run(...) → ExecutionResult: the one path through which user code runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from labbot.config import Settings
from labbot.errors import FileError, StorageError
from labbot.files import FileRecord, FileStore, kind_by_name
from labbot.files.cache import BlobCache
from labbot.files.receipt import format_size
from labbot.sandbox.frames import Result
from labbot.sandbox.jail import INSIDE_FILES, Jail, SandboxLimits, memory_available
from labbot.sandbox.kernel_client import KernelLost
from labbot.sandbox.packages import Allowlist, Installer, InstallPolicy
from labbot.sandbox.pool import Session, SessionManager

log = logging.getLogger(__name__)

INTERRUPT_GRACE = 3.0
MAX_NOTES = 8  # notes of one kind kept in a result; the rest are counted
BOT_MEMORY_RESERVE = 512 * 1024 * 1024  # left to the bot itself when sizing sessions

Status = Literal["ok", "error", "timeout", "memory", "killed"]
OutputHandler = Callable[[str, str], Awaitable[None]]


@dataclass
class ExecutionResult:
    """What one execution did, for the model (``to_json``) and the front ends."""

    status: Status
    stdout: str = ""
    stderr: str = ""
    error: dict[str, str] | None = None
    value: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    duration: float = 0.0
    session_restarted: bool = False
    notes: list[str] = field(default_factory=list)
    packages_installed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The structured result the model reads; empty fields are left out."""
        return {
            k: v for k, v in asdict(self).items() if v not in (None, "", [], False) or k == "status"
        }


async def _nothing(name: str, text: str) -> None:
    return None


class SessionFiles(Protocol):
    """The files one execution sees and where the files it writes go."""

    async def records(self, user: str) -> list[FileRecord]:
        """The user's live files, shown to the code through load_file."""
        ...

    async def local(self, record: FileRecord) -> Path | None:
        """A local path with the file's bytes, or None if the file is gone."""
        ...

    async def save_output(
        self, user: str, name: str, chunks: AsyncIterator[bytes]
    ) -> tuple[dict[str, Any], list[str]]:
        """Keep a file the code wrote: its entry for ``ExecutionResult.files`` and notes.

        :raises FileError: it cannot be kept (limits). :raises StorageError: storage failed.
        """
        ...


class StoreFiles:
    """SessionFiles straight from this machine's FileStore (limits and eviction applied)."""

    def __init__(self, store: FileStore, cache: BlobCache) -> None:
        self.store = store
        self.cache = cache

    async def records(self, user: str) -> list[FileRecord]:
        """The user's live files."""
        return await self.store.list(user)

    async def local(self, record: FileRecord) -> Path | None:
        """The blob (or its cached copy)."""
        try:
            return await self.cache.path(record.user, record.id, record.sha256)
        except FileNotFoundError:
            return None  # deleted meanwhile

    async def save_output(
        self, user: str, name: str, chunks: AsyncIterator[bytes]
    ) -> tuple[dict[str, Any], list[str]]:
        """Save through the store, which may evict the oldest files."""
        saved = await self.store.save(user, name, chunks, source="generated")
        return file_entry(saved.record), eviction_notes(saved.evicted)


def file_entry(record: FileRecord) -> dict[str, Any]:
    """How a new file appears in an ExecutionResult."""
    return {"id": record.id, "name": record.name, "kind": record.kind, "size": record.size}


def eviction_notes(evicted: list[FileRecord]) -> list[str]:
    """What the model is told about files removed to make room."""
    return [
        f"To stay within the user's limits, {old.name} ({old.id}) was removed." for old in evicted
    ]


def bounded_notes(notes: list[str], *, what: str) -> list[str]:
    """At most MAX_NOTES of ``notes``, then one line counting the rest."""
    if len(notes) <= MAX_NOTES:
        return notes
    rest = len(notes) - MAX_NOTES
    return [*notes[:MAX_NOTES], f"... and {rest} more {what}."]


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
        if files is None:
            assert store is not None, "a CodeInterpreter needs a FileStore or SessionFiles"
            cache_bytes = int(settings.LABBOT_BLOB_CACHE_MAX_GB * 1024**3)
            cache = BlobCache(store.blobs, settings.blob_cache_dir, max_bytes=cache_bytes)
            files = StoreFiles(store, cache)
        self.files = files
        self.max_file_bytes = settings.max_file_bytes
        self.limits = SandboxLimits.from_settings(settings)
        capacity = session_capacity(settings)
        self.jail = jail or Jail(settings, self.limits, capacity=capacity)
        self.sessions = SessionManager(
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
        self._global = asyncio.Semaphore(settings.MAX_CONCURRENT_EXECUTIONS)
        self._per_user: dict[str, asyncio.Semaphore] = {}
        self._running: dict[tuple[str, str], tuple[Session, asyncio.Event]] = {}

    async def start(self) -> None:
        """Start the session manager (warm pool, idle reaper)."""
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

        :raises SandboxUnavailable: the sandbox cannot start on this machine.
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

    async def _run(
        self, session: Session, code: str, on_output: OutputHandler, files: SessionFiles
    ) -> ExecutionResult:
        restarted = session.restarted
        self.sessions.forget_loss(session)
        async with self._global:
            result = await self._execute(session, code, on_output, files)
        missing = result.error and result.error.get("missing_module")
        if missing and result.status == "error" and self.settings.SANDBOX_AUTO_INSTALL:
            # The install waits apart from the execution slots (other users' cells go on).
            package, note = await self.installs.decide(session.user, missing)
            if note:
                result.notes.append(note)
            if package is not None and session.kernel.alive:
                async with self._global:
                    retried = await self._execute(session, code, on_output, files)
                retried.packages_installed = [package.requirement]
                retried.files = result.files + retried.files
                result = retried
        if result.error:
            result.error.pop("missing_module", None)
        if restarted:
            result.session_restarted = True
            result.notes.insert(
                0,
                f"The session was restarted because {restarted}: variables"
                " from earlier executions are gone; files are kept.",
            )
        return result

    async def _execute(
        self, session: Session, code: str, on_output: OutputHandler, files: SessionFiles
    ) -> ExecutionResult:
        records = await files.records(session.user)
        local = {r.id: await files.local(r) for r in records}
        records = [r for r in records if local[r.id] is not None]
        manifest = await asyncio.to_thread(self._link_files, session, records, local)
        result = ExecutionResult(status="ok")
        evictions: list[str] = []
        started = time.perf_counter()

        async def on_file(name: str, chunks: AsyncIterator[bytes]) -> None:
            display = PurePosixPath(name).name
            try:
                entry, notes = await files.save_output(session.user, display, chunks)
            except (FileError, StorageError) as exc:
                result.skipped_files.append({"name": display, "reason": str(exc)})
                return
            result.files.append(entry)
            evictions.extend(notes)

        limits = self.limits
        request_limits = {
            "cpu_seconds": limits.cpu_seconds,
            "output_head": limits.output_head,
            "output_tail": limits.output_tail,
            "max_file_bytes": limits.max_file_bytes,
            "max_output_files": limits.max_output_files,
            "output_files_bytes": limits.output_files_bytes,
        }
        try:
            raw = await session.kernel.execute(
                code,
                files=manifest,
                limits=request_limits,
                time_limit=limits.wall_seconds,
                on_stream=on_output,
                on_file=on_file,
            )
        except KernelLost as lost:
            # This result already tells the model; the next one need not repeat it.
            await self.sessions.reset(session.user, session.conversation)
            result.status = lost.status  # type: ignore[assignment]
            result.error = {"name": lost.status.capitalize(), "message": lost.reason}
            result.notes.extend(bounded_notes(evictions, what="files were removed"))
            result.notes.append(
                f"Execution stopped: {lost.reason}. The session was restarted:"
                " variables are gone; files are kept."
            )
            result.duration = time.perf_counter() - started
            return result
        self._take_result(result, raw)
        result.notes.extend(bounded_notes(evictions, what="files were removed"))
        return result

    def _take_result(self, result: ExecutionResult, raw: Result) -> None:
        """Copy the kernel's validated result into ``result``."""
        limit = format_size(self.max_file_bytes)
        reasons = {
            "size": lambda size: f"{format_size(size)} is over the {limit} file limit",
            "count": lambda size: (
                f"over the {self.limits.max_output_files} files one execution may return"
            ),
            "budget": lambda size: (
                f"over the {format_size(self.limits.output_files_bytes)} of files one"
                " execution may return"
            ),
            "name": lambda size: "its name is too long",
        }
        for skipped in raw.skipped:
            result.skipped_files.append(
                {
                    "name": PurePosixPath(skipped.name).name[:255],
                    "reason": reasons[skipped.reason](skipped.size),
                }
            )
        if raw.more_skipped:
            result.notes.append(
                f"{raw.more_skipped} more files were not returned (over the"
                f" {self.limits.max_output_files} files one execution may return)."
            )
        result.status = raw.status
        result.stdout, result.stderr = raw.stdout, raw.stderr
        result.value, result.duration = raw.value, raw.duration
        if raw.error is not None:
            result.error = {**raw.error.model_dump(), "missing_module": raw.missing_module}
        if result.status == "timeout" and raw.error is not None:
            result.notes.append(raw.error.message)
        if result.status == "memory":
            limit = self.limits.memory_bytes // (1024 * 1024)
            result.notes.append(
                f"The code ran out of memory (limit {limit} MiB, a MemoryError); variables are"
                " kept."
            )

    def _link_files(
        self, session: Session, records: list[FileRecord], local: dict[str, Path | None]
    ) -> dict[str, dict]:
        """Make exactly the user's live files visible in the session's read-only folder."""
        folder = session.kernel.files_dir
        wanted = {r.id: r for r in records}
        present = set(os.listdir(folder))
        for stale in present - wanted.keys():
            (folder / stale).unlink(missing_ok=True)
        for file_id in wanted.keys() - present:
            source, target = local[file_id], folder / file_id
            assert source is not None
            try:
                os.link(source, target)
            except FileNotFoundError:
                continue  # deleted meanwhile
            except OSError:
                shutil.copyfile(source, target)  # another filesystem: copy instead
            if self.jail.user is not None and not target.stat().st_mode & 0o004:
                # The sandbox user reads it; the data dir (0700) keeps everyone else out.
                target.chmod(0o644)
        inside = Path(INSIDE_FILES) if self.jail.enabled else folder
        return {
            r.id: {
                "name": r.name,
                "kind": r.kind,
                "loader": kind_by_name(r.kind).loader,
                "size": r.size,
                "path": str(inside / r.id),
            }
            for r in records
        }

    async def stop(self, user: str, conversation: str) -> bool:
        """Interrupt the conversation's running code (variables kept); kill it if it will not
        stop. True if something was running."""
        running = self._running.get((user, conversation))
        if running is None:
            return False
        session, done = running
        await session.kernel.interrupt()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(INTERRUPT_GRACE):
                await done.wait()
                return True
        await session.kernel.kill()
        return True

    async def reset(self, user: str, conversation: str) -> bool:
        """Forget the conversation's variables (files stay). True if a session was live."""
        return await self.sessions.reset(user, conversation)
