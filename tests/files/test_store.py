"""FileStore rules: ids, ownership, limits, eviction, quota, expiry, sweep, bad input."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from labbot.config import load_settings
from labbot.errors import (
    FileError,
    FileNotFound,
    FileTooLarge,
    InvalidUser,
    QuotaInUse,
    StorageError,
)
from labbot.files import FileRecord, FileStore, Limits, render_upload_confirmation
from labbot.files.blobs import TMP_DIR
from tests.conftest import FIXTURES, Clock, chunks_of, make_store

MIB = 1024 * 1024
PNG = FIXTURES / "images" / "noise.png"


def blob_files(store: FileStore) -> list[Path]:
    """Every committed blob on disk."""
    return [p for p in store.blobs.root.glob("*/*") if p.parent.name != TMP_DIR]


def partial_files(store: FileStore) -> list[Path]:
    return list((store.blobs.root / TMP_DIR).iterdir())


async def test_save_streams_records_size_hash_and_kind(store: FileStore) -> None:
    """A save records size, sha256, kind and source, and the bytes read back intact."""
    body = b"a,b\n1,2\n3,4\n"
    result = await store.save("42", "data.csv", chunks_of(body[:5], body[5:]))
    record = result.record
    assert (record.size, record.kind, record.source, record.name) == (
        len(body),
        "csv",
        "upload",
        "data.csv",
    )
    import hashlib

    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert b"".join([c async for c in store.read("42", record.id)]) == body
    assert (result.file_count, result.total_bytes, result.evicted) == (1, len(body), [])


async def test_ids_are_random_128_bit_and_carry_no_user(store: FileStore) -> None:
    """File ids have at least 128 random bits, never contain the user id, and never repeat."""
    ids = {(await store.save("123456789", "a.txt", chunks_of(b"x"))).record.id for _ in range(30)}
    assert len(ids) == 30
    for file_id in ids:
        assert re.fullmatch(r"[a-z2-7]{26}", file_id)  # 26 base32 chars = 130 bits
        assert "123456789" not in file_id


async def test_reads_check_the_owner(store: FileStore) -> None:
    """Another user's id is not found for get, read and delete, and nothing is removed."""
    record = (await store.save("alice", "secret.txt", chunks_of(b"s3cret"))).record
    with pytest.raises(FileNotFound):
        await store.get("mallory", record.id)
    with pytest.raises(FileNotFound):
        [c async for c in store.read("mallory", record.id)]
    with pytest.raises(FileNotFound):
        await store.delete("mallory", record.id)
    assert (await store.get("alice", record.id)).id == record.id
    assert await store.list("mallory") == []


@pytest.mark.parametrize("user", ["", ".", "..", "../x", "a/b", "x" * 65, "a\x00"])
async def test_invalid_user_ids_are_refused(store: FileStore, user: str) -> None:
    """User ids that could name a path outside the store are refused before any write."""
    with pytest.raises(InvalidUser):
        await store.save(user, "a.txt", chunks_of(b"x"))
    assert blob_files(store) == []


async def test_21st_file_evicts_the_oldest_and_names_it(store: FileStore) -> None:
    """With the limit at 20, the 21st save removes the oldest file (disk and metadata) and says
    which one in the result and in the confirmation."""
    first = (await store.save("u", "first.csv", chunks_of(b"a\n1\n"))).record
    for n in range(19):
        await store.save("u", f"f{n}.txt", chunks_of(b"x"))
    result = await store.save("u", "new.txt", chunks_of(b"y"))
    assert [r.id for r in result.evicted] == [first.id]
    assert result.file_count == 20
    assert first.id not in {r.id for r in await store.list("u")}
    assert not store.blobs.path("u", first.id).exists()
    assert len(blob_files(store)) == 20
    text = render_upload_confirmation(result, now=store.clock())
    assert "first.csv" in text and first.id in text and "20/20" in text


async def test_40_concurrent_saves_leave_exactly_the_20_newest(store: FileStore) -> None:
    """40 simultaneous saves by one user with the limit at 20 leave exactly the 20 newest;
    every other file is evicted exactly once, from disk too."""
    results = await asyncio.gather(
        *(store.save("u", f"f{n}.txt", chunks_of(b"x" * (n + 1), b"y")) for n in range(40))
    )
    records = sorted((r.record for r in results), key=lambda r: r.created_at)
    listed = await store.list("u")
    assert {r.id for r in listed} == {r.id for r in records[20:]}
    evicted = [e.id for r in results for e in r.evicted]
    assert sorted(evicted) == sorted(r.id for r in records[:20])
    assert {p.name for p in blob_files(store)} == {r.id for r in listed}


