"""The messages that bot processes and workers exchange over NATS: one versioned schema,
validated on receipt on both sides.

Every message is a JSON object of one of these models: strict types (no "1" for 1), bounded
lengths and counts, no unknown fields, and the protocol version ``v``. Who sent a message is
never in it: a worker is the host id of the subject it publishes on, which its NATS credentials
enforce. A heartbeat or stream part that does not validate is dropped; a request that does not
validate is answered with an error saying what is wrong; a reply that does not validate is a
clear error for the user. Nothing is ever half understood.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from labbot import core
from labbot.files.blobs import USER_PATTERN
from labbot.files.names import FILE_ID_PATTERN

# 2: heartbeats carry no host and say the worker's time limit; requests theirs.
# 3: requests carry the session's checkpoint pieces, replies the new ones.
PROTOCOL: Literal[3] = 3
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # more than NATS carries by default (1 MiB)
MAX_HOST_SLOTS = 1024  # the most sessions one worker may hold (LABBOT_HOST_SLOTS's bound)
MAX_FILES = 10_000  # files per request (MAX_FILES_PER_USER's bound)
MAX_CODE_CHARS = 1_000_000
MAX_TEXT_CHARS = 500_000  # stdout, stderr, value, a traceback
MAX_PART_CHARS = 65_536  # one live-output part (what the kernel reads at once)
MAX_PARTS = 1_000_000  # live-output parts per execution
MAX_NOTE_CHARS = 16_000
MAX_ERROR_CHARS = 2_000
MAX_TIMEOUT_S = 7 * 24 * 3600.0
BIG = 2**53  # counts and sizes: any sane number, but a number

HOST_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # a NATS subject token (LABBOT_HOST_ID)
UserId = Annotated[str, StringConstraints(pattern=f"^{USER_PATTERN}$")]
FileId = Annotated[str, StringConstraints(pattern=f"^{FILE_ID_PATTERN}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Conversation = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Kind = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Note = Annotated[str, StringConstraints(max_length=MAX_NOTE_CHARS)]
ErrorText = Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)]
Count = Annotated[int, Field(ge=0, le=BIG)]
ErrorDetail = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Text], Field(max_length=8)
]
StreamSubject = Annotated[str, StringConstraints(pattern=r"^labbot\.stream\.[0-9a-f]{24}$")]
Reason = Literal["bad_request", "protocol", "draining", "time_limit", "too_large", "failed"]
M = TypeVar("M", bound="Wire")


class WireError(Exception):
    """A message that does not fit the schema; ``str()`` says what is wrong, without values."""

    def __init__(self, message: str, *, reason: Reason = "bad_request") -> None:
        super().__init__(message)
        self.reason = reason


class Wire(BaseModel):
    """A message on the wire: strict, closed, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Versioned(Wire):
    v: Literal[3] = PROTOCOL


class FileRef(Wire):
    """A file of the user's, as the bot names it to a worker (or a worker's output file)."""

    id: FileId
    name: Name
    kind: Kind
    size: Count
    sha256: Sha256

    @classmethod
    def of(cls, ref: core.FileRef) -> FileRef:
        """The wire form of a file reference."""
        return cls(id=ref.id, name=ref.name, kind=ref.kind, size=ref.size, sha256=ref.sha256)

    def core(self) -> core.FileRef:
        """Back to the typed core."""
        return core.FileRef(self.id, self.name, self.kind, self.size, self.sha256)


PieceName = Annotated[str, StringConstraints(pattern=r"^(\+session|[A-Za-z_][A-Za-z0-9_]{0,99})$")]
MAX_PIECES = 501  # a checkpoint's variables and its session piece (the kernel keeps to 500)


class CheckpointIn(Wire):
    """The session's checkpoint as the bot holds it: its pieces (restored by a fresh session)
    and the bytes it may take."""

    pieces: Annotated[dict[PieceName, FileRef], Field(max_length=MAX_PIECES)] = {}
    room: Count


class CheckpointOut(Wire):
    """What the cell changed in the checkpoint: new pieces (stored under fresh ids for the
    bot to register) and variables whose pieces go."""

    saved: Annotated[dict[PieceName, FileRef], Field(max_length=MAX_PIECES)] = {}
    dropped: Annotated[list[PieceName], Field(max_length=MAX_PIECES)] = []


class ExecRequest(Versioned):
    """Run ``code`` in the (user, conversation) session; ``timeout`` is the bot's time limit."""

    user: UserId
    conversation: Conversation
    code: Annotated[str, StringConstraints(max_length=MAX_CODE_CHARS)]
    files: Annotated[list[FileRef], Field(max_length=MAX_FILES)] = []
    stream: StreamSubject | None = None
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)]
    checkpoint: CheckpointIn | None = None


class StreamPart(Wire):
    """One piece of live output; ``n`` counts from 1 within an execution."""

    n: Annotated[int, Field(ge=1, le=MAX_PARTS)]
    name: Literal["stdout", "stderr"]
    text: Annotated[str, StringConstraints(max_length=MAX_PART_CHARS)]


