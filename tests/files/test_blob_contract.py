"""The BlobStore contract: a local folder, memory and a real S3 server (SeaweedFS) behave alike."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from labbot.app import blob_store
from labbot.config import load_settings
from labbot.errors import FileIdTaken, FileTooLarge, InvalidFileId, InvalidUser, StorageError
from labbot.files import FileStore, Limits, SqliteMetadataStore
from labbot.files.blobs import BlobStore, LocalBlobStore
from labbot.files.cache import BlobCache
from labbot.files.names import new_file_id
from labbot.files.objects import ObjectBlobStore
from tests.servers import S3

MIB = 1024 * 1024


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path / "blobs")
    elif request.param == "memory":
        store = ObjectBlobStore.from_url("memory://")
    else:
        server: S3 = request.getfixturevalue("s3_server")
        env = server.env(prefix=f"contract-{new_file_id()}")
        store = blob_store(load_settings(LABBOT_DATA_DIR=tmp_path, **env))
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
    cached = sorted(p.name for p in (tmp_path / "cache" / "u").iterdir())
    assert len(cached) == 3 and ids[0][0] not in cached  # least recently used went first
    bad_id, _ = await put(blobs, "u", b"tampered")
    with pytest.raises(StorageError):
        await cache.path("u", bad_id, "0" * 64)
    assert not (tmp_path / "cache" / "u" / bad_id).exists()
    assert not list((tmp_path / "cache").glob("**/*.part"))


async def test_cache_forgets_and_retains_by_user(blobs: BlobStore, tmp_path: Path) -> None:
    """``forget`` removes the named copies; ``retain`` removes a user's copies that are not
    named live, and never another user's."""
    cache = BlobCache(blobs, tmp_path / "cache", max_bytes=10 * MIB)
    mine = [await put(blobs, "u", os.urandom(100)) for _ in range(3)]
    theirs = await put(blobs, "v", os.urandom(100))
    paths = [await cache.path("u", *f) for f in mine] + [await cache.path("v", *theirs)]
    if isinstance(blobs, LocalBlobStore):  # no copies: the blobs are used in place
        assert await cache.retain("u", []) == 0 and all(p.exists() for p in paths)
        return
    await cache.forget([("u", mine[0][0])])
    assert [p.exists() for p in paths] == [False, True, True, True]
    assert await cache.retain("u", [mine[2][0]]) == 1
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert await cache.retain("nobody", []) == 0


def bad_ids(victim_id: str) -> list[str]:
    """File ids that are not ids: traversal, separators, other alphabets, sizes and types."""
    return [
        f"../victim/{victim_id}",
        f"..%2fvictim%2f{victim_id}",
        "..",
        "",
        f"{victim_id}/x",
        victim_id.upper(),
        victim_id + "\n",
        victim_id[:-1] + "1",  # base32 has no 1
        victim_id + "a",
        42,  # type: ignore[list-item]
    ]


async def refuses(error: type[Exception], make: Callable[[], object]) -> None:
    """The call ``make`` (returning a value, an awaitable or an async iterator) fails with
    ``error`` before it touches anything."""
    with pytest.raises(error):
        operation = make()
        if hasattr(operation, "__aiter__"):
            async for _ in operation:  # type: ignore[attr-defined]
                pass
        elif hasattr(operation, "__await__"):
            await operation  # type: ignore[misc]


async def test_malformed_ids_and_users_never_reach_a_path_or_key(
    blobs: BlobStore, tmp_path: Path
) -> None:
    """Every way in (write, read, delete, local path, the cache) refuses a malformed file id or
    user id with a clear error, and the victim's blob is untouched."""
    victim_id, digest = await put(blobs, "victim", b"the victim's secret")
    cache = BlobCache(blobs, tmp_path / "cache", max_bytes=MIB)

    def ways_in(user: str, file_id: str) -> list[Callable[[], object]]:
        return [
            lambda: blobs.writer(user, file_id, head_bytes=0),
            lambda: blobs.read(user, file_id),
            lambda: blobs.delete(user, file_id),
            lambda: blobs.delete_many([("victim", victim_id), (user, file_id)]),
            lambda: blobs.local_path(user, file_id),
            lambda: cache.path(user, file_id, digest),
        ]

    for bad in bad_ids(victim_id):
        for make in ways_in("attacker", bad):
            await refuses(InvalidFileId, make)
    for bad_user in ["..", "../victim", "victim/..", "", "a/b", ".hidden"]:
        for make in ways_in(bad_user, victim_id):
            await refuses(InvalidUser, make)
    assert await read(blobs, "victim", victim_id) == b"the victim's secret"
    assert str(InvalidFileId("../x")).startswith("Invalid file id")


