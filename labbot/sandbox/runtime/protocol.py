"""Frames between the host and the kernel: a kind byte, a 4-byte length, then the payload.

Kind ``J`` carries one JSON object; kind ``B`` carries raw bytes (a piece of an output file,
announced by a preceding ``file`` JSON frame). Standard library only: both sides import it.

The one request the host sends, ``execute``, is typed here once: the host builds it from its
settings (``ExecuteRequest``), the kernel reads it back with ``ExecuteRequest.from_message``;
no default is repeated on either side.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, TypedDict

HEADER = struct.Struct(">cI")
JSON = b"J"
BYTES = b"B"
MAX_JSON = 1024 * 1024  # results are capped well below this; bigger means a forged frame
CHUNK = 256 * 1024


def encode_json(message: dict) -> bytes:
    """One JSON frame, ready to write."""
    # "replace": a lone surrogate in a name or a value must not end the kernel.
    payload = json.dumps(message, ensure_ascii=False, default=str).encode("utf-8", "replace")
    return HEADER.pack(JSON, len(payload)) + payload


def encode_bytes(data: bytes) -> bytes:
    """One bytes frame, ready to write."""
    return HEADER.pack(BYTES, len(data)) + data


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_exact(fd: int, size: int) -> bytes:
    """Read exactly ``size`` bytes from a blocking fd; EOFError when it closes first."""
    parts, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("channel closed")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int) -> tuple[bytes, bytes]:
    """Read one frame (kind, payload) from a blocking fd."""
    kind, size = HEADER.unpack(read_exact(fd, HEADER.size))
    if size > MAX_JSON:
        raise ValueError(f"frame of {size} bytes is too large")
    return kind, read_exact(fd, size)


class FileEntry(TypedDict):
    """One of the user's files as the code sees it (``FILES``, ``load_file``)."""

    name: str
    kind: str
    loader: str  # the runtime loader that reads it (loaders.py)
    size: int
    path: str  # inside the sandbox


@dataclass(frozen=True, slots=True)
class CellLimits:
    """What one cell may use and send back. The kernel keeps to them; the host enforces the
    output limits again on everything it receives."""

    cpu_seconds: float  # RLIMIT_CPU for the cell (SIGXCPU ends it as a timeout)
    output_head: int  # characters of each stream kept from its start (and streamed live)
    output_tail: int  # characters of each stream kept from its end
    max_file_bytes: int  # one output file
    max_output_files: int  # output files of one cell
    output_files_bytes: int  # all output files of one cell together


@dataclass(frozen=True, slots=True)
class CheckpointOrder:
    """The checkpoint part of a cell: the room its pieces may take, the variables that have a
    piece already, and (a fresh session's first cell) the pieces to load first."""

    cap: int
    held: tuple[str, ...] = ()
    restore: dict[str, str] = field(default_factory=dict)  # variable -> path inside


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """Run one cell."""

    cell: int  # the host's count: the result names it, so a stale result is never taken
    code: str
    files: dict[str, FileEntry]  # id -> entry
    limits: CellLimits
    checkpoint: CheckpointOrder | None = None  # None: checkpoints are off

    def message(self) -> dict[str, Any]:
        """The JSON object of its frame."""
        order = self.checkpoint
        return {
            "type": "execute",
            "cell": self.cell,
            "code": self.code,
            "files": self.files,
            "limits": {name: getattr(self.limits, name) for name in CellLimits.__slots__},
            "checkpoint": None
            if order is None
            else {"cap": order.cap, "held": list(order.held), "restore": order.restore},
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ExecuteRequest:
        """The request a frame carried (written by the host: a missing field is a KeyError)."""
        order = message["checkpoint"]
        return cls(
            cell=int(message["cell"]),
            code=str(message["code"]),
            files=message["files"],
            limits=CellLimits(**message["limits"]),
            checkpoint=None
            if order is None
            else CheckpointOrder(int(order["cap"]), tuple(order["held"]), dict(order["restore"])),
        )
