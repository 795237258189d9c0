"""An in-memory Executor for tests: code runs in this process, in a worker thread, with the
sandbox kernel's own cell logic (values, errors, tracebacks, load_file, list_files), and no
sandbox at all. A TEST fake: it isolates nothing, so it never goes near real users.

    executor = InMemoryExecutor(settings, store)
    await executor.start()
    result = await executor.run("42", "thread-1", "x = 6 * 7\\nx")   # result.value == "42"

Each (user, conversation) has a namespace that lasts until ``reset``, and a folder of its own
where ``open()`` puts relative paths (the only thing the working directory means here; files
it opened are closed when the cell ends): files written there come back as OutputFile, saved
through the FileStore under the user's limits.
``stop`` raises KeyboardInterrupt in the running cell (it lands at the next bytecode, so a
long blocking call ends first); a cell past CODE_EXECUTION_TIMEOUT ends as "timeout" and the
session starts afresh, as with the real sandbox. It passes tests/remote/test_executor_contract.py.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import importlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import labbot
from labbot.config import Settings
from labbot.core import ExecError, ExecutionResult, OutputFile, SkippedFile
from labbot.errors import FileError, StorageError
from labbot.files import FileStore
from labbot.files.cache import BlobCache
from labbot.sandbox import OutputHandler
from labbot.sandbox.files import StoreFiles, bounded_notes, link_files
from labbot.sandbox.runtime.protocol import FileEntry

RUNTIME = Path(labbot.__file__).parent / "sandbox" / "runtime"
STOP_GRACE = 3.0  # seconds a stopped cell has to end before its session is given up
_output = threading.local()  # the session output of the thread running a cell


def sandbox_kernel() -> Any:
    """The sandbox's kernel module (its loaders and protocol beside it), imported by name as
    the sandbox imports them."""
    if str(RUNTIME) not in sys.path:
        sys.path.append(str(RUNTIME))
    return importlib.import_module("kernel")


class _Routed:
    """sys.stdout or sys.stderr: a cell's thread writes to its cell, the rest to the stream
    that was there before."""

    def __init__(self, name: str, fallback: Any) -> None:
        self.name = name
        self.fallback = fallback

    def write(self, text: str) -> int:
        emit = getattr(_output, "emit", None)
        if emit is None:
            return self.fallback.write(text)
        emit(self.name, text)
        return len(text)

    def flush(self) -> None:
        if getattr(_output, "emit", None) is None:
            self.fallback.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fallback, name)


def _route_output() -> None:
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), _Routed):
            setattr(sys, name, _Routed(name, getattr(sys, name)))


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in the thread at its next bytecode (None: cancel a pending one)."""
    exc = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


class _WallTimeLimit(BaseException):
    """Raised in a cell that ran past CODE_EXECUTION_TIMEOUT."""


@dataclass
class _Session:
    kernel: Any  # a sandbox_kernel().Kernel without its channel: namespace, files, cell logic
    folder: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    guard: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    thread_id: int = 0
    state: str = "idle"  # "starting" (a thread is on its way), "running" (in user code)
    pending: type[BaseException] | None = None  # an interrupt that came while starting
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: asyncio.Queue[tuple[Any, ...]] | None = None

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Interrupt the cell once (one still starting never runs); False when none runs."""
        with self.guard:
            if self.state == "starting":
                self.pending, self.state = exc_type, "idle"
                return True
            if self.state != "running":
                return False
            self.state = "idle"
            _raise_in(self.thread_id, exc_type)
            return True

    def arm(self) -> type[BaseException] | None:
        """The cell's thread enters user code; or the interrupt that came before it did."""
        with self.guard:
            pending, self.pending = self.pending, None
            if pending is None:
                self.thread_id, self.state = threading.get_ident(), "running"
            return pending

    def disarm(self) -> None:
        """The cell left user code: no interrupt may land after this."""
        with self.guard:
            self.state = "idle"
            _raise_in(self.thread_id, None)


