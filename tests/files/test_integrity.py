"""Files read back as they were stored: a blob changed where it is stored (anyone with the
object store's keys can overwrite it) is refused with a clear error, never served; a blob
registered by someone else (a worker machine) counts at its real size, never its claimed one.
On a local folder, memory and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import obstore
import pytest

from labbot.app import blob_store
from labbot.config import load_settings
from labbot.errors import FileTooLarge, StorageError
from labbot.files import FileStore, Limits, SqliteMetadataStore
from labbot.files.blobs import BlobStore, LocalBlobStore
from labbot.files.cache import BlobCache
from labbot.files.names import new_file_id
from labbot.files.objects import ObjectBlobStore
from tests.conftest import chunks_of
from tests.servers import S3

MIB = 1024 * 1024
ORIGINAL = b"name,pay\nann,100\nbob,120\n"


class Backend:
    """A blob store, and a way to overwrite one of its blobs behind its back (the local
    folder's file; the object itself, with a client of its own holding the same keys)."""

    def __init__(self, blobs: BlobStore, overwrite: object) -> None:
        self.blobs = blobs
        self._overwrite = overwrite

    async def overwrite(self, user: str, file_id: str, data: bytes) -> None:
        await self._overwrite(user, file_id, data)  # type: ignore[operator]


@pytest.fixture(params=["local", "memory", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "local":
        blobs: BlobStore = LocalBlobStore(tmp_path / "blobs")

        async def overwrite(user: str, file_id: str, data: bytes) -> None:
            assert isinstance(blobs, LocalBlobStore)
            blobs.path(user, file_id).parent.mkdir(mode=0o700, exist_ok=True)
            blobs.path(user, file_id).write_bytes(data)

    elif request.param == "memory":
        blobs = ObjectBlobStore.from_url("memory://")

        async def overwrite(user: str, file_id: str, data: bytes) -> None:
            assert isinstance(blobs, ObjectBlobStore)
            await obstore.put_async(blobs.store, blobs.key(user, file_id), data)

    else:
        server: S3 = request.getfixturevalue("s3_server")
        prefix = f"integrity-{new_file_id()}"
        blobs = blob_store(load_settings(LABBOT_DATA_DIR=tmp_path, **server.env(prefix=prefix)))
        intruder = server.bucket_store()  # a worker machine's keys are the bot's keys

        async def overwrite(user: str, file_id: str, data: bytes) -> None:
            await obstore.put_async(intruder, f"{prefix}/{user}/{file_id}", data)

    await blobs.start()
    yield Backend(blobs, overwrite)
    await blobs.close()


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[FileStore]:
    limits = Limits(max_files=10, max_file_bytes=2 * MIB, max_total_bytes=4 * MIB, lifetime=None)
    store = FileStore(SqliteMetadataStore(tmp_path / "meta.sqlite3"), backend.blobs, limits)
    await store.start()
    yield store
    await store.close()


async def streamed(store: FileStore, user: str, file_id: str) -> tuple[bytes, Exception | None]:
    """What ``store.read`` yields before it ends, and the error it ends with."""
    got = b""
    try:
        async for chunk in store.read(user, file_id):
            got += chunk
    except Exception as exc:
        return got, exc
    return got, None


TAMPERED = {
    "same length": b"name,pay\nann,999\nbob,120\n",
    "longer": b"name,pay\nann,999999\n" + b"Z" * (3 * MIB),
    "shorter": b"name,pay\n",
    "empty": b"",
}


@pytest.mark.parametrize("change", sorted(TAMPERED))
async def test_a_changed_blob_is_refused_never_served(
    change: str, backend: Backend, store: FileStore
) -> None:
    """The blob is overwritten where it is stored: reading it (whole or streamed) ends with
    "the file … is damaged; it was changed where it is stored", never the changed bytes, and
    never more than the recorded size is read."""
    record = (await store.save("victim", "salaries.csv", chunks_of(ORIGINAL))).record
    assert await store.read_bytes("victim", record.id) == ORIGINAL
    await backend.overwrite("victim", record.id, TAMPERED[change])
    with pytest.raises(StorageError) as caught:
        await store.read_bytes("victim", record.id)
    assert str(caught.value).startswith(
        "The file salaries.csv is damaged; it was changed where it is stored."
    )
    got, error = await streamed(store, "victim", record.id)
    assert isinstance(error, StorageError), error
    assert len(got) < record.size  # no complete copy, and nothing past the recorded size


async def test_a_large_file_streams_checked(backend: Backend, store: FileStore) -> None:
    """A file of several chunks reads back whole and unchanged; changed in its middle, it is
    refused before its last chunk."""
    data = os.urandom(2 * MIB - 3) + b"end"
    record = (await store.save("u", "blob.bin", chunks_of(data))).record
    assert await store.read_bytes("u", record.id) == data
    flipped = bytes([data[MIB] ^ 0xFF])  # always another byte (a fixed b"X" may be the same)
    await backend.overwrite("u", record.id, data[:MIB] + flipped + data[MIB + 1 :])
    got, error = await streamed(store, "u", record.id)
    assert isinstance(error, StorageError) and not got.endswith(b"end")


async def test_register_counts_the_real_size(backend: Backend, store: FileStore) -> None:
    """A blob put by a worker machine that says it is 10 bytes but holds 3 MiB is not
    registered (the limit is 2 MiB) and its blob is removed; an honest claim is registered; a
    claim for a blob that was never stored is a clear error."""
    file_id = new_file_id()
    await backend.overwrite("u9", file_id, b"Z" * (3 * MIB))
    with pytest.raises(StorageError, match="not the size"):
        await store.register("u9", "tiny.csv", file_id, kind="csv", size=10, sha256="0" * 64)
    assert await store.list("u9") == []
    with pytest.raises(FileNotFoundError):
        await backend.blobs.size("u9", file_id)  # removed
    honest_id = new_file_id()
    await backend.overwrite("u9", honest_id, b"a,b\n1,2\n")
    digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    saved = await store.register("u9", "out.csv", honest_id, kind="csv", size=8, sha256=digest)
    assert saved.total_bytes == 8 and await store.read_bytes("u9", honest_id) == b"a,b\n1,2\n"
    with pytest.raises(StorageError, match="not stored"):
        await store.register("u9", "x.csv", new_file_id(), kind="csv", size=8, sha256=digest)
    big_id = new_file_id()
    await backend.overwrite("u9", big_id, b"Z" * (3 * MIB))
    with pytest.raises(FileTooLarge):
        await store.register("u9", "big.csv", big_id, kind="csv", size=3 * MIB, sha256=digest)


async def test_the_cache_fetches_no_more_than_the_recorded_size(
    backend: Backend, tmp_path: Path
) -> None:
    """A worker's cache refuses a blob longer than the request says, without keeping it."""
    if isinstance(backend.blobs, LocalBlobStore):
        pytest.skip("local blobs are used in place, never fetched")
    file_id = new_file_id()
    await backend.overwrite("u", file_id, b"Z" * (3 * MIB))
    cache = BlobCache(backend.blobs, tmp_path / "cache", max_bytes=10 * MIB)
    with pytest.raises(StorageError, match="damaged"):
        await cache.path("u", file_id, hashlib.sha256(b"small").hexdigest(), 5)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