async def test_byte_quota_evicts_oldest_until_the_new_file_fits(store: FileStore) -> None:
    """With a 10-byte quota, a 6-byte file pushes out the oldest files until it fits."""
    store.limits = replace(store.limits, max_total_bytes=10)
    a = (await store.save("u", "a", chunks_of(b"aaaa"))).record
    b = (await store.save("u", "b", chunks_of(b"bbbb"))).record
    result = await store.save("u", "c", chunks_of(b"cccccc"))
    assert [r.id for r in result.evicted] == [a.id]
    assert {r.id for r in await store.list("u")} == {b.id, result.record.id}
    assert result.total_bytes == 10


async def test_file_that_can_never_fit_the_quota_is_refused(store: FileStore) -> None:
    """A file larger than the whole quota is refused and nothing is evicted."""
    store.limits = replace(store.limits, max_total_bytes=10)
    kept = (await store.save("u", "a", chunks_of(b"aaaa"))).record
    with pytest.raises(FileTooLarge, match="quota"):
        await store.save("u", "big", chunks_of(b"x" * 11))
    assert [r.id for r in await store.list("u")] == [kept.id]
    assert partial_files(store) == [] and len(blob_files(store)) == 1


async def test_oversize_upload_stops_streaming_at_the_limit(store: FileStore) -> None:
    """An upload over the per-file limit is stopped while streaming (the rest of the stream is
    never read), its partial file removed, and the message names the limit."""
    store.limits = replace(store.limits, max_file_bytes=3 * MIB)
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"\0" * MIB

    with pytest.raises(FileTooLarge, match="3.0 MiB"):
        await store.save("u", "huge.bin", endless())
    assert pulled == 4
    assert partial_files(store) == [] and blob_files(store) == []
    assert await store.list("u") == []


async def test_empty_upload_is_refused_but_an_empty_generated_file_is_kept(
    store: FileStore,
) -> None:
    """An empty upload gets a clear error and leaves nothing; code may write an empty file."""
    with pytest.raises(FileError, match="empty"):
        await store.save("u", "empty.csv", chunks_of())
    assert blob_files(store) == [] and partial_files(store) == []
    result = await store.save("u", "marker.txt", chunks_of(), source="generated")
    assert result.record.size == 0 and result.record.source == "generated"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path", "path"),
        ("a\x00b", "ab"),
        ("CON", "CON_"),
        ("con.txt", "con_.txt"),
        ("📊 données.csv", "📊 données.csv"),
        ("بيانات.csv", "بيانات.csv"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("noextension", "noextension"),
        ("..", "file"),
        ("C:\\Users\\x\\report.xlsx", "report.xlsx"),
    ],
)
async def test_hostile_names_are_sanitised_and_never_reach_the_path(
    store: FileStore, raw: str, expected: str
) -> None:
    """Odd names are cleaned for display; the blob path is always <user>/<id>."""
    record = (await store.save("u", raw, chunks_of(b"hello"))).record
    assert record.name == expected
    assert store.path(record) == store.blobs.root / "u" / record.id
    assert [p.name for p in blob_files(store)] == [record.id]


async def test_300_character_name_is_capped_keeping_the_extension(store: FileStore) -> None:
    """A 300-character name is capped to 200 bytes and keeps its extension."""
    record = (await store.save("u", "é" * 300 + ".parquet", chunks_of(b"x"))).record
    assert len(record.name.encode()) <= 200
    assert record.name.endswith(".parquet") and record.name.startswith("é")


async def test_same_name_twice_gets_two_ids(store: FileStore) -> None:
    """Uploading the same name twice keeps both, under different ids."""
    a = (await store.save("u", "same.csv", chunks_of(b"a\n1\n"))).record
    b = (await store.save("u", "same.csv", chunks_of(b"a\n2\n"))).record
    assert a.id != b.id
    assert {r.id for r in await store.list("u")} == {a.id, b.id}


async def test_wrong_and_missing_extensions_are_sniffed(store: FileStore) -> None:
    """A PNG named .csv, and one with no extension, are stored as images."""
    png = PNG.read_bytes()
    wrong = (await store.save("u", "data.csv", chunks_of(png))).record
    bare = (await store.save("u", "upload", chunks_of(png))).record
    assert wrong.kind == bare.kind == "image"


