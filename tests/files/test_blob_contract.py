"""The BlobStore contract: a local folder, memory and a real S3 server (SeaweedFS) behave alike."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from labbot.config import load_settings
from labbot.errors import FileTooLarge, StorageError
from labbot.files import FileStore, Limits, SqliteMetadataStore
from labbot.files.blobs import BlobStore, LocalBlobStore
from labbot.files.cache import BlobCache
from labbot.files.names import new_file_id
from labbot.files.objects import ObjectBlobStore, open_blob_store
from tests.servers import S3

MIB = 1024 * 1024


@pytest.fixture(params=["local", "memory", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path / "blobs")
    elif request.param == "memory":
        store = ObjectBlobStore.from_url("memory://")
    else:
        server: S3 = request.getfixturevalue("s3_server")
        env = server.env(prefix=f"contract-{new_file_id()}")
        store = open_blob_store(load_settings(LABBOT_DATA_DIR=tmp_path, **env))
    await store.start()
    yield store
    await store.close()


async def put(blobs: BlobStore, user: str, data: bytes, chunk: int = MIB) -> tuple[str, str]:
    file_id = new_file_id()
    writer = await blobs.writer(user, file_id, head_bytes=16)
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.commit()
    assert writer.size == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    assert writer.head == data[:16]
    return file_id, writer.sha256


async def read(blobs: BlobStore, user: str, file_id: str) -> bytes:
    return b"".join([c async for c in blobs.read(user, file_id)])


async def test_round_trip_small_large_and_empty(blobs: BlobStore) -> None:
    big = os.urandom(3 * MIB) * 7  # 21 MiB: several multipart parts
    for data in (b"a,b\n1,2\n", big, b""):
        file_id, _ = await put(blobs, "alice", data)
        assert await read(blobs, "alice", file_id) == data


async def test_abort_leaves_nothing(blobs: BlobStore) -> None:
    file_id = new_file_id()
    writer = await blobs.writer("alice", file_id, head_bytes=16)
    await writer.write(os.urandom(MIB))
    await writer.write(os.urandom(MIB))
    await writer.abort()
    await writer.abort()  # twice is fine
    with pytest.raises(FileNotFoundError):
        await read(blobs, "alice", file_id)
    found, _ = await blobs.scan()
    assert file_id not in {b.file_id for b in found}


async def test_missing_blob_is_file_not_found(blobs: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        await read(blobs, "alice", new_file_id())


async def test_delete_scan_and_remove(blobs: BlobStore) -> None:
    a, _ = await put(blobs, "alice", b"one")
    b, _ = await put(blobs, "bob", b"two")
    c, _ = await put(blobs, "bob", b"three")
    found, partial = await blobs.scan()
    assert {(x.user, x.file_id) for x in found} >= {("alice", a), ("bob", b), ("bob", c)}
    assert all(x.age < 60 for x in found)
    await blobs.delete("alice", a)
    await blobs.delete("alice", a)  # already gone: fine
    await blobs.delete_many([("bob", b), ("bob", new_file_id())])
    await blobs.remove([x for x in found if x.file_id == c])
    found, _ = await blobs.scan()
    assert not {a, b, c} & {x.file_id for x in found}


async def test_users_do_not_share_keys(blobs: BlobStore) -> None:
    file_id, _ = await put(blobs, "alice", b"secret")
    with pytest.raises(FileNotFoundError):
        await read(blobs, "mallory", file_id)


async def test_file_store_rules_hold_on_every_blob_store(blobs: BlobStore, tmp_path: Path) -> None:
    limits = Limits(max_files=2, max_file_bytes=2 * MIB, max_total_bytes=10 * MIB, lifetime=None)
    store = FileStore(SqliteMetadataStore(tmp_path / "meta.sqlite3"), blobs, limits)
    await store.start()
    try:

        async def chunks(data: bytes) -> AsyncIterator[bytes]:
            for start in range(0, len(data), 256 * 1024):
                yield data[start : start + 256 * 1024]

        first = (await store.save("u", "a.csv", chunks(b"x,y\n1,2\n"))).record
        await store.save("u", "b.json", chunks(b'{"a": 1}'))
        third = await store.save("u", "c.txt", chunks(b"hello"))
        assert [r.id for r in third.evicted] == [first.id]
        with pytest.raises(FileNotFoundError):
            await read(blobs, "u", first.id)
        with pytest.raises(FileTooLarge):
            await store.save("u", "big.bin", chunks(os.urandom(3 * MIB)))
        assert {r.name for r in await store.list("u")} == {"b.json", "c.txt"}
        assert await store.read_bytes("u", third.record.id) == b"hello"
        assert third.record.kind == "text"
        # A blob stored elsewhere (a worker's output) is registered under the same limits.
        file_id, digest = await put(blobs, "u", b"a,b\n")
        registered = await store.register(
            "u", "out.csv", file_id, kind="csv", size=4, sha256=digest
        )
        assert registered.evicted and registered.record.id == file_id
        with pytest.raises(FileTooLarge):
            big_id, big_digest = await put(blobs, "u", b"z")
            await store.register(
                "u", "huge", big_id, kind="binary", size=3 * MIB, sha256=big_digest
            )
        with pytest.raises(FileNotFoundError):
            await read(blobs, "u", big_id)  # refused: its blob went too
        assert (await store.reconcile()).missing_blobs == 0
    finally:
        await store.close()


async def test_cache_fetches_once_checks_sha256_and_stays_bounded(
    blobs: BlobStore, tmp_path: Path
) -> None:
    cache = BlobCache(blobs, tmp_path / "cache", max_bytes=3 * MIB)
    ids = [await put(blobs, "u", os.urandom(MIB)) for _ in range(4)]
    paths = []
    for file_id, digest in ids:
        paths.append(await cache.path("u", file_id, digest))
        assert paths[-1].read_bytes() == await read(blobs, "u", file_id)
    assert await cache.path("u", *ids[-1]) == paths[-1]  # a second ask is served from the cache
    if isinstance(blobs, LocalBlobStore):
        assert paths[0] == blobs.path("u", ids[0][0])  # local blobs are used in place
        return
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 3 and ids[0][0] not in cached  # least recently used went first
    bad_id, _ = await put(blobs, "u", b"tampered")
    with pytest.raises(StorageError):
        await cache.path("u", bad_id, "0" * 64)
    assert not (tmp_path / "cache" / bad_id).exists()
    assert not list((tmp_path / "cache").glob("*.part"))


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak-RSS count here


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def test_a_large_upload_to_s3_keeps_memory_flat(s3_server: S3, tmp_path: Path) -> None:
    settings = load_settings(LABBOT_DATA_DIR=tmp_path, **s3_server.env(prefix="flat"))
    blobs = open_blob_store(settings)
    block = os.urandom(MIB)
    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    writer = await blobs.writer("u", new_file_id(), head_bytes=16)
    for _ in range(160):  # 160 MiB, a chunk at a time as an upload arrives
        await writer.write(block)
    await writer.commit()
    grown_mib = (_rss_kib("VmHWM") - before) / 1024
    assert writer.size == 160 * MIB
    assert grown_mib < 64, f"peak memory grew {grown_mib:.0f} MiB for a 160 MiB upload"
