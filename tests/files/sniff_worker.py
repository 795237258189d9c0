"""A child process that runs the host's parsers of strangers' bytes, one request per line, so a
test can bound each call with a timeout (a backtracking pattern holds the GIL: a thread or a
signal in the test's own process cannot stop it) and measure its CPU and peak memory alone.

Request (a JSON line): {"op": "kind" | "image_size" | "prepare", "name": str, and "data" (base64)
or "file" (a path; "kind" then also gives the sniffer the path, as the store does)}.
Answer (a JSON line): {"result": str, "seconds": float, "cpu": float, "rise": int (bytes of peak
resident memory above the start of the call)}.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Timeout(Exception):
    """A call did not answer within its ceiling (the worker was killed and restarted)."""


class SniffWorker:
    """The parent's side: one child process, calls with a ceiling; a call over it kills the
    child (a runaway pattern never finishes by itself) and the next call starts a new one.

    with SniffWorker() as worker:
        answer = worker.call({"op": "kind", "name": "x.csv", "data": ...}, timeout=5)
    """

    def __init__(self, src: Path | None = None) -> None:
        self.src = src
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SniffWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.src is not None:
            env["LABBOT_SRC"] = str(self.src)
        return subprocess.Popen(
            [sys.executable, "-m", "tests.files.sniff_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )

    def call(self, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Send one request; its answer, or Timeout after ``timeout`` seconds."""
        if self.proc is None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise Timeout(f"no answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            raise RuntimeError(f"the sniff worker died (exit {code})")
        return json.loads(line)

    def kind(self, name: str, data: bytes, *, timeout: float) -> dict[str, Any]:
        """detect_kind(name, data) in the child."""
        payload = base64.b64encode(data).decode()
        return self.call({"op": "kind", "name": name, "data": payload}, timeout=timeout)

    def close(self) -> None:
        """Stop the child (killed: it may be stuck in a pattern)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self.proc = None


def _status(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(request: dict) -> str:
    from labbot.chat import images
    from labbot.files import kinds
    from labbot.llm import tokens

    path = Path(request["file"]) if "file" in request else None
    if path is not None:
        with open(path, "rb") as f:
            data = f.read(kinds.HEAD_BYTES if request["op"] == "kind" else -1)
    else:
        data = base64.b64decode(request["data"])
    op = request["op"]
    if op == "kind":
        return kinds.detect_kind(request.get("name", "upload"), data, path).name
    if op == "image_size":
        return repr(tokens.image_size(data[: images.HEAD_BYTES]))
    if op == "prepare":
        try:
            prepared = images._prepare(data, "gpt-4o", "auto")
        except Exception as exc:  # the refusal (ImageTooLarge) is an answer, not a failure
            return f"{type(exc).__name__}: {exc}"
        return "None" if prepared is None else f"{prepared.width}x{prepared.height}"
    raise ValueError(f"unknown op {op}")


def main() -> None:
    """Answer requests from stdin until it closes."""
    if src := os.environ.get("LABBOT_SRC"):  # another checkout (the bench's "before")
        sys.path.insert(0, src)
    from labbot.chat import images  # noqa: F401  (import cost is not the call's)
    from labbot.files import kinds  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
        base, cpu, start = _status("VmRSS"), _cpu(), time.monotonic()
        result = _run(request)
        answer = {
            "result": result,
            "seconds": time.monotonic() - start,
            "cpu": _cpu() - cpu,
            "rise": _status("VmHWM") - base,
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
