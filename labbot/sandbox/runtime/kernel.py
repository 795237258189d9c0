"""The interpreter that runs inside the sandbox: one per conversation, state kept between cells.

The host speaks to it over fds 0 and 1 (frames from ``protocol``); user code never sees them:
its stdin is /dev/null and its stdout and stderr are pipes read by a thread here, which keeps
the head and tail of each stream and forwards the output live. Standard library and the data
stack only; never imports labbot.
"""

from __future__ import annotations

import ast
import io
import json
import linecache
import logging
import os
import queue
import re
import resource
import selectors
import signal
import stat
import sys
import threading
import time
from typing import Any

import console_help
import preload
import protocol
from checkpoint import Checkpoints
from pyplot_hook import PyplotHook

OUTPUT_DIR = os.environ.get("LABBOT_OUTPUT_DIR", "/mnt/data")
MAX_VALUE_CHARS = 6000
MAX_TRACEBACK_CHARS = 20000
MAX_WALK_DEPTH = 8
MAX_NAME_CHARS = 1000
MAX_ERROR_NAME = 200
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


class LimitExceeded(BaseException):
    """A limit hit in user code; a BaseException so `except Exception` cannot eat it."""


class Channel:
    """The frame writer back to the host; shared by the main and the stream threads."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, message: dict, *chunks: bytes) -> None:
        data = protocol.encode_json(message) + b"".join(protocol.encode_bytes(c) for c in chunks)
        with self.lock:
            protocol.write_all(self.fd, data)

    def send_file(self, name: str, read: Any, size: int) -> None:
        """Send a file as a header, at most ``size`` bytes in chunks (it may still be growing),
        and an end marker, atomically."""
        with self.lock:
            protocol.write_all(
                self.fd, protocol.encode_json({"type": "file", "name": name, "size": size})
            )
            left = size
            while left > 0 and (chunk := read(min(protocol.CHUNK, left))):
                protocol.write_all(self.fd, protocol.encode_bytes(chunk))
                left -= len(chunk)
            protocol.write_all(self.fd, protocol.encode_json({"type": "file_end"}))


class Outputs:
    """The files one cell returns, within the count, size and byte limits the host also
    enforces; the rest are listed as skipped."""

    def __init__(self, channel: Channel, limits: protocol.CellLimits) -> None:
        self.channel = channel
        self.max_files = limits.max_output_files
        self.max_file_bytes = limits.max_file_bytes
        self.budget = limits.output_files_bytes
        self.sent: list[str] = []
        self.used = 0
        self.skipped: list[dict] = []
        self.more_skipped = 0

    def refusal(self, name: str, size: int) -> str | None:
        """Why a file of this name and size cannot be sent, or None."""
        if len(name) > MAX_NAME_CHARS:
            return "name"
        if size > self.max_file_bytes:
            return "size"
        if len(self.sent) >= self.max_files:
            return "count"
        if self.used + size > self.budget:
            return "budget"
        return None

    def send(self, name: str, read: Any, size: int) -> bool:
        """Send one file, or list it as skipped; True if sent."""
        reason = self.refusal(name, size)
        if reason is not None:
            if len(self.skipped) < self.max_files:
                self.skipped.append({"name": name[:MAX_NAME_CHARS], "size": size, "reason": reason})
            else:
                self.more_skipped += 1
            return False
        self.channel.send_file(name, read, size)
        self.sent.append(name)
        self.used += size
        return True


class Capture:
    """The head and tail of one stream during one execution; the middle is counted, not kept."""

    def __init__(self, head: int, tail: int) -> None:
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> bytes:
        """Keep ``data``; return the part that still fits in the head (to stream live)."""
        self.total += len(data)
        room = self.head_limit - len(self.head)
        live = data[: max(room, 0)]
        self.head += live
        rest = data[len(live) :]
        if rest:
            self.tail += rest
            del self.tail[: max(len(self.tail) - self.tail_limit, 0)]
        return live

    def text(self) -> str:
        omitted = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {omitted} bytes of output omitted ...]\n" if omitted > 0 else ""
        return (
            bytes(self.head).decode(errors="replace")
            + middle
            + bytes(self.tail).decode(errors="replace")
        )


class Streams:
    """Reads the user's stdout and stderr pipes on a thread, forwarding output live."""

    def __init__(self, channel: Channel, fds: dict[str, int]) -> None:
        self.channel = channel
        self.fds = fds
        self.captures: dict[str, Capture] = {}
        self.cell = 0
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        self.drained = threading.Event()
        for fd in (*fds.values(), self.wake_r):
            os.set_blocking(fd, False)
        threading.Thread(target=self._run, daemon=True, name="streams").start()

    def begin(self, cell: int, head: int, tail: int) -> None:
        with self.lock:
            self.cell = cell
            self.captures = {name: Capture(head, tail) for name in self.fds}

    def finish(self) -> dict[str, Capture]:
        """Wait until everything written so far has been read, then hand over the captures."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.drained.clear()
        os.write(self.wake_w, b"x")
        self.drained.wait(5)
        with self.lock:
            return self.captures

    def _pump(self, name: str, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            with self.lock:
                capture = self.captures.get(name)
                live = capture.add(data) if capture else b""
                cell = self.cell
            if live:
                self.channel.send(
                    {
                        "type": "stream",
                        "cell": cell,
                        "name": name,
                        "text": live.decode(errors="replace"),
                    }
                )

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for name, fd in self.fds.items():
            selector.register(fd, selectors.EVENT_READ, name)
        selector.register(self.wake_r, selectors.EVENT_READ, None)
        while True:
            for key, _ in selector.select():
                if key.data is None:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                    for name, fd in self.fds.items():
                        self._pump(name, fd)
                    self.drained.set()
                else:
                    self._pump(key.data, key.fd)


class Kernel:
    """Executes cells in one persistent namespace and reports structured results."""

    def __init__(self, channel: Channel, streams: Streams) -> None:
        self.channel = channel
        self.streams = streams
        self.cell = 0
        self.figures = 0
        self.files: dict[str, protocol.FileEntry] = {}
        self.sent: dict[str, tuple[int, int, int]] = {}
        self._missing_module: str | None = None
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.namespace.update(load_file=self.load_file, list_files=self.list_files, FILES={})
        self.checkpoints = Checkpoints(channel, self.namespace, list(self.namespace))

    # The user's files -------------------------------------------------------------------
    def _lookup(self, key: str) -> dict:
        if key in self.files:
            return self.files[key]
        named = [f for f in self.files.values() if f["name"] == key]
        if not named:
            named = [f for f in self.files.values() if f["name"].lower() == str(key).lower()]
        if named:
            return named[0]  # the host lists the user's files newest first: a re-upload wins
        known = ", ".join(f"{i} ({f['name']})" for i, f in self.files.items()) or "none"
        raise FileNotFoundError(f"No file {key!r}. The user's files: {known}.")

    def load_file(self, file_id: str, **options: Any) -> Any:
        """Load one of the user's files by id (or name) as its natural Python object."""
        import loaders

        info = self._lookup(file_id)
        return loaders.load(info["path"], loader=info["loader"], name=info["name"], **options)

    def list_files(self) -> list[dict]:
        """The user's files: id, name, kind, size and path."""
        return [
            {"id": i, **{k: f[k] for k in ("name", "kind", "size", "path")}}
            for i, f in self.files.items()
        ]

    # Execution --------------------------------------------------------------------------
    def execute(self, request: protocol.ExecuteRequest) -> None:
        self.cell += 1
        self.files = request.files
        self.namespace["FILES"] = {i: f["path"] for i, f in self.files.items()}
        limits = request.limits
        self.streams.begin(request.cell, limits.output_head, limits.output_tail)
        import importlib

        importlib.invalidate_caches()  # packages installed since the last cell become visible
        self._set_cpu_limit(limits.cpu_seconds)
        started = time.perf_counter()
        status, error, value, shown = "ok", None, None, None
        try:
            self.checkpoints.restore(request.checkpoint)  # a fresh session's first cell
            value = self._run(request.code, f"<cell {self.cell}>")
            shown = self._render(value)  # __repr__ is user code: inside the limits too
        except LimitExceeded as exc:
            status, error = (
                "timeout",
                {"name": "LimitExceeded", "message": str(exc), "traceback": ""},
            )
        except MemoryError as exc:
            status, error = "memory", self._error(exc)
        except BaseException as exc:  # noqa: BLE001 - everything the code raises is reported
            status, error = "error", self._error(exc)
        finally:
            self._set_cpu_limit(None)
        duration = time.perf_counter() - started
        _stop_strays()
        captures = self.streams.finish()
        outputs = Outputs(self.channel, limits)
        try:  # a figure that cannot render is the code's error, not the end of the session
            self._send_figures(value, outputs)
        except Exception as exc:  # noqa: BLE001
            if status == "ok":
                status, error = "error", self._error(exc)
            _close_figures()
        self._send_outputs(outputs)
        saved = self.checkpoints.save(request.checkpoint, request.code, outputs)
        self.channel.send(
            {
                "type": "result",
                "cell": request.cell,
                "status": status,
                "error": error,
                "value": shown,
                "stdout": captures["stdout"].text(),
                "stderr": captures["stderr"].text(),
                "duration": duration,
                "files": outputs.sent,
                "skipped": outputs.skipped,
                "more_skipped": outputs.more_skipped,
                "missing_module": self._missing_module,
                "checkpoint": saved,
            }
        )

    def _run(self, code: str, filename: str) -> Any:
        self._missing_module = None
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename)
        shown = not code.rstrip().endswith(";")  # as in notebooks, a final ';' hides the value
        last = (
            tree.body.pop() if shown and tree.body and isinstance(tree.body[-1], ast.Expr) else None
        )
        exec(compile(tree, filename, "exec"), self.namespace)
        if last is not None:
            return eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
        return None

    def _error(self, exc: BaseException) -> dict:
        if isinstance(exc, ModuleNotFoundError) and isinstance(exc.name, str):
            top = exc.name.split(".")[0]
            self._missing_module = top if MODULE_NAME.fullmatch(top) else None
        text = console_help.format_error(exc)  # without the kernel's frames
        if len(text) > MAX_TRACEBACK_CHARS:  # keep the end: that is where the error is
            text = "[... traceback cut ...]\n" + text[-MAX_TRACEBACK_CHARS:]
        try:
            message = str(exc)
        except BaseException as broken:  # noqa: BLE001 - a broken __str__ is the code's too
            message = f"<{type(exc).__name__}: str() failed: {type(broken).__name__}>"
        return {
            "name": str(type(exc).__name__)[:MAX_ERROR_NAME],
            "message": message[:MAX_VALUE_CHARS],
            "traceback": text,
        }

    def _set_cpu_limit(self, seconds: float | None) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if seconds is None:
            resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        want = int(usage.ru_utime + usage.ru_stime + seconds) + 1
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (want, hard))

    def _render(self, value: Any) -> str | None:
        """The value's repr, cut to size. A repr raising an Exception is shown as such; one
        raising SystemExit or KeyboardInterrupt is the cell's error."""
        if value is None:
            return None
        try:
            if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
                text = repr(value.item())  # 3, not np.int64(3)
            elif type(value).__module__.startswith("pandas"):
                import pandas as pd

                with pd.option_context("display.max_rows", 30, *console_help.pandas_display()):
                    text = repr(value)
            else:
                text = repr(value)
            if not isinstance(text, str):
                raise TypeError(f"__repr__ returned {type(text).__name__}")
        except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not lose the result
            text = f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
        if len(text) > MAX_VALUE_CHARS:
            text = text[:MAX_VALUE_CHARS] + f"\n[... {len(text) - MAX_VALUE_CHARS} chars cut]"
        return text

    # Rich outputs -----------------------------------------------------------------------
    def _send_figures(self, value: Any, outputs: Outputs) -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            for num in pyplot.get_fignums():
                figure = pyplot.figure(num)
                if not getattr(figure, "_labbot_saved", False) and figure.axes:
                    buffer = io.BytesIO()
                    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
                    self._send_memory_file("png", buffer.getvalue(), outputs)
            pyplot.close("all")
        image = sys.modules.get("PIL.Image")
        if image is not None and isinstance(value, image.Image):
            buffer = io.BytesIO()
            value.save(buffer, format="PNG")
            self._send_memory_file("png", buffer.getvalue(), outputs)

    def _send_memory_file(self, ext: str, data: bytes, outputs: Outputs) -> None:
        self.figures += 1
        outputs.send(f"figure-{self.figures}.{ext}", io.BytesIO(data).read, len(data))

    def _send_outputs(self, outputs: Outputs) -> None:
        """Send every new or changed regular file in the output folder; never follow a link,
        never open a FIFO or device."""
        for rel, st in sorted(self._walk(OUTPUT_DIR, "", 0)):
            key = (st.st_size, st.st_mtime_ns, st.st_ino)
            if self.sent.get(rel) == key:
                continue
            self.sent[rel] = key
            shown = rel.encode("utf-8", "replace").decode()  # undecodable names stay sendable
            if outputs.refusal(shown, st.st_size) is not None:
                outputs.send(shown, None, st.st_size)  # listed as skipped
                continue
            try:
                fd = os.open(
                    os.path.join(OUTPUT_DIR, rel),
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                )
            except OSError:
                continue
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                outputs.send(shown, handle.read, st.st_size)

    def _walk(self, root: str, prefix: str, depth: int) -> list[tuple[str, os.stat_result]]:
        found: list[tuple[str, os.stat_result]] = []
        try:
            entries = list(os.scandir(os.path.join(root, prefix) if prefix else root))
        except OSError:
            return found
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # removed meanwhile
                continue
            if stat.S_ISDIR(st.st_mode) and depth < MAX_WALK_DEPTH:
                found += self._walk(root, rel, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                found.append((rel, st))
        return found


def _close_figures() -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        try:
            pyplot.close("all")
        except Exception:  # noqa: BLE001, S110 - nothing more to do for a broken figure
            pass


def _stop_strays() -> None:
    """End every process the cell left behind (daemons, runaway children): a cell's processes
    end with it. The kernel is the sandbox's init (pid 1), so every orphan is its child: it
    reaps them all. Only inside the sandbox's own PID namespace: without the sandbox
    (development) /proc is the whole machine's."""
    if os.environ.get("LABBOT_IN_SANDBOX") != "1":
        return
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                continue
    while True:  # the killed, and any zombie left before
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _cpu_limit(signum: int, frame: Any) -> None:
    raise LimitExceeded("CPU time limit reached: the code used all the CPU time it is allowed.")


def main() -> None:
    proto_in, proto_out = os.dup(0), os.dup(1)  # non-inheritable: child processes never get them
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    pipes = {"stdout": os.pipe(), "stderr": os.pipe()}
    os.dup2(pipes["stdout"][1], 1)
    os.dup2(pipes["stderr"][1], 2)
    for _, write_end in pipes.values():
        os.close(write_end)
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), line_buffering=True, errors="backslashreplace"
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace"
    )
    signal.signal(signal.SIGXCPU, _cpu_limit)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead
    # A stop is a SIGINT: take it even if the bot's was ignored (a background job's is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    channel = Channel(proto_out)
    seed = os.environ.get("MPLCONFIGDIR")
    if seed and not os.access(seed, os.W_OK):
        # The prebuilt font cache lives in the read-only runtime; matplotlib wants it writable.
        import shutil
        import tempfile

        target = os.path.join(tempfile.gettempdir(), "matplotlib")
        shutil.copytree(seed, target, dirs_exist_ok=True)
        os.environ["MPLCONFIGDIR"] = target
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    os.chdir(OUTPUT_DIR)
    started = time.perf_counter()
    # A missing fallback font is not the user's problem: keep it out of their stderr.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    sys.meta_path.insert(0, PyplotHook())
    preload.preload(
        imports=os.environ.get("LABBOT_PRELOAD", "1") == "1",
        share=os.environ.get("LABBOT_SHARE_MEMORY") == "1",
    )
    # The output thread starts after the preload: its first allocations would otherwise land
    # among the preloaded objects at a varying moment, and sessions' pages would differ.
    streams = Streams(channel, {name: fds[0] for name, fds in pipes.items()})
    kernel = Kernel(channel, streams)
    requests: queue.Queue[dict | None] = queue.Queue()
    main_thread = threading.main_thread().ident

    def listen() -> None:
        while True:
            try:
                _, payload = protocol.read_frame(proto_in)
            except (EOFError, OSError, ValueError):
                requests.put(None)
                return
            message = json.loads(payload)
            if message["type"] == "interrupt":
                signal.pthread_kill(main_thread, signal.SIGINT)
            else:
                requests.put(message)

    threading.Thread(target=listen, daemon=True, name="control").start()
    channel.send({"type": "ready", "startup": time.perf_counter() - started})
    while True:
        try:
            request = requests.get()
            if request is None:
                break
            if request["type"] == "execute":
                kernel.execute(protocol.ExecuteRequest.from_message(request))
        except KeyboardInterrupt:  # an interrupt that arrived between cells: nothing to stop
            continue
    os._exit(0)


if __name__ == "__main__":
    main()
