"""The embedded metadata backend: file records in the SQLite database."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from labbot.errors import FileIdTaken, FileNotFound
from labbot.files.meta.base import FileRecord, evictions
from labbot.sqlite import SqliteDatabase, from_us, to_us

T = TypeVar("T")

_COLUMNS = "id, user, name, kind, size, sha256, source, created_us, expires_us, preview"


def _m001_files(db: sqlite3.Connection) -> None:
    # Times are integer microseconds since the epoch: exact, and they sort as numbers
    # (the original compared ISO strings). seq orders records saved in the same microsecond.
    db.execute(
        """CREATE TABLE files (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            user TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            size INTEGER NOT NULL CHECK (size >= 0),
            sha256 TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('upload', 'generated')),
            created_us INTEGER NOT NULL,
            expires_us INTEGER,
            preview TEXT
        )"""
    )
    db.execute("CREATE INDEX files_by_user ON files (user, seq)")
    db.execute("CREATE INDEX files_by_expiry ON files (expires_us) WHERE expires_us IS NOT NULL")


def _m002_checkpoint_source(db: sqlite3.Connection) -> None:
    # SQLite cannot change a CHECK in place: the table is rebuilt with 'checkpoint' allowed.
    db.execute(
        """CREATE TABLE files_v2 (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            user TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            size INTEGER NOT NULL CHECK (size >= 0),
            sha256 TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('upload', 'generated', 'checkpoint')),
            created_us INTEGER NOT NULL,
            expires_us INTEGER,
            preview TEXT
        )"""
    )
    db.execute("INSERT INTO files_v2 SELECT * FROM files")
    db.execute("DROP TABLE files")
    db.execute("ALTER TABLE files_v2 RENAME TO files")
    db.execute("CREATE INDEX files_by_user ON files (user, seq)")
    db.execute("CREATE INDEX files_by_expiry ON files (expires_us) WHERE expires_us IS NOT NULL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_files, _m002_checkpoint_source]


_us = to_us


def _moment(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _record(row: tuple) -> FileRecord:
    file_id, user, name, kind, size, sha256, source, created, expires, preview = row
    created_at = _moment(created)
    assert created_at is not None
    return FileRecord(
        id=file_id,
        user=user,
        name=name,
        kind=kind,
        size=size,
        sha256=sha256,
        source=source,
        created_at=created_at,
        expires_at=_moment(expires),
        preview=preview,
    )


_LIVE = "(expires_us IS NULL OR expires_us > ?)"


class SqliteMetadataStore:
    """MetadataStore on the embedded SQLite database (see SqliteDatabase for the threading).

    Given a path it opens (and closes) its own database; given a SqliteDatabase it shares it
    and leaves closing to its owner.
    """

    def __init__(self, database: Path | SqliteDatabase, *, busy_timeout: float = 5.0) -> None:
        self._owned = not isinstance(database, SqliteDatabase)
        self.db = (
            SqliteDatabase(database, busy_timeout=busy_timeout)
            if not isinstance(database, SqliteDatabase)
            else database
        )

    @property
    def path(self) -> Path:
        """The database file."""
        return self.db.path

    @property
    def busy_timeout(self) -> float:
        """Seconds to wait for another writer's lock."""
        return self.db.busy_timeout

    @busy_timeout.setter
    def busy_timeout(self, seconds: float) -> None:
        self.db.busy_timeout = seconds

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        return await self.db.run(fn, write=write)

    async def start(self) -> None:
        """Create the database and apply missing migrations; idempotent."""
        await self.db.migrate(MIGRATIONS)

    async def close(self) -> None:
        """Close the database if this store opened it."""
        if self._owned:
            await self.db.close()

    async def add(
        self, record: FileRecord, *, max_files: int, max_bytes: int, now: datetime
    ) -> list[FileRecord]:
        """Insert and evict past the limits (made files first, then uploads, each oldest
        first), atomically."""

        def add(db: sqlite3.Connection) -> list[FileRecord] | None:
            if db.execute("SELECT 1 FROM files WHERE id = ?", (record.id,)).fetchone():
                return None  # in the same write transaction: no one can add it meanwhile
            db.execute(
                f"INSERT INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.user,
                    record.name,
                    record.kind,
                    record.size,
                    record.sha256,
                    record.source,
                    _us(record.created_at),
                    _us(record.expires_at) if record.expires_at else None,
                    record.preview,
                ),
            )
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE user = ? AND {_LIVE} ORDER BY seq",
                (record.user, _us(now)),
            ).fetchall()
            live = [_record(row) for row in rows]
            evicted = evictions(live, record, max_files=max_files, max_bytes=max_bytes)
            db.executemany("DELETE FROM files WHERE id = ?", [(r.id,) for r in evicted])
            return evicted

        evicted = await self._run(add, write=True)
        if evicted is None:
            raise FileIdTaken(record.id)
        return evicted

    async def known(self, file_id: str) -> bool:
        """True if any record, live or expired, has this id."""
        row = await self._run(
            lambda db: db.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone(),
            write=False,
        )
        return row is not None

    async def get(self, user: str, file_id: str, *, now: datetime) -> FileRecord:
        """The live record owned by ``user``, or FileNotFound."""
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE id = ? AND user = ? AND {_LIVE}",
                (file_id, user, _us(now)),
            ).fetchone(),
            write=False,
        )
        if row is None:
            raise FileNotFound(file_id)
        return _record(row)

    async def list(self, user: str, *, now: datetime) -> list[FileRecord]:
        """The user's live records, newest first."""
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE user = ? AND {_LIVE} ORDER BY seq DESC",
                (user, _us(now)),
            ).fetchall(),
            write=False,
        )
        return [_record(row) for row in rows]

    async def delete(self, user: str, file_id: str, *, now: datetime) -> FileRecord:
        """Remove a live record owned by ``user`` and return it, or FileNotFound."""

        def delete(db: sqlite3.Connection) -> FileRecord | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE id = ? AND user = ? AND {_LIVE}",
                (file_id, user, _us(now)),
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM files WHERE id = ?", (file_id,))
            return None if row is None else _record(row)

        record = await self._run(delete, write=True)
        if record is None:
            raise FileNotFound(file_id)
        return record

    async def set_preview(self, user: str, file_id: str, preview: str) -> None:
        """Store the schema preview of a file."""
        await self._run(
            lambda db: db.execute(
                "UPDATE files SET preview = ? WHERE id = ? AND user = ?", (preview, file_id, user)
            ),
            write=True,
        )

    async def take_expired(self, *, now: datetime, limit: int) -> builtins.list[FileRecord]:
        """Remove up to ``limit`` expired records, oldest expiry first, and return them."""

        def take(db: sqlite3.Connection) -> list[FileRecord]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE expires_us IS NOT NULL AND expires_us <= ?"
                " ORDER BY expires_us LIMIT ?",
                (_us(now), limit),
            ).fetchall()
            db.executemany("DELETE FROM files WHERE id = ?", [(row[0],) for row in rows])
            return [_record(row) for row in rows]

        return await self._run(take, write=True)

    async def file_ids(self) -> set[str]:
        """Every record's id."""
        rows = await self._run(
            lambda db: db.execute("SELECT id FROM files").fetchall(), write=False
        )
        return {file_id for (file_id,) in rows}

    async def forget(self, file_ids: Iterable[str]) -> int:
        """Remove these records whatever their state."""
        ids = [(file_id,) for file_id in file_ids]

        def forget(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany("DELETE FROM files WHERE id = ?", ids)
            return db.total_changes - before

        return await self._run(forget, write=True)
