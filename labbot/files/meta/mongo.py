"""The MongoDB metadata backend (pymongo's async client), for deployments.

Documents keep times twice: ``created_at`` / ``expires_at`` as BSON dates (what people and the
TTL index read) and ``created_us`` / ``expires_us`` as integer microseconds, because BSON dates
keep only milliseconds and the contract promises exact round trips and a strict order.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from labbot.errors import FileIdTaken, FileNotFound, StorageError
from labbot.files.meta.base import FileRecord, evictions
from labbot.sqlite import from_us, to_us

log = logging.getLogger(__name__)
T = TypeVar("T")
SCHEMA_VERSION = 1
TTL_GRACE = 24 * 3600  # seconds after expiry before MongoDB's TTL monitor deletes a record


def translate(exc: PyMongoError) -> StorageError:
    """The one place pymongo's errors become StorageError."""
    if isinstance(exc, DuplicateKeyError):
        return StorageError("That record exists already; nothing was changed.")
    if isinstance(exc, ConnectionFailure):
        log.warning("mongo.unreachable kind=%s", type(exc).__name__)
        return StorageError(
            "The database cannot be reached right now; nothing was changed.",
            hint="Try again in a minute.",
        )
    log.warning("mongo.error kind=%s", type(exc).__name__)
    return StorageError("The database failed; nothing was changed.")


async def guarded(operation: Awaitable[T]) -> T:
    """Await a MongoDB call, turning its failures into StorageError."""
    try:
        return await operation
    except PyMongoError as exc:
        raise translate(exc) from exc


@asynccontextmanager
async def reading() -> AsyncIterator[None]:
    """The same translation around iterating a cursor."""
    try:
        yield
    except PyMongoError as exc:
        raise translate(exc) from exc


def to_document(record: FileRecord) -> dict[str, Any]:
    """A FileRecord as stored."""
    return {
        "_id": record.id,
        "user": record.user,
        "name": record.name,
        "kind": record.kind,
        "size": record.size,
        "sha256": record.sha256,
        "source": record.source,
        "created_at": record.created_at,
        "created_us": to_us(record.created_at),
        "expires_at": record.expires_at,
        "expires_us": to_us(record.expires_at) if record.expires_at else None,
        "preview": record.preview,
    }


def from_document(doc: dict[str, Any]) -> FileRecord:
    """A stored document as a FileRecord."""
    return FileRecord(
        id=doc["_id"],
        user=doc["user"],
        name=doc["name"],
        kind=doc["kind"],
        size=doc["size"],
        sha256=doc["sha256"],
        source=doc["source"],
        created_at=from_us(doc["created_us"]),
        expires_at=from_us(doc["expires_us"]) if doc.get("expires_us") is not None else None,
        preview=doc.get("preview"),
    )


def live(now: datetime) -> dict[str, Any]:
    """The filter for records not expired at ``now``."""
    return {"$or": [{"expires_us": None}, {"expires_us": {"$gt": to_us(now)}}]}


