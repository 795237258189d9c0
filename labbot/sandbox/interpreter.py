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
from labbot.sandbox.jail import INSIDE_FILES, Jail, SandboxLimits
from labbot.sandbox.packages import Allowlist, Installer
from labbot.sandbox.session import INTERRUPT_GRACE, KernelLost, Session, SessionManager

log = logging.getLogger(__name__)

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
        self.jail = jail or Jail(settings, self.limits)
        self.sessions = SessionManager(
            self.jail,
            idle_seconds=settings.SESSION_IDLE_MINUTES * 60,
            max_sessions=settings.MAX_SESSIONS,
            pool_size=settings.SANDBOX_WARM_POOL,
        )
        self.allowlist = Allowlist(extra=settings.PACKAGE_ALLOWLIST)
        self.installer = Installer(
            settings.LABBOT_RUNTIME_DIR, timeout=settings.PACKAGE_INSTALL_TIMEOUT
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
            async with self._global, session.lock:
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

    async def _run(
        self, session: Session, code: str, on_output: OutputHandler, files: SessionFiles
    ) -> ExecutionResult:
        restarted = session.restarted
        self.sessions.forget_loss(session)
        result = await self._execute(session, code, on_output, files)
        missing = result.error and result.error.get("missing_module")
        if missing and result.status == "error" and self.settings.SANDBOX_AUTO_INSTALL:
            package = self.allowlist.resolve(missing)
            if package is None:
                result.notes.append(
                    f"Module {missing!r} is not installed and not on the allow-list; allowed"
                    f" packages install themselves on import: {', '.join(self.allowlist.names())}."
                )
            else:
                ok, why = await self.installer.install(package)
                if ok and session.kernel.alive:
                    retried = await self._execute(session, code, on_output, files)
                    retried.packages_installed = [package.requirement]
                    retried.files = result.files + retried.files
                    result = retried
                elif not ok:
                    result.notes.append(f"Installing {package.requirement} failed: {why}")
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
        started = time.perf_counter()

        async def on_file(name: str, chunks: AsyncIterator[bytes]) -> None:
            display = PurePosixPath(name).name
            try:
                entry, notes = await files.save_output(session.user, display, chunks)
            except (FileError, StorageError) as exc:
                result.skipped_files.append({"name": display, "reason": str(exc)})
                return
            result.files.append(entry)
            result.notes.extend(notes)

        head = self.limits.output_bytes * 3 // 4
        limits = {
            "cpu_seconds": self.limits.cpu_seconds,
            "output_head": head,
            "output_tail": self.limits.output_bytes - head,
            "max_file_bytes": self.max_file_bytes,
        }
        try:
            raw = await session.kernel.execute(
                code,
                files=manifest,
                limits=limits,
                time_limit=self.limits.wall_seconds,
                on_stream=on_output,
                on_file=on_file,
            )
        except KernelLost as lost:
            # This result already tells the model; the next one need not repeat it.
            await self.sessions.reset(session.user, session.conversation)
            result.status = lost.status  # type: ignore[assignment]
            result.error = {"name": lost.status.capitalize(), "message": lost.reason}
            result.notes.append(
                f"Execution stopped: {lost.reason}. The session was restarted:"
                " variables are gone; files are kept."
            )
            result.duration = time.perf_counter() - started
            return result
        limit = format_size(self.max_file_bytes)
        for skipped in raw.get("skipped", []):
            result.skipped_files.append(
                {
                    "name": PurePosixPath(skipped["name"]).name,
                    "reason": f"{format_size(skipped['size'])} is over the {limit} file limit",
                }
            )
        result.status = raw["status"]
        result.stdout, result.stderr = raw["stdout"], raw["stderr"]
        result.value, result.duration = raw.get("value"), raw.get("duration", 0.0)
        if raw.get("error"):
            result.error = {**raw["error"], "missing_module": raw.get("missing_module")}
        if result.status == "timeout":
            result.notes.append(raw["error"]["message"])
        if result.status == "memory":
            result.notes.append("The code ran out of memory (a MemoryError); variables are kept.")
        return result

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
