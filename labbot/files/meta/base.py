"""The metadata contract every backend (SQLite, MongoDB) implements, and the record it speaks."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from labbot.core import FileRef, OutputFile

Source = Literal["upload", "generated", "checkpoint"]  # checkpoint: a session's variables


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One stored file: who owns it, what it is, and when it goes."""

    id: str
    user: str
    name: str
    kind: str
    size: int
    sha256: str
    source: Source
    created_at: datetime
    expires_at: datetime | None
    preview: str | None = None

    def ref(self) -> FileRef:
        """The file as an execution needs it."""
        return FileRef(self.id, self.name, self.kind, self.size, self.sha256)

    def output(self) -> OutputFile:
        """The file as an execution that made it reports it."""
        return OutputFile(self.id, self.name, self.kind, self.size)

    def to_json(self) -> dict[str, Any]:
        """The one JSON shape of a file record (CLI and APIs)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data


def evictions(
    live: Iterable[FileRecord], new: FileRecord, *, max_files: int, max_bytes: int
) -> builtins.list[FileRecord]:
    """Which records go so ``new`` fits the limits: pieces of sessions' checkpoints first (the
    variables are a convenience, the files are the work), then files the code made, then files
    the user uploaded, each oldest first; ``new`` never. Checkpoint pieces count in the bytes,
    not in the number of files, and a new piece pushes out nothing (the host saves one only
    when it fits). ``live`` is the user's live records, oldest first, ``new`` included."""
    if new.source == "checkpoint":
        return []
    records = [r for r in live if r.id != new.id]
    count = sum(r.source != "checkpoint" for r in records) + 1
    total = sum(r.size for r in records) + new.size
    order = [r for r in records if r.source == "checkpoint"]
    order += [r for r in records if r.source == "generated"]
    order += [r for r in records if r.source == "upload"]
    evicted = []
    for record in order:
        if count <= max_files and total <= max_bytes:
            break
        if record.source == "checkpoint" and total <= max_bytes:
            continue  # only the number of files is over: a piece does not count there
        evicted.append(record)
        total -= record.size
        count -= record.source != "checkpoint"
    return evicted


class MetadataStore(Protocol):
    """Where file records live. Every method is atomic; times are tz-aware UTC.

    "Live" means not expired at ``now``: expired records are invisible to get, list and delete
    at once, and only ``take_expired`` sees them.
    """

    async def start(self) -> None:
        """Open the store and create or migrate its schema; idempotent."""

    async def close(self) -> None:
        """Release the store's connections; the store cannot be used afterwards."""

    async def add(
        self, record: FileRecord, *, max_files: int, max_bytes: int, now: datetime
    ) -> list[FileRecord]:
        """Insert ``record`` and evict the owner's oldest live records until at most
        ``max_files`` live records totalling at most ``max_bytes`` remain, all in one
        transaction. Returns the evicted records, oldest first. The new record is never evicted
        (callers refuse a file larger than ``max_bytes`` first).

        :raises FileIdTaken: a record (any user's, live or expired) has this id; nothing was
            written.
        :raises StorageError: the database failed; nothing was written.
        """

    async def known(self, file_id: str) -> bool:
        """True if a record of any user, live or expired, has this id."""

    async def get(self, user: str, file_id: str, *, now: datetime) -> FileRecord:
        """The live record ``file_id`` owned by ``user``.

        :raises FileNotFound: no such live record for this user (another user's id included).
        """

    async def list(self, user: str, *, now: datetime) -> list[FileRecord]:
        """The user's live records, newest first."""

    async def delete(self, user: str, file_id: str, *, now: datetime) -> FileRecord:
        """Remove the live record ``file_id`` owned by ``user`` and return it.

        :raises FileNotFound: no such live record for this user.
        """

    async def set_preview(self, user: str, file_id: str, preview: str) -> None:
        """Store the schema preview of a file (no error if the file has gone)."""

    async def take_expired(self, *, now: datetime, limit: int) -> builtins.list[FileRecord]:
        """Remove up to ``limit`` expired records of any user; return them, oldest expiry first."""

    async def file_ids(self) -> set[str]:
        """Every record's id, live or expired (for reconcile)."""

    async def forget(self, file_ids: Iterable[str]) -> int:
        """Remove these records whatever their state; returns how many were removed."""