async def test_register_takes_only_well_formed_ids(blobs: BlobStore, tmp_path: Path) -> None:
    """``FileStore.register("attacker", ..., "../victim/<id>")`` raises a clear error and
    neither reads nor deletes the victim's blob, oversize or not."""
    limits = Limits(max_files=5, max_file_bytes=MIB, max_total_bytes=2 * MIB, lifetime=None)
    store = FileStore(SqliteMetadataStore(tmp_path / "meta.sqlite3"), blobs, limits)
    await store.start()
    try:

        async def body() -> AsyncIterator[bytes]:
            yield b"the victim's secret"

        victim = (await store.save("victim", "secret.txt", body())).record
        for bad in bad_ids(victim.id):
            for size in (victim.size, 10 * MIB):  # oversize used to delete the victim's blob
                with pytest.raises(InvalidFileId):
                    await store.register(
                        "attacker", "x.txt", bad, kind="text", size=size, sha256=victim.sha256
                    )
        assert await store.list("attacker") == []
        assert await store.read_bytes("victim", victim.id) == b"the victim's secret"
    finally:
        await store.close()


async def test_register_never_touches_an_existing_file(blobs: BlobStore, tmp_path: Path) -> None:
    """A worker reports an existing file's id as its new output (the owner's, or another
    user's id under its own user), with the true size, a false one and one over the limits:
    each is refused with FileIdTaken, and every record and byte stays as it was."""
    limits = Limits(max_files=5, max_file_bytes=MIB, max_total_bytes=2 * MIB, lifetime=None)
    store = FileStore(SqliteMetadataStore(tmp_path / "meta.sqlite3"), blobs, limits)
    await store.start()
    try:

        async def body() -> AsyncIterator[bytes]:
            yield b"the owner's data"

        mine = (await store.save("owner", "data.csv", body())).record
        for user in ("owner", "stranger"):
            for size in (mine.size, mine.size + 1, 10 * MIB):
                with pytest.raises(FileIdTaken, match="in use already"):
                    await store.register(
                        user, "out.csv", mine.id, kind="csv", size=size, sha256=mine.sha256
                    )
        assert await store.list("owner") == [mine]
        assert await store.list("stranger") == []
        assert await store.read_bytes("owner", mine.id) == b"the owner's data"
    finally:
        await store.close()


async def test_a_writer_never_replaces_a_blob(blobs: BlobStore) -> None:
    """A writer for an id that has a blob is refused at once (FileExistsError). A writer
    opened before the blob appeared cannot replace it at commit either: on a local folder
    (the commit is a link, which fails if the path exists) and for an empty object (a
    conditional put); a streaming S3 upload cannot be conditional (see objects.py)."""
    file_id, _ = await put(blobs, "alice", b"original")
    with pytest.raises(FileExistsError):
        await blobs.writer("alice", file_id, head_bytes=16)
    assert await read(blobs, "alice", file_id) == b"original"

    fresh = new_file_id()
    early = await blobs.writer("alice", fresh, head_bytes=16)
    late = await blobs.writer("alice", fresh, head_bytes=16)
    await late.write(b"first")
    await late.commit()
    if isinstance(blobs, LocalBlobStore):
        await early.write(b"second")
    with pytest.raises(FileExistsError):
        await early.commit()
    await early.abort()
    assert await read(blobs, "alice", fresh) == b"first"


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak-RSS count here


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def test_a_large_upload_to_s3_keeps_memory_flat(s3_server: S3, tmp_path: Path) -> None:
    settings = load_settings(LABBOT_DATA_DIR=tmp_path, **s3_server.env(prefix="flat"))
    blobs = blob_store(settings)
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


async def test_size_is_what_is_stored(blobs: BlobStore) -> None:
    """``size`` reads a blob's stored size without its bytes; a missing blob is
    FileNotFoundError, a malformed id never reaches a path or key."""
    for data in (b"", b"a,b\n", os.urandom(3 * MIB)):
        file_id, _ = await put(blobs, "alice", data)
        assert await blobs.size("alice", file_id) == len(data)
    with pytest.raises(FileNotFoundError):
        await blobs.size("alice", new_file_id())
    with pytest.raises(InvalidFileId):
        await blobs.size("alice", "../bob/" + new_file_id())
