"""The bot's side of one request to a worker: building it, reading the reply (validated, or a
clear error), and control requests."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from labbot.core import ExecutionResult, FileRef, OutputFile, SkippedFile
from labbot.errors import FileError, SandboxError, SandboxUnavailable, StorageError
from labbot.files import FileStore
from labbot.remote import bus, wire
from labbot.sandbox import eviction_notes

log = logging.getLogger(__name__)

HOST_LOST_NOTE = (
    "The Python session was restarted because its machine was lost: variables and imports are"
    " gone; uploaded and generated files are still available through load_file()."
)
HOST_LOST_RESTORED_NOTE = (
    "The code ran on another machine because its machine was lost; the session's variables"
    " were restored from its checkpoint (below)."
)
HOST_RESTARTED_NOTE = (
    "The Python session was restarted because its machine restarted: variables and imports are"
    " gone; files are kept."
)
HOST_MOVED_NOTE = (
    "The Python session was restarted on another machine (its machine's time limit differs"
    " from this bot's): variables and imports are gone; files are kept."
)


class HostLost(Exception):
    """The worker holding a session is gone (no subscriber, or silent)."""


class NoAnswer(Exception):
    """The worker still beats but has not answered within the time limit and its grace."""


class Refused(Exception):
    """The worker would not take the session (draining, or a time limit longer than ours)."""

    def __init__(self, host: str, reason: str | None) -> None:
        super().__init__(host)
        self.reason = reason


def exec_request(
    user: str, conversation: str, code: str, refs: list[FileRef], *, timeout: float
) -> wire.ExecRequest:
    """The execution request, or a clear error if it cannot go on the wire."""
    try:
        files = [wire.FileRef.of(ref) for ref in refs]
        return wire.ExecRequest(
            user=user, conversation=conversation, code=code, files=files, timeout=timeout
        )
    except ValidationError as exc:
        raise SandboxError(
            f"This cannot be sent to a worker machine: {wire.describe(exc)}."
        ) from None


def ctl_request(op: str, user: str, conversation: str) -> wire.CtlRequest | None:
    """A stop or reset request, or None if no session by those names could exist."""
    try:
        return wire.CtlRequest(op=op, user=user, conversation=conversation)  # type: ignore[arg-type]
    except ValidationError:
        return None  # no such session could exist on a worker


# What a user reads when a worker will not or cannot run the code: one fixed sentence per
# reason. A worker's own words (it may be compromised) go to the log, bounded, never to users.
REFUSALS: dict[str, tuple[str, str]] = {
    "bad_request": (
        "A worker machine could not read this bot's request.",
        "Tell the operator.",
    ),
    "protocol": (
        "A worker machine runs another version of labbot (another protocol).",
        "The operator should run the same labbot version on the bot and its workers.",
    ),
    "too_large": (
        "The result was too large to send back from the worker machine.",
        "Print less, or write the data to a file.",
    ),
    "failed": (
        "The worker machine could not run the code.",
        "Try again; if it keeps failing, tell the operator.",
    ),
}
UNREADABLE = ("A worker machine sent a reply this bot cannot read.", "Tell the operator.")
LOGGED_CHARS = 500  # of a worker's own text, in the log


def read_reply(host: str, data: bytes) -> wire.ExecReply:
    """A worker's reply as the schema says, or a clear error; Refused when it would not.
    Host ids (often host names) and the worker's own words go to the log, not to the user."""
    try:
        reply = wire.decode(wire.ExecReply, data)
    except wire.WireError as exc:
        log.warning(
            "executor.bad_reply host=%s reason=%s error=%s",
            host,
            exc.reason,
            str(exc)[:LOGGED_CHARS],
        )
        message, hint = REFUSALS["protocol"] if exc.reason == "protocol" else UNREADABLE
        raise SandboxUnavailable(message, hint=hint) from None
    if reply.ok:
        return reply
    if reply.reason in ("draining", "time_limit"):
        raise Refused(host, reply.reason)
    reason = reply.reason if reply.reason in REFUSALS else "failed"
    log.warning(
        "executor.worker_failed host=%s reason=%s error=%s",
        host,
        reply.reason,
        (reply.error or "")[:LOGGED_CHARS],
    )
    message, hint = REFUSALS[reason]
    raise SandboxUnavailable(message, hint=hint)


async def control(nc: Any, host: str, request: wire.CtlRequest) -> Any:
    """One control request to ``host`` on connection ``nc``: its value, or None when the
    worker does not answer, refuses, or answers what this side cannot read."""
    try:
        msg = await nc.request(bus.ctl_subject(host), wire.encode(request), timeout=10)
    except (NoRespondersError, NatsTimeout):
        return None
    try:
        reply = wire.decode(wire.CtlReply, msg.data)
    except wire.WireError as exc:
        log.warning("executor.bad_ctl_reply host=%s error=%s", host, exc)
        return None
    if not reply.ok:
        log.warning("executor.ctl_refused host=%s op=%s error=%s", host, request.op, reply.error)
        return None
    return reply.value


async def to_result(store: FileStore, user: str, raw: wire.Result) -> ExecutionResult:
    """A worker's result, with its new files registered under the user's limits (a file that
    cannot be kept is named in ``skipped_files``)."""
    made: list[OutputFile] = []
    skipped: list[SkippedFile] = []
    notes: list[str] = []
    for out in raw.files:
        try:
            saved = await store.register(
                user, out.name, out.id, kind=out.kind, size=out.size, sha256=out.sha256
            )
        except (FileError, StorageError) as exc:
            skipped.append(SkippedFile(out.name, str(exc)))
            continue
        made.append(saved.record.output())
        notes.extend(eviction_notes(saved.evicted))
    result = raw.core(tuple(made))
    return replace(
        result,
        skipped_files=result.skipped_files + tuple(skipped),
        notes=result.notes + tuple(notes),
    )
