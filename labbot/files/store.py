"""FileStore: the rules of users' files (ownership, limits, expiry, eviction, sweep, reconcile)."""

from __future__ import annotations

import asyncio
import errno
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from labbot.config import Settings
from labbot.errors import FileError, FileIdTaken, FileNotFound, FileTooLarge, StorageError
from labbot.files import kinds
from labbot.files.blobs import BlobStore, Writer, check_blob, check_user
from labbot.files.integrity import verified
from labbot.files.meta.base import FileRecord, MetadataStore, Source
from labbot.files.names import clean_filename, new_file_id
from labbot.files.quota import Reservation, Reservations

log = logging.getLogger(__name__)
T = TypeVar("T")
Listener = Callable[[list[FileRecord]], Awaitable[None]]

SWEEP_BATCH = 1000
RECONCILE_EVERY = 6  # sweeper passes between reconciles (hourly at the default interval)
RECONCILE_MIN_AGE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Limits:
    """A user's limits: file count, bytes per file, bytes in all, and file lifetime."""

    max_files: int
    max_file_bytes: int
    max_total_bytes: int
    lifetime: timedelta | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits the settings describe."""
        return cls(
            max_files=settings.MAX_FILES_PER_USER,
            max_file_bytes=settings.max_file_bytes,
            max_total_bytes=settings.max_storage_bytes,
            lifetime=settings.file_lifetime,
        )


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save did: the new record, what it pushed out, and the user's totals after it."""

    record: FileRecord
    evicted: list[FileRecord]
    file_count: int
    total_bytes: int
    limits: Limits


@dataclass(frozen=True, slots=True)
class SweepResult:
    """How many expired files a sweep removed, and their bytes."""

    files: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What reconcile removed: blobs with no record, partial writes, records with no blob."""

    orphan_blobs: int = 0
    partial_files: int = 0
    missing_blobs: int = 0


def files_among(records: list[FileRecord]) -> list[FileRecord]:
    """The files among a user's records, in their order (checkpoint pieces are not)."""
    return [r for r in records if r.source != "checkpoint"]


