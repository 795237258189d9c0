"""The MetadataStore contract; every backend must pass it (SQLite now, MongoDB later)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labbot.errors import FileIdTaken, FileNotFound, StorageError
from labbot.files import FileRecord, MetadataStore, SqliteMetadataStore
from labbot.files.meta import Source
from labbot.files.meta.mongo import MongoMetadataStore
from tests.backends import BACKENDS, mongo_database

NOW = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    async with mongo_database(request.param) as database:
        if database is None:
            store: MetadataStore = SqliteMetadataStore(tmp_path / "meta.sqlite3")
        else:
            # No TTL index: its monitor follows the real clock, and NOW is fixed.
            store = MongoMetadataStore(database, ttl_grace=None)
        await store.start()
        await store.start()  # idempotent
        yield store
        await store.close()


def rec(
    n: int,
    user: str = "u",
    *,
    size: int = 1,
    expires: timedelta | None = None,
    created: datetime = NOW,
    source: Source = "upload",
) -> FileRecord:
    return FileRecord(
        id=f"id{n:04d}",
        user=user,
        name=f"f{n}.csv",
        kind="csv",
        size=size,
        sha256="ab" * 32,
        source=source,
        created_at=created + timedelta(microseconds=n),
        expires_at=None if expires is None else created + expires,
        preview=None,
    )


async def add(
    meta: MetadataStore, record: FileRecord, max_files: int = 100, max_bytes: int = 10**9
) -> list[FileRecord]:
    return await meta.add(record, max_files=max_files, max_bytes=max_bytes, now=NOW)


async def test_round_trip_keeps_microseconds_and_utc(meta: MetadataStore) -> None:
    """A record comes back equal, with tz-aware UTC times to the microsecond."""
    record = rec(1, expires=timedelta(hours=1, microseconds=7))
    await add(meta, record)
    got = await meta.get("u", record.id, now=NOW)
    assert got == record
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)


async def test_none_expiry_means_never(meta: MetadataStore) -> None:
    """expires_at=None is live at any time."""
    await add(meta, rec(1))
    far = NOW + timedelta(days=365 * 50)
    assert [r.id for r in await meta.list("u", now=far)] == ["id0001"]
    assert await meta.take_expired(now=far, limit=10) == []


async def test_list_is_newest_first_and_per_user(meta: MetadataStore) -> None:
    """list returns only the user's live records, newest first."""
    for n in range(3):
        await add(meta, rec(n))
    await add(meta, rec(9, user="other"))
    assert [r.id for r in await meta.list("u", now=NOW)] == ["id0002", "id0001", "id0000"]


async def test_missing_and_foreign_ids_raise_file_not_found(meta: MetadataStore) -> None:
    """get and delete raise FileNotFound for a missing id and for another user's id."""
    await add(meta, rec(1, user="alice"))
    for user, file_id in [("alice", "nope"), ("bob", "id0001")]:
        with pytest.raises(FileNotFound):
            await meta.get(user, file_id, now=NOW)
        with pytest.raises(FileNotFound):
            await meta.delete(user, file_id, now=NOW)
    assert (await meta.delete("alice", "id0001", now=NOW)).id == "id0001"
    assert await meta.file_ids() == set()


async def test_expired_is_invisible_and_taken_oldest_first(meta: MetadataStore) -> None:
    """Expired records vanish from get/list/delete and take_expired returns them in order."""
    await add(meta, rec(1, expires=timedelta(hours=2)))
    await add(meta, rec(2, expires=timedelta(hours=1)))
    await add(meta, rec(3, expires=timedelta(hours=5)))
    later = NOW + timedelta(hours=3)
    assert [r.id for r in await meta.list("u", now=later)] == ["id0003"]
    with pytest.raises(FileNotFound):
        await meta.get("u", "id0001", now=later)
    with pytest.raises(FileNotFound):
        await meta.delete("u", "id0001", now=later)
    assert [r.id for r in await meta.take_expired(now=later, limit=1)] == ["id0002"]
    assert [r.id for r in await meta.take_expired(now=later, limit=10)] == ["id0001"]
    assert await meta.file_ids() == {"id0003"}


async def test_add_evicts_oldest_past_count_and_bytes(meta: MetadataStore) -> None:
    """add evicts the oldest live records beyond the count and byte limits, never the new one."""
    for n in range(3):
        assert await add(meta, rec(n, size=10), max_files=3) == []
    evicted = await add(meta, rec(3, size=10), max_files=3)
    assert [r.id for r in evicted] == ["id0000"]
    evicted = await add(meta, rec(4, size=25), max_files=3, max_bytes=40)
    assert [r.id for r in evicted] == ["id0001", "id0002"]
    assert [r.id for r in await meta.list("u", now=NOW)] == ["id0004", "id0003"]