class Skipped(Wire):
    name: Note
    reason: Note


class Result(Wire):
    """``ExecutionResult`` on the wire (empty fields may be left out)."""

    status: Literal["ok", "error", "timeout", "memory", "killed"]
    stdout: Text = ""
    stderr: Text = ""
    error: ErrorDetail | None = None  # name, message, traceback
    value: Text | None = None
    files: Annotated[list[FileRef], Field(max_length=1000)] = []
    skipped_files: Annotated[list[Skipped], Field(max_length=1000)] = []
    duration: Annotated[float, Field(ge=0, le=MAX_TIMEOUT_S)] = 0.0
    session_restarted: bool = False
    notes: Annotated[list[Note], Field(max_length=100)] = []
    packages_installed: Annotated[list[Note], Field(max_length=100)] = []

    @classmethod
    def of(cls, result: core.ExecutionResult, files: list[FileRef]) -> Result:
        """The wire form of a worker's result; ``files`` are its outputs with their sha256.

        :raises ValidationError: the result is outside what a worker may send.
        """
        data = result.to_json()
        data["files"] = files
        return cls.model_validate(data)

    def core(self, files: tuple[core.OutputFile, ...] = ()) -> core.ExecutionResult:
        """The typed result, with ``files`` as registered by the bot."""
        error = None
        if self.error is not None:
            error = core.ExecError(
                self.error.get("name", "Error"),
                self.error.get("message", ""),
                self.error.get("traceback", ""),
            )
        return core.ExecutionResult(
            status=self.status,
            stdout=self.stdout,
            stderr=self.stderr,
            error=error,
            value=self.value,
            files=files,
            skipped_files=tuple(core.SkippedFile(s.name, s.reason) for s in self.skipped_files),
            duration=self.duration,
            session_restarted=self.session_restarted,
            notes=tuple(self.notes),
            packages_installed=tuple(self.packages_installed),
        )


class ExecReply(Versioned):
    """A worker's answer: a result, or an error and its reason."""

    ok: bool
    result: Result | None = None
    new_session: bool = False
    streamed: Annotated[int, Field(ge=0, le=MAX_PARTS)] = 0
    error: ErrorText | None = None
    reason: Reason | None = None
    checkpoint: CheckpointOut | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> ExecReply:
        if self.ok != (self.result is not None) or self.ok == (self.error is not None):
            raise ValueError("a reply has a result when ok, and an error otherwise")
        return self


class Heartbeat(Versioned):
    """A worker's state, once a period, on its own subject (``labbot.hb.<host>``)."""

    slots: Count
    sessions: Count
    free: Count
    running: Count
    warm: Count
    draining: bool
    gone: bool
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)]  # its CODE_EXECUTION_TIMEOUT


class CtlRequest(Versioned):
    """stop and reset name a session; drain and status do not."""

    op: Literal["stop", "reset", "drain", "status"]
    user: UserId | None = None
    conversation: Conversation | None = None

    @model_validator(mode="after")
    def _session_named(self) -> CtlRequest:
        if self.op in ("stop", "reset") and (self.user is None or self.conversation is None):
            raise ValueError(f"{self.op} needs a user and a conversation")
        return self


class CtlReply(Versioned):
    ok: bool
    value: bool | Count | Heartbeat | None = None
    error: ErrorText | None = None
    reason: Reason | None = None


def encode(message: Wire) -> bytes:
    """A message on the wire."""
    return message.model_dump_json().encode()


def decode(model: type[M], data: bytes) -> M:
    """A message off the wire.

    :raises WireError: too large, not JSON, another protocol version, or not the schema
        (the message names the fields at fault, never their values).
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"the message is over {MAX_MESSAGE_BYTES} bytes")
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        version = _version(data)
        if issubclass(model, Versioned) and version != PROTOCOL:
            raise WireError(
                f"it speaks protocol {version} and this side {PROTOCOL}: run the same labbot"
                " version on the bot and its workers",
                reason="protocol",
            ) from None
        raise WireError(describe(exc)) from None


def describe(exc: ValidationError, limit: int = 3) -> str:
    """What is wrong with a message, by field (values left out: they may be anyone's code)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        where = ".".join(str(part)[:40] for part in error["loc"])[:120] or "the message"
        problems.append(f"{where}: {error['msg'][:200]}")
    more = exc.error_count() - limit
    return ("; ".join(problems) + (f" (and {more} more)" if more > 0 else ""))[:MAX_ERROR_CHARS]


def _version(data: bytes) -> int:
    """The protocol version a JSON object says it speaks (PROTOCOL when it says none that
    could be one: then it is simply malformed)."""
    try:
        message = json.loads(data)
    except ValueError:
        return PROTOCOL
    version = message.get("v") if isinstance(message, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else PROTOCOL