class FileStore:
    """Every user's files: one id each, one set of limits, one clean-up.

    store = FileStore(meta, blobs, Limits.from_settings(settings))
    await store.start()
    result = await store.save("1234", "sales.csv", file_chunks(path))
    """

    def __init__(
        self,
        meta: MetadataStore,
        blobs: BlobStore,
        limits: Limits,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.limits = limits
        self.clock = clock
        # Per-user: so created_at order is commit order and "oldest" means the same to both.
        self._user_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.reservations = Reservations()  # the quota while files stream in
        self._listeners: list[Listener] = []

    def on_removed(self, listener: Listener) -> None:
        """Call ``listener`` with the records of files this store removes (deleted, evicted,
        expired), after their record and bytes are gone, so caches drop their copies. Other
        processes' removals are not seen here: caches check a file is live before serving."""
        self._listeners.append(listener)

    async def _removed(self, records: list[FileRecord]) -> None:
        if not records:
            return
        for listener in self._listeners:
            try:
                await listener(records)
            except Exception:  # a cache's failure never undoes or fails a delete
                log.exception("file.listener_failed")

    def _user_lock(self, user: str) -> asyncio.Lock:
        lock = self._user_locks.get(user)
        if lock is None:
            lock = self._user_locks[user] = asyncio.Lock()
        return lock

    async def start(self) -> None:
        """Open the metadata store and the blob folders."""
        await self.blobs.start()
        await self.meta.start()

    async def close(self) -> None:
        """Close the metadata store and the blob store."""
        await self.meta.close()
        await self.blobs.close()

    async def save(
        self,
        user: str,
        filename: str | None,
        stream: AsyncIterable[bytes],
        *,
        source: Source = "upload",
        max_bytes: int | None = None,
    ) -> SaveResult:
        """Stream a file into the user's store under a new id, evicting the oldest past the limits.
        ``max_bytes`` replaces the per-file limit (a checkpoint piece has its own).

        :raises FileTooLarge: over the per-file limit (stopped while streaming) or the quota.
        :raises QuotaInUse: the user's other saves, still streaming, hold the whole quota.
        :raises FileError: an empty upload.
        :raises StorageError: the disk or database failed; nothing was kept.
        """
        check_user(user)
        name = clean_filename(filename)
        file_id = new_file_id()
        writer = await self._disk(self.blobs.writer(user, file_id, head_bytes=kinds.HEAD_BYTES))
        reservation = self.reservations.open(user)
        try:
            try:
                await self._stream(writer, stream, reservation, max_bytes)
                if writer.size == 0 and source == "upload":
                    raise FileError(
                        "The file is empty (0 bytes); there is nothing to store.",
                        hint="Check that it was saved completely, then upload it again.",
                    )
                await self._disk(writer.commit())
            except BaseException:
                await asyncio.shield(writer.abort())
                raise
            try:
                kind = (
                    kinds.BINARY  # a pickle only the sandbox reads: never sniffed here
                    if source == "checkpoint"
                    else await asyncio.to_thread(
                        kinds.detect_kind, name, writer.head, writer.local_path
                    )
                )
            except BaseException:
                await asyncio.shield(self.blobs.delete(user, file_id))
                raise
            return await self._record(
                user, name, file_id, kind.name, writer.size, writer.sha256, source=source
            )
        finally:  # recorded (the metadata counts it now), or gone
            reservation.release()

    async def _stream(
        self,
        writer: Writer,
        stream: AsyncIterable[bytes],
        reservation: Reservation,
        max_bytes: int | None = None,
    ) -> None:
        """Write the stream; each chunk is reserved against the quota before it is written."""
        limits = self.limits
        per_file = limits.max_file_bytes if max_bytes is None else max_bytes
        cap = min(per_file, limits.max_total_bytes)
        async for chunk in stream:
            if writer.size + len(chunk) > cap:
                if cap == per_file:
                    raise FileTooLarge(limit_bytes=cap)
                raise FileTooLarge(limit_bytes=cap, what="your storage quota")
            await reservation.take(len(chunk), limit=limits.max_total_bytes)
            await self._disk(writer.write(chunk))

    async def register(
        self,
        user: str,
        filename: str,
        file_id: str,
        *,
        kind: str,
        size: int,
        sha256: str,
        source: Source = "generated",
        max_bytes: int | None = None,
    ) -> SaveResult:
        """Record a blob someone else already stored under a fresh ``file_id`` (a worker
        machine's output), under the same limits and eviction as ``save`` (``max_bytes``
        replaces the per-file limit, as there). The size is the stored object's, checked
        against the claim; the sha256 is checked at every read. A fresh blob is deleted if it
        cannot be kept; an id that any record holds already (a worker claiming an existing file
        as its output) is refused and nothing is touched.

        :raises FileTooLarge: over the per-file limit or the quota.
        :raises FileIdTaken: a record of any user has this id; no record or blob was touched.
        :raises StorageError: no such blob, or one of another size than claimed.
        :raises InvalidFileId: ``file_id`` is not one labbot gives out (nothing is touched).
        """
        check_blob(user, file_id)  # before anything touches a blob: never another's path
        name = clean_filename(filename)
        limits = self.limits
        if await self.meta.known(file_id):
            log.warning("file.register_taken_id user=%s id=%s", user, file_id)
            raise FileIdTaken(file_id)
        # From here the blob is the worker's fresh upload, which no record names: deleting
        # it on a refusal removes only what the worker made (``add`` re-checks the id
        # atomically, so a record added meanwhile is never the one whose bytes go).
        per_file = limits.max_file_bytes if max_bytes is None else max_bytes
        try:
            if size > per_file:
                raise FileTooLarge(limit_bytes=per_file)
            if size > limits.max_total_bytes:
                raise FileTooLarge(limit_bytes=limits.max_total_bytes, what="your storage quota")
            kinds.kind_by_name(kind)
            await self._check_size(user, file_id, name, size)  # the claim, checked
        except BaseException:
            await asyncio.shield(self.blobs.delete(user, file_id))
            raise
        return await self._record(user, name, file_id, kind, size, sha256, source=source)

    async def _check_size(self, user: str, file_id: str, name: str, size: int) -> None:
        """The stored blob is ``size`` bytes, as its writer claims (a claim alone could slip a
        large file past the limits and the quota)."""
        try:
            stored = await self.blobs.size(user, file_id)
        except FileNotFoundError:
            raise StorageError(f"{name} was not kept: it was not stored.") from None
        except OSError as exc:
            log.error("file.stat_failed user=%s id=%s error=%s", user, file_id, type(exc).__name__)
            raise StorageError(f"{name} was not kept: the file store could not be read.") from exc
        if stored != size:
            log.warning(
                "file.size_mismatch user=%s id=%s claimed=%d stored=%d", user, file_id, size, stored
            )
            raise StorageError(
                f"{name} was not kept: the stored copy is not the size the worker machine reported."
            )

    async def _record(
        self,
        user: str,
        name: str,
        file_id: str,
        kind: str,
        size: int,
        sha256: str,
        *,
        source: Source,
    ) -> SaveResult:
        """Write the metadata of a stored blob, evicting the oldest past the limits."""
        limits = self.limits
        add: asyncio.Future[list[FileRecord]] | None = None
        try:
            async with self._user_lock(user):
                now = self.clock()
                record = FileRecord(
                    id=file_id,
                    user=user,
                    name=name,
                    kind=kind,
                    size=size,
                    sha256=sha256,
                    source=source,
                    created_at=now,
                    expires_at=now + limits.lifetime if limits.lifetime else None,
                )
                add = asyncio.ensure_future(
                    self.meta.add(
                        record,
                        max_files=limits.max_files,
                        max_bytes=limits.max_total_bytes,
                        now=now,
                    )
                )
                evicted = await asyncio.shield(add)
        except FileIdTaken:
            raise  # the id's blob is another record's: never touched
        except BaseException:
            # A cancelled save waits for its transaction, so disk and metadata agree either way.
            if add is not None:
                await asyncio.wait([add])
            if add is not None and not add.cancelled() and add.exception() is None:
                await asyncio.shield(self.blobs.delete_many([(r.user, r.id) for r in add.result()]))
                await asyncio.shield(self._removed(add.result()))
            elif add is None or add.cancelled() or not isinstance(add.exception(), FileIdTaken):
                await asyncio.shield(self.blobs.delete(user, file_id))
            raise
        await self.blobs.delete_many([(r.user, r.id) for r in evicted])
        await self._removed(evicted)
        live = await self.meta.list(user, now=now)
        files = [r for r in live if r.source != "checkpoint"]
        log.info(
            "file.saved user=%s id=%s kind=%s size=%d source=%s evicted=%d",
            user,
            file_id,
            kind,
            size,
            source,
            len(evicted),
        )
        return SaveResult(record, evicted, len(files), sum(r.size for r in live), limits)

    async def _disk(self, operation: Awaitable[T]) -> T:
        """Await a disk operation, turning OSError into a StorageError the user can read."""
        try:
            return await operation
        except OSError as exc:
            log.error("file.disk_error errno=%s", errno.errorcode.get(exc.errno or 0, exc.errno))
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(
                    "The server's disk is full; the file was not saved.",
                    hint="Tell the bot's operator.",
                ) from exc
            raise StorageError("The server could not write the file; it was not saved.") from exc

    async def records(self, user: str) -> list[FileRecord]:
        """Every live record of the user, checkpoint pieces included (they count in the
        quota), newest first."""
        return await self.meta.list(check_user(user), now=self.clock())

    async def list(self, user: str) -> list[FileRecord]:
        """The user's live files, newest first (the pieces of session checkpoints are not
        files: never listed)."""
        return files_among(await self.records(user))

    async def get(self, user: str, file_id: str) -> FileRecord:
        """A live file of this user, or FileNotFound (also for another user's id, and for a
        checkpoint piece: no command or link ever serves one)."""
        record = await self.meta.get(check_user(user), file_id, now=self.clock())
        if record.source == "checkpoint":
            raise FileNotFound(file_id)
        return record

    async def read(self, user: str, file_id: str) -> AsyncGenerator[bytes, None]:
        """Stream the bytes of a live file owned by ``user``, checked against the size and
        sha256 recorded when it was stored (never more than its recorded size is read).

        :raises StorageError: the stored bytes are not the recorded ones (changed where they
            are stored); the last chunk is withheld, so no complete copy is ever served.
        """
        record = await self.get(user, file_id)
        chunks = verified(
            self.blobs.read(user, file_id),
            size=record.size,
            sha256=record.sha256,
            name=record.name,
            where=f"user={user} id={file_id}",
        )
        async with aclosing(chunks) as checked:
            async for chunk in checked:
                yield chunk

    async def read_bytes(self, user: str, file_id: str) -> bytes:
        """A live file's whole contents, checked like ``read`` (for files small enough to hold,
        e.g. to attach)."""
        return b"".join([chunk async for chunk in self.read(user, file_id)])

    async def set_preview(self, user: str, file_id: str, preview: str) -> None:
        """Keep a short schema preview with the file's metadata (computed once, in the sandbox)."""
        await self.meta.set_preview(check_user(user), file_id, preview)

    def path(self, record: FileRecord) -> Path | None:
        """The blob of a record on local disk, or None when blobs live in object storage."""
        return self.blobs.local_path(record.user, record.id)

    async def delete(self, user: str, file_id: str) -> FileRecord:
        """Delete a live file of this user (record first, then bytes)."""
        record = await self.meta.delete(check_user(user), file_id, now=self.clock())
        await self.blobs.delete(user, file_id)
        log.info("file.deleted user=%s id=%s", user, file_id)
        await self._removed([record])
        return record

    async def delete_pieces(self, user: str, file_ids: Iterable[str]) -> None:
        """Delete checkpoint pieces of this user (record first, then bytes); gone ones, and
        anything that is not a piece, are skipped."""
        gone = []
        now = self.clock()
        for file_id in file_ids:
            try:
                if (await self.meta.get(check_user(user), file_id, now=now)).source == "checkpoint":
                    await self.meta.delete(user, file_id, now=now)
                    gone.append((user, file_id))
            except FileNotFound:
                continue
        await self.blobs.delete_many(gone)

    async def sweep(self) -> SweepResult:
        """Delete every expired file, record and bytes together, in batches."""
        files = size = 0
        while batch := await self.meta.take_expired(now=self.clock(), limit=SWEEP_BATCH):
            await self.blobs.delete_many([(r.user, r.id) for r in batch])
            await self._removed(batch)
            files += len(batch)
            size += sum(r.size for r in batch)
        if files:
            log.info("file.sweep files=%d bytes=%d", files, size)
        return SweepResult(files, size)

    async def reconcile(self, *, min_age: timedelta = RECONCILE_MIN_AGE) -> ReconcileResult:
        """Make disk and metadata agree after a crash: drop blobs with no record, stale partial
        writes, and records whose blob is gone.

        Blobs younger than ``min_age`` are left alone: another process may be between writing
        a blob and recording it.
        """
        # Ids first: a record is written only after its blob, so every id read here had its
        # blob on disk before the scan, unless the blob is really gone.
        known = await self.meta.file_ids()
        blobs, partial = await self.blobs.scan()
        grace = min_age.total_seconds()
        orphans = [b for b in blobs if b.file_id not in known and b.age >= grace]
        stale = [p for p in partial if p.age >= grace]
        on_disk = {b.file_id for b in blobs}
        missing = known - on_disk
        await self.blobs.remove(orphans + stale)
        forgotten = await self.meta.forget(missing) if missing else 0
        result = ReconcileResult(len(orphans), len(stale), forgotten)
        if orphans or stale or forgotten:
            log.warning(
                "file.reconcile orphan_blobs=%d partial=%d missing_blobs=%d",
                len(orphans),
                len(stale),
                forgotten,
            )
        return result

    async def run_sweeper(self, interval: float, *, swept: asyncio.Event | None = None) -> None:
        """Reconcile once, then sweep every ``interval`` seconds until cancelled.

        ``swept`` is set after each pass (for tests and health checks). A failing pass is
        logged and retried at the next interval; it never ends the loop.
        """
        passes = 0
        while True:
            if passes % RECONCILE_EVERY == 0:  # at start, then now and then
                await self._guarded(self.reconcile())
            passes += 1
            await self._guarded(self.sweep())
            if swept is not None:
                swept.set()
            await asyncio.sleep(interval)

    async def _guarded(self, operation: Awaitable[object]) -> None:
        try:
            await operation
        except (StorageError, OSError):
            log.exception("file.sweeper_failed")