async def test_expired_files_vanish_at_once_and_sweep_removes_them(
    store: FileStore, clock: Clock
) -> None:
    """Past its expiry a file is invisible to list and get at once; a sweep then removes its
    record and its bytes together, leaving live files alone."""
    old = (await store.save("u", "old.txt", chunks_of(b"o"))).record
    clock.advance(hours=47)
    young = (await store.save("u", "young.txt", chunks_of(b"y"))).record
    clock.advance(hours=1, seconds=1)
    assert [r.id for r in await store.list("u")] == [young.id]
    with pytest.raises(FileNotFound):
        await store.get("u", old.id)
    assert store.path(old).exists()  # not swept yet
    swept = await store.sweep()
    assert (swept.files, swept.bytes) == (1, 1)
    assert not store.path(old).exists() and store.path(young).exists()
    assert old.id not in await store.meta.file_ids()


async def test_expired_files_do_not_count_against_the_limit(store: FileStore, clock: Clock) -> None:
    """Files that expired do not push out live ones."""
    store.limits = replace(store.limits, max_files=2)
    await store.save("u", "a", chunks_of(b"a"))
    clock.advance(hours=49)
    b = (await store.save("u", "b", chunks_of(b"b"))).record
    c = await store.save("u", "c", chunks_of(b"c"))
    assert c.evicted == [] and {r.id for r in await store.list("u")} == {b.id, c.record.id}


async def test_fractional_and_never_expiry(tmp_path: Path, clock: Clock) -> None:
    """FILE_EXPIRATION_HOURS=0.1 means 6 minutes; -1 means the file never expires."""
    for hours, expected in [(0.1, 360.0), (-1, None)]:
        settings = load_settings(LABBOT_DATA_DIR=tmp_path / str(hours), FILE_EXPIRATION_HOURS=hours)
        store = make_store(settings)
        store.clock = clock
        await store.start()
        result = await store.save("u", "a.txt", chunks_of(b"a"))
        record = result.record
        lifetime = record.expires_at and (record.expires_at - record.created_at).total_seconds()
        assert lifetime == expected
        if expected is None:
            clock.advance(days=3650)
            assert (await store.get("u", record.id)).id == record.id
            assert "Expires: never\n" in render_upload_confirmation(result, now=clock())
        await store.close()


async def test_generated_files_share_the_limits(store: FileStore) -> None:
    """Files the code makes count against the same limit, but push out older files the code
    made before any upload: six runs of a three-output script keep the user's upload."""
    store.limits = replace(store.limits, max_files=4)
    upload = (await store.save("u", "sales.csv", chunks_of(b"a\n1\n"))).record
    plot = await store.save("u", "plot.png", chunks_of(PNG.read_bytes()), source="generated")
    result = await store.save("u", "out.csv", chunks_of(b"b\n2\n"), source="generated")
    assert result.evicted == []
    for run in range(6):
        for name in ("a.csv", "b.csv", "c.png"):
            await store.save("u", f"{run}{name}", chunks_of(b"x"), source="generated")
    live = await store.list("u")
    assert upload.id in {r.id for r in live} and plot.record.id not in {r.id for r in live}


async def test_sweeper_task_removes_expired_files(store: FileStore, clock: Clock) -> None:
    """The background sweeper removes expired files on its own, pass after pass."""
    record = (await store.save("u", "a.txt", chunks_of(b"a"))).record
    swept = asyncio.Event()
    task = asyncio.create_task(store.run_sweeper(0.001, swept=swept))
    try:
        async with asyncio.timeout(5):
            await swept.wait()
            assert store.path(record).exists()
            clock.advance(hours=49)
            while store.path(record).exists():
                swept.clear()
                await swept.wait()
    finally:
        task.cancel()
    assert record.id not in await store.meta.file_ids()


async def test_locked_database_gives_a_clear_error_and_keeps_nothing(
    settings, clock: Clock
) -> None:
    """While another process holds the database lock, a save fails with a clear message, its
    bytes are removed, and it works again once the lock is gone."""
    store = make_store(settings)
    store.meta.busy_timeout = 0.05
    store.clock = clock
    await store.start()
    other = sqlite3.connect(settings.database_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="busy"):
            await store.save("u", "a.txt", chunks_of(b"a"))
        assert blob_files(store) == [] and partial_files(store) == []
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await store.save("u", "a.txt", chunks_of(b"a"))).file_count == 1
    await store.close()


