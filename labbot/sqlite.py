"""One SQLite file used from worker threads: the embedded database every store shares."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from labbot.errors import StorageError
from labbot.private import private_dir, private_mode

log = logging.getLogger(__name__)
T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]


class SqliteDatabase:
    """An SQLite file in WAL mode that never blocks the event loop.

    Writes run one at a time on a dedicated thread, each in its own ``BEGIN IMMEDIATE``
    transaction, so they are atomic against other coroutines and other processes. Reads run on
    a small pool of reader connections (WAL lets them proceed during a write). sqlite3 errors
    become StorageError, with "busy" when another process holds the lock past ``busy_timeout``.

    Several processes share the file (the bot, the CLI, the sweeper): every connection, reader
    or writer, waits up to ``busy_timeout`` for another's lock; a process killed mid-transaction
    leaves only uncommitted WAL frames, which the next reader ignores (the kernel drops its
    locks). Nothing outside SQLite ever opens the file (see labbot.private for why).
    """

    def __init__(self, path: Path, *, busy_timeout: float = 5.0, readers: int = 2) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="labbot-sqlite-w")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="labbot-sqlite-r")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        self._private = False  # folder and files given their modes (by the first connect)
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def _connect(self) -> sqlite3.Connection:
        # The database holds tool outputs and conversations: the owner's alone, in a folder
        # that is the owner's alone. SQLite creates the file (and -wal, -shm with the file's
        # mode); the folder is 0700 before, and the modes are set by path after: the file is
        # never opened outside SQLite. (A umask around the connect would be process-wide,
        # changing the modes of files other threads create meanwhile.)
        with self._opening:
            if not self._private:
                private_dir(self.path.parent)
                if not os.access(self.path.parent, os.W_OK | os.X_OK):  # say why, as an OSError
                    raise PermissionError(errno.EACCES, "Permission denied", str(self.path.parent))
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,  # busy_timeout: readers wait for locks too
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                # Committed transactions survive a killed process (they are in the WAL);
                # only a power cut may lose the last few.
                db.execute("PRAGMA synchronous=NORMAL")
                if not self._private:
                    private_mode(self.path, "-wal", "-shm", "-journal")
                    self._private = True
            except BaseException:
                db.close()
                raise
        return db

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn`` with a connection on a worker thread; a write runs in one transaction."""
        if self._closed:
            raise StorageError("The database is closed.")

        def call() -> T:
            db = self._connection()
            if not write:
                return fn(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk); a failed COMMIT leaves
                # the transaction open, which would refuse every later write.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer if write else self._readers, call)
        except sqlite3.OperationalError as exc:
            log.warning("sqlite.error kind=%s", type(exc).__name__, exc_info=True)
            if "locked" in str(exc) or "busy" in str(exc):
                raise StorageError(
                    "The database is busy; nothing was changed.", hint="Try again shortly."
                ) from exc
            raise StorageError("The database failed; nothing was changed.") from exc
        except sqlite3.Error as exc:
            log.warning("sqlite.error kind=%s", type(exc).__name__, exc_info=True)
            raise StorageError("The database failed; nothing was changed.") from exc

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        """Create the file if needed and apply the migrations not yet recorded; idempotent.

        Migrations are named functions recorded in ``_labbot_migrations``; never edit one that
        has shipped, add a new one.
        """

        def apply(db: sqlite3.Connection) -> None:
            db.execute(
                "CREATE TABLE IF NOT EXISTS _labbot_migrations"
                " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {name for (name,) in db.execute("SELECT name FROM _labbot_migrations")}
            for migration in migrations:
                if migration.__name__ not in done:
                    migration(db)
                    db.execute(
                        "INSERT INTO _labbot_migrations VALUES (?, ?)",
                        (migration.__name__, datetime.now(UTC).isoformat()),
                    )

        await self.run(apply, write=True)

    async def close(self) -> None:
        """Close every connection; later calls raise StorageError."""
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()


def to_us(moment: datetime) -> int:
    """A datetime as integer microseconds since the epoch (exact, sorts as a number)."""
    return round(moment.timestamp() * 1_000_000)


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch as a tz-aware UTC datetime."""
    seconds, micros = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