class InMemoryExecutor:
    """The Executor protocol, in this process (see the module's docstring)."""

    def __init__(self, settings: Settings, store: FileStore) -> None:
        cache_bytes = int(settings.LABBOT_BLOB_CACHE_MAX_GB * 1024**3)
        cache = BlobCache(store.blobs, settings.blob_cache_dir, max_bytes=cache_bytes)
        self.files = StoreFiles(store, cache)
        self.time_limit = settings.CODE_EXECUTION_TIMEOUT
        self.data_dir = settings.LABBOT_DATA_DIR
        self.root: Path | None = None
        self.sessions: dict[tuple[str, str], _Session] = {}
        self.stop_grace = STOP_GRACE

    async def start(self) -> None:
        """Make the folder the sessions live in."""
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        self.root = Path(await asyncio.to_thread(tempfile.mkdtemp, "-sessions", "", self.data_dir))

    async def close(self) -> None:
        """Interrupt every running cell and forget every session."""
        for key in list(self.sessions):
            self._drop(key)
        if self.root is not None:
            await asyncio.to_thread(shutil.rmtree, self.root, True)

    async def run(
        self, user: str, conversation: str, code: str, *, on_output: OutputHandler | None = None
    ) -> ExecutionResult:
        """Run ``code`` in the conversation's namespace; failures of the code are results."""
        session = self._session(user, conversation)
        async with session.lock:
            if self.sessions.get((user, conversation)) is not session:  # reset meanwhile
                return await self.run(user, conversation, code, on_output=on_output)
            return await self._run(user, conversation, session, code, on_output)

    async def stop(self, user: str, conversation: str) -> bool:
        """Interrupt the running cell (variables kept); give the session up if it will not
        stop. True if something was running."""
        session = self.sessions.get((user, conversation))
        if session is None or not session.interrupt(KeyboardInterrupt):
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_grace):
                await session.finished.wait()
                return True
        self._drop((user, conversation), status="killed")
        return True

    async def reset(self, user: str, conversation: str) -> bool:
        """Forget the conversation's variables (files stay); True if a session was live."""
        return self._drop((user, conversation), status="killed")

    # -- sessions ------------------------------------------------------------------------------

    def _session(self, user: str, conversation: str) -> _Session:
        key = (user, conversation)
        if key not in self.sessions:
            assert self.root is not None, "start() the InMemoryExecutor first"
            folder = Path(tempfile.mkdtemp(dir=self.root))
            for part in ("files", "out"):
                (folder / part).mkdir()
            self.sessions[key] = _Session(self._kernel(folder / "out"), folder)
        return self.sessions[key]

    def _kernel(self, out: Path) -> Any:
        kernel = object.__new__(sandbox_kernel().Kernel)  # no channel: only its cell logic
        kernel.cell, kernel.files, kernel._missing_module = 0, {}, None
        kernel.opened = []  # closed when the cell ends, as the kernel's process would

        def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str | Path) and not Path(file).is_absolute():
                file = out / file
            handle = builtins.open(file, *args, **kwargs)
            kernel.opened.append(handle)
            return handle

        kernel.namespace = {"__name__": "__main__", "__builtins__": builtins, "open": opener}
        kernel.namespace.update(load_file=kernel.load_file, list_files=kernel.list_files)
        return kernel

    def _drop(self, key: tuple[str, str], status: str = "killed") -> bool:
        """Forget a session; a cell still running is interrupted and its run ends now."""
        session = self.sessions.pop(key, None)
        if session is None:
            return False
        session.interrupt(_WallTimeLimit)
        if session.outcome is not None and not session.finished.is_set():
            reason = "the session was ended while the code ran"
            session.outcome.put_nowait(("lost", status, reason))
        return True

    # -- one cell ------------------------------------------------------------------------------

    async def _run(
        self,
        user: str,
        conversation: str,
        session: _Session,
        code: str,
        on_output: OutputHandler | None,
    ) -> ExecutionResult:
        kernel = session.kernel
        kernel.files = await self._manifest(user, conversation, session.folder / "files")
        kernel.namespace["FILES"] = {i: f["path"] for i, f in kernel.files.items()}
        kernel.cell += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        session.outcome, session.finished = queue, asyncio.Event()

        def post(*item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(queue.put_nowait, item)

        _route_output()
        started = time.perf_counter()
        thread = threading.Thread(
            target=_cell, args=(session, code, post), daemon=True, name=f"cell-{user}"
        )
        with session.guard:
            session.state, session.pending = "starting", None
        thread.start()
        try:
            async with asyncio.timeout(self.time_limit):
                while (item := await queue.get())[0] == "output":
                    if on_output is not None:
                        await on_output(item[1], item[2])
        except TimeoutError:
            self._drop((user, conversation), status="timeout")
            limit = f"the code ran longer than the {self.time_limit:g} s time limit and was stopped"
            item = ("lost", "timeout", limit)
        except asyncio.CancelledError:
            self._drop((user, conversation))
            raise
        finally:
            session.finished.set()
        duration = time.perf_counter() - started
        if item[0] == "lost":
            _, status, reason = item
            notes = (
                f"Execution stopped: {reason}. The session was restarted: variables are gone;"
                " files are kept.",
            )
            error = ExecError(status.capitalize(), reason)
            return ExecutionResult(status=status, error=error, duration=duration, notes=notes)
        _, status, error, value, stdout, stderr = item
        made, skipped, evicted = await self._outputs(user, session)
        return ExecutionResult(
            status=status,
            stdout=stdout,
            stderr=stderr,
            error=None if error is None else ExecError(**error),
            value=value,
            files=tuple(made),
            skipped_files=tuple(skipped),
            duration=duration,
            notes=tuple(bounded_notes(evicted, what="files were removed")),
        )

    async def _manifest(self, user: str, conversation: str, folder: Path) -> dict[str, FileEntry]:
        """The user's files linked into the session's folder, as the kernel's manifest."""
        refs = (await self.files.look(user, conversation)).refs
        local = {ref.id: await self.files.local(user, ref) for ref in refs}
        present = {key: path for key, path in local.items() if path is not None}
        refs = [ref for ref in refs if ref.id in present]
        return await asyncio.to_thread(
            link_files, folder, refs, present, inside=folder, shared=False
        )

    async def _outputs(
        self, user: str, session: _Session
    ) -> tuple[list[OutputFile], list[SkippedFile], list[str]]:
        """Save every new or changed file of the session's folder through the store."""
        out = session.folder / "out"
        made, skipped, evicted = [], [], []
        walked = await asyncio.to_thread(session.kernel._walk, str(out), "", 0)
        for rel, st in sorted(walked):
            key = (st.st_size, st.st_mtime_ns, st.st_ino)
            if session.sent.get(rel) == key:
                continue
            session.sent[rel] = key
            name = PurePosixPath(rel).name
            try:
                output, notes = await self.files.save_output(user, name, _chunks(out / rel))
            except (FileError, StorageError) as exc:
                skipped.append(SkippedFile(name, str(exc)))
                continue
            made.append(output)
            evicted.extend(notes)
        return made, skipped, evicted


def _cell(session: _Session, code: str, post: Callable[..., None]) -> None:
    """A worker thread: run one cell with the kernel's logic, its output posted live."""
    stdout: list[str] = []
    stderr: list[str] = []

    def emit(name: str, text: str) -> None:
        (stdout if name == "stdout" else stderr).append(text)
        post("output", name, text)

    _output.emit = emit
    kernel = session.kernel
    pending = session.arm()
    try:
        try:
            if pending is not None:
                raise pending
            value = kernel._run(code, f"<cell {kernel.cell}>")
            status, error, shown = "ok", None, kernel._render(value)
        except BaseException as exc:  # noqa: BLE001 - everything the code raises is reported
            status, error, shown = "error", kernel._error(exc), None
        session.disarm()
    except BaseException as late:  # noqa: BLE001 - an interrupt that landed as the cell ended
        session.disarm()
        status, error, shown = "error", kernel._error(late), None
    finally:
        _output.emit = None
        for handle in kernel.opened:
            with contextlib.suppress(Exception):
                handle.close()
        kernel.opened.clear()
    post("done", status, error, shown, "".join(stdout), "".join(stderr))


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    data = await asyncio.to_thread(path.read_bytes)
    yield data
