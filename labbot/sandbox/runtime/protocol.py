"""Frames between the host and the kernel: a kind byte, a 4-byte length, then the payload.

Kind ``J`` carries one JSON object; kind ``B`` carries raw bytes (a piece of an output file,
announced by a preceding ``file`` JSON frame). Standard library only: both sides import it.
"""

from __future__ import annotations

import json
import os
import struct

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