async def test_duplicate_id_is_file_id_taken(meta: MetadataStore) -> None:
    """Adding an id twice (any user's, live or expired) fails as FileIdTaken (a StorageError)
    and changes nothing; ``known`` sees every state."""
    assert not await meta.known("id0001")
    await add(meta, rec(1))
    await add(meta, rec(2, expires=timedelta(seconds=-1)))
    for again in (rec(1), rec(1, user="other"), rec(2, user="other")):
        with pytest.raises(FileIdTaken) as caught:
            await add(meta, again)
        assert isinstance(caught.value, StorageError)
    assert await meta.file_ids() == {"id0001", "id0002"}
    assert [r.name for r in await meta.list("u", now=NOW)] == ["f1.csv"]
    assert await meta.list("other", now=NOW) == []
    assert await meta.known("id0001") and await meta.known("id0002")
    assert not await meta.known("id0003")


async def test_forget_removes_any_state(meta: MetadataStore) -> None:
    """forget removes live and expired records and counts them."""
    await add(meta, rec(1))
    await add(meta, rec(2, expires=timedelta(seconds=-1)))
    assert await meta.forget(["id0001", "id0002", "missing"]) == 2
    assert await meta.file_ids() == set()


async def test_sqlite_use_after_close_raises(tmp_path: Path) -> None:
    """A closed store refuses calls with a StorageError."""
    store = SqliteMetadataStore(tmp_path / "m.sqlite3")
    await store.start()
    await store.close()
    with pytest.raises(StorageError):
        await store.list("u", now=NOW)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "sqlite"])
async def test_mongo_keeps_a_ttl_backstop(backend: str) -> None:
    """By default the MongoDB store has a TTL index a day after expiry (checked on the index,
    not by waiting for the real clock)."""
    from labbot.files.meta.mongo import TTL_GRACE

    async with mongo_database(backend) as database:
        await MongoMetadataStore(database).start()
        indexes = await database["files"].index_information()
    ttl = [i for i in indexes.values() if i["key"] == [("expires_at", 1)]]
    assert ttl and ttl[0]["expireAfterSeconds"] == TTL_GRACE == 24 * 3600


async def test_files_the_code_made_go_before_uploads(meta: MetadataStore) -> None:
    """Past the limits, the oldest file the code made goes first; an upload goes only when no
    made file is left; the new file never."""
    await add(meta, rec(0))  # an upload, the oldest
    await add(meta, rec(1, source="generated"))
    await add(meta, rec(2, source="generated"))
    evicted = await add(meta, rec(3, source="generated"), max_files=3)
    assert [r.id for r in evicted] == ["id0001"]
    evicted = await add(meta, rec(4), max_files=2)
    assert [r.id for r in evicted] == ["id0002", "id0003"]
    evicted = await add(meta, rec(5), max_files=2)
    assert [r.id for r in evicted] == ["id0000"]


async def test_checkpoint_pieces_count_in_bytes_only_and_go_first(meta: MetadataStore) -> None:
    """A session's checkpoint pieces count in the user's bytes, not in the number of files;
    past the byte limit they go before any file; a new piece never pushes anything out."""
    await add(meta, rec(0, size=10))  # an upload
    await add(meta, rec(1, size=10, source="checkpoint"))
    await add(meta, rec(2, size=10, source="generated"))
    # Two files of at most two: the piece does not count, nothing goes.
    assert await add(meta, rec(3, size=10, source="checkpoint"), max_files=2) == []
    # Over the bytes: a new piece evicts nothing (the host saves one only when it fits).
    assert await add(meta, rec(4, size=10, source="checkpoint"), max_bytes=30) == []
    # A new file over the count: the made file goes, never a piece (they do not count).
    evicted = await add(meta, rec(5, size=1, source="generated"), max_files=2)
    assert [r.id for r in evicted] == ["id0002"]
    # Over the bytes: the pieces first, oldest first, until the file fits.
    evicted = await add(meta, rec(6, size=15), max_bytes=40)
    assert [r.id for r in evicted] == ["id0001", "id0003"]


async def test_sqlite_migrates_a_database_without_checkpoints(tmp_path: Path) -> None:
    """A database made before checkpoints keeps its records and takes checkpoint pieces."""
    import sqlite3

    from labbot.files.meta.sqlite import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    old = SqliteMetadataStore(path)
    await old.db.migrate(MIGRATIONS[:1])
    await add(old, rec(0))
    await old.close()
    with pytest.raises(sqlite3.IntegrityError):
        with sqlite3.connect(path) as raw:  # the old CHECK refuses the new source
            raw.execute(
                "INSERT INTO files (id, user, name, kind, size, sha256, source, created_us)"
                " VALUES ('x', 'u', 'n', 'csv', 1, 'ab', 'checkpoint', 1)"
            )
    new = SqliteMetadataStore(path)
    await new.start()
    try:
        await add(new, rec(1, source="checkpoint"))
        assert [r.id for r in await new.list("u", now=NOW)] == ["id0001", "id0000"]
    finally:
        await new.close()