async def test_full_disk_mid_write_is_a_clean_error(tmp_path: Path, clock: Clock) -> None:
    """On a real 1 MiB filesystem, a 2 MiB upload fails with "disk is full", leaves no partial
    file and no record, and the store keeps working."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = await asyncio.create_subprocess_exec(
        "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount), stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {err.decode().strip()}")
    try:
        settings = load_settings(LABBOT_DATA_DIR=mount)
        store = make_store(settings)
        store.clock = clock
        await store.start()
        with pytest.raises(StorageError, match="disk is full"):
            await store.save("u", "big.bin", chunks_of(*[b"x" * 65536] * 32))
        assert blob_files(store) == [] and partial_files(store) == []
        assert await store.list("u") == []
        assert (await store.save("u", "small.txt", chunks_of(b"ok"))).file_count == 1
        await store.close()
    finally:
        umount = await asyncio.create_subprocess_exec("umount", "-l", str(mount))
        await umount.wait()


async def test_limits_come_from_settings(settings) -> None:
    """Limits mirror the settings, with MB meaning MiB."""
    limits = Limits.from_settings(settings)
    assert (limits.max_files, limits.max_file_bytes) == (20, 50 * MIB)
    assert limits.lifetime is not None and limits.lifetime.total_seconds() == 48 * 3600


async def test_concurrent_saves_never_hold_more_than_the_quota_on_disk(store: FileStore) -> None:
    """40 concurrent 400 kB saves against a 1 MiB quota: while they stream, the partial files
    on disk never add up to more than the quota (each save reserves what it writes); the
    saves refused say why in a sentence, and nothing is left behind."""
    store.limits = replace(store.limits, max_total_bytes=MIB)
    gate, arrived = asyncio.Event(), asyncio.Event()
    waiting = 0
    chunk = b"x" * 100_000

    async def upload() -> AsyncIterator[bytes]:
        nonlocal waiting
        for _ in range(3):
            yield chunk
        waiting += 1
        arrived.set()
        await gate.wait()
        yield chunk

    def settled() -> int:
        return waiting + sum(t.done() for t in saves)

    saves = [asyncio.create_task(store.save("u", f"f{n}.bin", upload())) for n in range(40)]
    for task in saves:
        task.add_done_callback(lambda _: arrived.set())
    async with asyncio.timeout(30):
        while settled() < len(saves):  # every save is either paused mid-stream or refused
            arrived.clear()
            await arrived.wait()
    on_disk = sum(p.stat().st_size for p in store.blobs.root.rglob("*") if p.is_file())
    gate.set()
    results = await asyncio.gather(*saves, return_exceptions=True)
    assert on_disk <= MIB, f"{on_disk} bytes on disk against a {MIB}-byte quota"
    saved = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert saved and refused, results[:3]
    assert all(isinstance(r, FileError) and "quota" in str(r) for r in refused), refused
    assert sum(r.size for r in await store.list("u")) <= MIB
    assert partial_files(store) == []


async def test_saves_that_fill_the_quota_together_let_one_through(store: FileStore) -> None:
    """Ten saves that each hold 100 kB of a 1 MiB quota and then all need more: the newer
    ones are refused and the oldest goes on, rather than all failing or all waiting."""
    store.limits = replace(store.limits, max_total_bytes=MIB)
    asked, everyone = 0, asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        nonlocal asked
        yield b"x" * 100_000
        asked += 1  # this save has reserved its first chunk and wants the next
        if asked == 10:
            everyone.set()
        await everyone.wait()
        for _ in range(4):
            yield b"y" * 100_000

    async with asyncio.timeout(30):
        results = await asyncio.gather(
            *(store.save("u", f"f{n}.bin", upload()) for n in range(10)), return_exceptions=True
        )
    saved = [r for r in results if not isinstance(r, BaseException)]
    assert len(saved) >= 1 and saved[0].record.size == 500_000, results
    assert all(isinstance(r, QuotaInUse) for r in results if isinstance(r, BaseException))
    assert store.reservations.held("u") == 0 and partial_files(store) == []


async def test_removals_reach_listeners(store: FileStore, clock: Clock) -> None:
    """Every way a file goes (deleted, evicted past the limits, expired and swept) tells the
    store's listeners, after its record and bytes are gone; a failing listener fails nothing."""
    heard: list[str] = []

    async def listener(records: list[FileRecord]) -> None:
        for record in records:
            assert store.path(record) is not None and not store.path(record).exists()
            heard.append(record.name)

    async def broken(records: list[FileRecord]) -> None:
        raise RuntimeError("a cache failed")

    store.on_removed(listener)
    store.on_removed(broken)
    store.limits = replace(store.limits, max_files=2)
    first = (await store.save("u", "first.csv", chunks_of(b"a\n1\n"))).record
    await store.save("u", "second.csv", chunks_of(b"a\n2\n"))
    await store.save("u", "third.csv", chunks_of(b"a\n3\n"))  # evicts first
    assert heard == ["first.csv"] and first.id not in {r.id for r in await store.list("u")}
    await store.delete("u", (await store.list("u"))[0].id)
    assert heard == ["first.csv", "third.csv"]
    clock.advance(days=30)
    assert (await store.sweep()).files == 1
    assert heard == ["first.csv", "third.csv", "second.csv"]