class MongoMetadataStore:
    """MetadataStore on a MongoDB collection ``files``.

    ``add`` inserts, then evicts past the limits with a second call: the FileStore serialises
    saves per user within a process, and two processes saving for one user at the same instant
    may each evict once (never the new file). A TTL index on ``expires_at`` is a backstop to the
    sweeper; records it removes leave blobs that ``reconcile`` deletes.
    """

    def __init__(self, database: Any, *, ttl_grace: float | None = TTL_GRACE) -> None:
        """``ttl_grace``: seconds after expiry before MongoDB's TTL monitor deletes a record
        (None: no TTL index; that monitor reads the real clock, a test's fixed "now" does not)."""
        self.db = database
        self.files = database["files"]
        self.ttl_grace = ttl_grace

    async def start(self) -> None:
        """Create the indexes (idempotent) and check the schema version."""
        await guarded(self.files.create_index([("user", ASCENDING), ("created_us", ASCENDING)]))
        await guarded(self.files.create_index([("expires_us", ASCENDING)]))
        if self.ttl_grace is not None:
            # A backstop only: a day after expiry, long after the sweeper removed the record.
            await guarded(
                self.files.create_index("expires_at", expireAfterSeconds=int(self.ttl_grace))
            )
        meta = self.db["labbot_schema"]
        found = await guarded(meta.find_one({"_id": "files"}))
        if found and found.get("version", 0) > SCHEMA_VERSION:
            raise StorageError(
                f"The database was written by a newer labbot (schema"
                f" {found['version']}); upgrade labbot."
            )
        await guarded(
            meta.update_one({"_id": "files"}, {"$set": {"version": SCHEMA_VERSION}}, upsert=True)
        )

    async def close(self) -> None:
        """Nothing to close: the client belongs to whoever made it."""

    async def _records(
        self, query: dict[str, Any], *, order: int = ASCENDING, limit: int = 0
    ) -> list[FileRecord]:
        async with reading():
            cursor = self.files.find(query).sort([("created_us", order), ("_id", order)])
            if limit:
                cursor = cursor.limit(limit)
            return [from_document(doc) async for doc in cursor]

    async def add(
        self, record: FileRecord, *, max_files: int, max_bytes: int, now: datetime
    ) -> list[FileRecord]:
        """Insert, then evict past the limits (made files first, then uploads, each oldest
        first)."""
        try:
            await self.files.insert_one(to_document(record))
        except DuplicateKeyError as exc:  # _id is the file id: unique, atomically
            raise FileIdTaken(record.id) from exc
        except PyMongoError as exc:
            raise translate(exc) from exc
        try:
            return await self._evict(record, max_files=max_files, max_bytes=max_bytes, now=now)
        except BaseException:
            # The caller drops the blob when add fails: drop the record too.
            await guarded(self.files.delete_one({"_id": record.id}))
            raise

    async def _evict(
        self, record: FileRecord, *, max_files: int, max_bytes: int, now: datetime
    ) -> list[FileRecord]:
        rows = await self._records({"user": record.user, **live(now)})
        evicted = evictions(rows, record, max_files=max_files, max_bytes=max_bytes)
        if evicted:
            await guarded(self.files.delete_many({"_id": {"$in": [r.id for r in evicted]}}))
        return evicted

    async def known(self, file_id: str) -> bool:
        """True if any record, live or expired, has this id."""
        return await guarded(self.files.find_one({"_id": file_id}, {"_id": 1})) is not None

    async def get(self, user: str, file_id: str, *, now: datetime) -> FileRecord:
        """The live record owned by ``user``, or FileNotFound."""
        doc = await guarded(self.files.find_one({"_id": file_id, "user": user, **live(now)}))
        if doc is None:
            raise FileNotFound(file_id)
        return from_document(doc)

    async def list(self, user: str, *, now: datetime) -> list[FileRecord]:
        """The user's live records, newest first."""
        return await self._records({"user": user, **live(now)}, order=DESCENDING)

    async def delete(self, user: str, file_id: str, *, now: datetime) -> FileRecord:
        """Remove a live record owned by ``user`` and return it, or FileNotFound."""
        doc = await guarded(
            self.files.find_one_and_delete({"_id": file_id, "user": user, **live(now)})
        )
        if doc is None:
            raise FileNotFound(file_id)
        return from_document(doc)

    async def set_preview(self, user: str, file_id: str, preview: str) -> None:
        """Store the schema preview of a file."""
        await guarded(
            self.files.update_one({"_id": file_id, "user": user}, {"$set": {"preview": preview}})
        )

    async def take_expired(self, *, now: datetime, limit: int) -> builtins.list[FileRecord]:
        """Remove up to ``limit`` expired records, oldest expiry first, and return them."""
        async with reading():
            cursor = (
                self.files.find({"expires_us": {"$ne": None, "$lte": to_us(now)}})
                .sort([("expires_us", ASCENDING), ("_id", ASCENDING)])
                .limit(limit)
            )
            records = [from_document(doc) async for doc in cursor]
        if records:
            await guarded(self.files.delete_many({"_id": {"$in": [r.id for r in records]}}))
        return records

    async def file_ids(self) -> set[str]:
        """Every record's id."""
        async with reading():
            return {doc["_id"] async for doc in self.files.find({}, {"_id": 1})}

    async def forget(self, file_ids: Iterable[str]) -> int:
        """Remove these records whatever their state."""
        result = await guarded(self.files.delete_many({"_id": {"$in": list(file_ids)}}))
        return result.deleted_count
