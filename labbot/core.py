"""The typed values every layer speaks: a file as code sees it, what an execution produced, and
the events of one conversation turn (a tagged union the front ends ``match`` on).

Small frozen dataclasses; values that cross a process are checked at that boundary (the kernel's
frames in ``sandbox.frames``, the NATS messages in ``remote.wire``) and then become these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Protocol

ExecStatus = Literal["ok", "error", "timeout", "memory", "killed"]


@dataclass(frozen=True, slots=True)
class FileRef:
    """One of a user's files, as an execution needs it."""

    id: str
    name: str
    kind: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file an execution made, stored under its own id."""

    id: str
    name: str
    kind: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """The file as JSON."""
        return {"id": self.id, "name": self.name, "kind": self.kind, "size": self.size}


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file an execution made that was not kept, and why (a sentence)."""

    name: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The skipped file as JSON."""
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ExecError:
    """What the code raised, or why the execution was stopped."""

    name: str
    message: str
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        """The error as JSON (no empty traceback)."""
        data = {"name": self.name, "message": self.message}
        return {**data, "traceback": self.traceback} if self.traceback else data


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What one execution did: for the model (``to_json``) and the front ends."""

    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    error: ExecError | None = None
    value: str | None = None
    files: tuple[OutputFile, ...] = ()
    skipped_files: tuple[SkippedFile, ...] = ()
    duration: float = 0.0
    session_restarted: bool = False
    notes: tuple[str, ...] = ()
    packages_installed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The structured result the model reads; empty fields are left out."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value in (None, "", (), False) and item.name != "status":
                continue
            if isinstance(value, tuple):
                value = [v.to_json() if hasattr(v, "to_json") else v for v in value]
            elif isinstance(value, ExecError):
                value = value.to_json()
            data[item.name] = value
        return data


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """Something that happened during a turn; ``to_json`` names it by ``kind``."""

    kind: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        """The event as JSON: ``type`` and its fields (empty ones left out)."""
        data: dict[str, Any] = {"type": self.kind}
        for item in fields(self):
            value = getattr(self, item.name)
            if value in (None, ""):
                continue
            data[item.name] = value.to_json() if hasattr(value, "to_json") else value
        return data


@dataclass(frozen=True, slots=True)
class TextDelta(TurnEvent):
    """A piece of the model's answer, as it streams."""

    kind: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True, slots=True)
class Status(TurnEvent):
    """A progress note for the user."""

    kind: ClassVar[str] = "status"
    text: str


@dataclass(frozen=True, slots=True)
class ToolStarted(TurnEvent):
    """The model's code starts running."""

    kind: ClassVar[str] = "tool_started"
    call_id: str
    code: str


@dataclass(frozen=True, slots=True)
class ToolOutput(TurnEvent):
    """Live output of the running code."""

    kind: ClassVar[str] = "tool_output"
    call_id: str
    stream: Literal["stdout", "stderr"]
    text: str


@dataclass(frozen=True, slots=True)
class ToolFinished(TurnEvent):
    """The code ended (or was not run); the model reads ``result``."""

    kind: ClassVar[str] = "tool_finished"
    call_id: str
    result: ExecutionResult


@dataclass(frozen=True, slots=True)
class FileProduced(TurnEvent):
    """The code made a file, now stored under its id."""

    kind: ClassVar[str] = "file"
    call_id: str
    file: OutputFile


@dataclass(frozen=True, slots=True)
class Usage(TurnEvent):
    """Tokens and cost of one model request."""

    kind: ClassVar[str] = "usage"
    model: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    estimated: bool
    cost_usd: str | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """``{"type": "usage", "usage": {...}}``, the counts together."""
        counts = {item.name: getattr(self, item.name) for item in fields(self)}
        return {"type": self.kind, "usage": counts}


@dataclass(frozen=True, slots=True)
class Final(TurnEvent):
    """The model's whole answer; the turn is over."""

    kind: ClassVar[str] = "final"
    text: str


@dataclass(frozen=True, slots=True)
class Failed(TurnEvent):
    """The turn could not go on; ``text`` is a sentence for the user."""

    kind: ClassVar[str] = "error"
    text: str


Event = (
    TextDelta
    | Status
    | ToolStarted
    | ToolOutput
    | ToolFinished
    | FileProduced
    | Usage
    | Final
    | Failed
)


# -- progress: a slow step (a sandbox starting, a package installing) named to whoever watches --


class ProgressHook(Protocol):
    """Told when a slow step starts (``started=True``) and when it ends."""

    def __call__(self, name: str, *, started: bool) -> None: ...


_progress_hook: ContextVar[ProgressHook | None] = ContextVar("labbot_progress", default=None)


@contextmanager
def progress_to(hook: ProgressHook) -> Iterator[None]:
    """Within this block (and the tasks it starts), slow steps call ``hook(name, started=...)``,
    and any hook of an enclosing block too."""
    outer = _progress_hook.get()

    def both(name: str, *, started: bool) -> None:
        hook(name, started=started)
        if outer is not None:
            outer(name, started=started)

    token = _progress_hook.set(both)
    try:
        yield
    finally:
        _progress_hook.reset(token)


@contextmanager
def progress(name: str) -> Iterator[None]:
    """Mark a slow step (``"starting a sandbox"``) for the hook watching, if any."""
    hook = _progress_hook.get()
    if hook is not None:
        hook(name, started=True)
    try:
        yield
    finally:
        if hook is not None:
            hook(name, started=False)
