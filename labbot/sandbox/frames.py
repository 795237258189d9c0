"""The frames a kernel may send, as the host validates them.

User code shares its process with the kernel and can write to the channel, so nothing here is
trusted: each JSON frame must match one of these models exactly (strict types, no extra keys,
bounded sizes), and ``kernel_client`` enforces the per-execution limits on top. A frame that
does not validate ends that session, never the host's work.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# Bounds an honest kernel stays within whatever the settings (the settings' limits are checked
# per execution in kernel_client).
MAX_NAME = 1024
MAX_VALUE = 6_200
MAX_MESSAGE = 6_200
MAX_TRACEBACK = 20_200
MAX_STREAM = 4 * 1024 * 1024
MAX_ENTRIES = 1000


class _Frame(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Count = Annotated[int, Field(ge=0, le=2**53)]


class Ready(_Frame):
    """The kernel has started and imported the data stack."""

    type: Literal["ready"]
    startup: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]


class Stream(_Frame):
    """A piece of the cell's stdout or stderr, sent live."""

    type: Literal["stream"]
    cell: Count
    name: Literal["stdout", "stderr"]
    text: Annotated[str, Field(max_length=MAX_STREAM)]


class FileStart(_Frame):
    """A file the cell wrote follows as bytes frames, then ``file_end``."""

    type: Literal["file"]
    name: Name
    size: Count


class FileEnd(_Frame):
    """The end of a file's bytes."""

    type: Literal["file_end"]


PieceName = Annotated[str, Field(pattern=r"^(\+session|[A-Za-z_][A-Za-z0-9_]{0,99})$")]
Variable = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
MAX_PIECES = 501  # the kernel's 500 variables, and its session piece


class PieceStart(_Frame):
    """A piece of the session's checkpoint (one variable's pickle, opaque to the host) follows
    as bytes frames, then ``file_end``."""

    type: Literal["piece"]
    name: PieceName
    size: Count


class Unkept(_Frame):
    """A variable not kept (or not restored), and why."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    why: Annotated[str, Field(max_length=300)]


class Restored(_Frame):
    """What a fresh session's restore brought back."""

    names: Annotated[list[Variable], Field(max_length=1000)]
    failed: Annotated[list[Unkept], Field(max_length=100)]
    not_kept: Annotated[list[Unkept], Field(max_length=100)]
    seconds: Annotated[float, Field(ge=0, le=7 * 24 * 3600, allow_inf_nan=False)]


class Checkpointed(_Frame):
    """What the checkpoint after a cell did."""

    saved: Annotated[list[PieceName], Field(max_length=MAX_PIECES)]
    dropped: Annotated[list[Variable], Field(max_length=MAX_PIECES)]
    not_kept: Annotated[list[Unkept], Field(max_length=100)]
    bytes: Count
    seconds: Annotated[float, Field(ge=0, le=7 * 24 * 3600, allow_inf_nan=False)]
    restored: Restored | None


class ErrorInfo(_Frame):
    """What the cell raised."""

    name: Annotated[str, Field(max_length=200)]
    message: Annotated[str, Field(max_length=MAX_MESSAGE)]
    traceback: Annotated[str, Field(max_length=MAX_TRACEBACK)]


class Skipped(_Frame):
    """An output file the kernel did not send, and why."""

    name: Name
    size: Count
    reason: Literal["size", "count", "budget", "name"]


class Result(_Frame):
    """The end of a cell."""

    type: Literal["result"]
    cell: Count
    status: Literal["ok", "error", "timeout", "memory"]
    error: ErrorInfo | None
    value: Annotated[str, Field(max_length=MAX_VALUE)] | None
    stdout: Annotated[str, Field(max_length=MAX_STREAM)]
    stderr: Annotated[str, Field(max_length=MAX_STREAM)]
    duration: Annotated[float, Field(ge=0, le=7 * 24 * 3600, allow_inf_nan=False)]
    files: Annotated[list[Name], Field(max_length=MAX_ENTRIES)]
    skipped: Annotated[list[Skipped], Field(max_length=MAX_ENTRIES)]
    more_skipped: Count
    missing_module: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")] | None
    checkpoint: Checkpointed | None = None


Frame = Annotated[
    Ready | Stream | FileStart | PieceStart | FileEnd | Result, Field(discriminator="type")
]
FRAME = TypeAdapter(Frame)
