"""Crash consistency: a real kill -9 at each point of save, eviction and sweep, then reconcile."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from labbot.config import load_settings
from labbot.files import FileStore
from labbot.files.blobs import TMP_DIR
from tests.conftest import chunks_of, make_store

CHILD = Path(__file__).with_name("crash_child.py")


async def kill_at(data_dir: Path, point: str) -> None:
    """Run the child until it reports reaching ``point``, then kill -9 it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(data_dir),
        point,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()  # type: ignore[union-attr]
        assert line == b"READY\n", (line, await proc.stderr.read())  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL


async def open_store(data_dir: Path) -> FileStore:
    store = make_store(load_settings(LABBOT_DATA_DIR=data_dir, MAX_FILES_PER_USER=1))
    await store.start()
    return store


def on_disk(store: FileStore) -> tuple[set[str], list[Path]]:
    blobs = {p.name for p in store.blobs.root.glob("*/*") if p.parent.name != TMP_DIR}
    return blobs, list((store.blobs.root / TMP_DIR).iterdir())


async def test_kill_mid_stream_leaves_a_partial_that_reconcile_removes(data_dir: Path) -> None:
    """Killed while streaming: only a partial file remains, and reconcile removes it."""
    await kill_at(data_dir, "streaming")
    store = await open_store(data_dir)
    blobs, partial = on_disk(store)
    assert blobs == set() and len(partial) == 1 and partial[0].stat().st_size == 100_000
    result = await store.reconcile(min_age=timedelta(0))
    assert result.partial_files == 1 and on_disk(store) == (set(), [])
    assert await store.list("u") == []
    await store.close()


async def test_kill_between_blob_and_record_leaves_an_orphan_blob(data_dir: Path) -> None:
    """Killed after the blob was renamed in place but before its record: reconcile removes the
    blob; a fresh orphan is spared by the default grace period (another writer may own it)."""
    await kill_at(data_dir, "recorded-not")
    store = await open_store(data_dir)
    blobs, _ = on_disk(store)
    assert len(blobs) == 1 and await store.meta.file_ids() == set()
    assert (await store.reconcile()).orphan_blobs == 0  # younger than the grace period
    assert (await store.reconcile(min_age=timedelta(0))).orphan_blobs == 1
    assert on_disk(store) == (set(), [])
    await store.close()


async def test_kill_mid_eviction_leaves_nothing_visible_and_reconcile_cleans(
    data_dir: Path,
) -> None:
    """Killed after the eviction committed but before the evicted bytes were deleted: the new
    file is listed, the evicted one is not, and reconcile removes its bytes."""
    store = await open_store(data_dir)
    old = (await store.save("u", "old.txt", chunks_of(b"old"))).record
    await store.close()
    await kill_at(data_dir, "evicting")
    store = await open_store(data_dir)
    listed = await store.list("u")
    assert [r.name for r in listed] == ["victim.bin"]
    assert on_disk(store)[0] == {old.id, listed[0].id}
    assert (await store.reconcile(min_age=timedelta(0))).orphan_blobs == 1
    assert on_disk(store)[0] == {listed[0].id}
    await store.close()


async def test_kill_mid_sweep_then_reconcile(data_dir: Path) -> None:
    """Killed after the sweep removed expired records but before their bytes: reconcile
    removes the bytes."""
    store = await open_store(data_dir)
    old = (await store.save("u", "old.txt", chunks_of(b"old"))).record
    await store.close()
    await kill_at(data_dir, "sweeping")
    store = await open_store(data_dir)
    assert await store.meta.file_ids() == set()
    assert on_disk(store)[0] == {old.id}
    assert (await store.reconcile(min_age=timedelta(0))).orphan_blobs == 1
    assert on_disk(store) == (set(), [])
    await store.close()


async def test_record_without_blob_is_forgotten(data_dir: Path) -> None:
    """A record whose bytes vanished from disk is removed by reconcile, others are kept."""
    store = await open_store(data_dir)
    store.limits = store.limits.__class__(5, 10**6, 10**7, None)
    gone = (await store.save("u", "gone.txt", chunks_of(b"g"))).record
    kept = (await store.save("u", "kept.txt", chunks_of(b"k"))).record
    store.path(gone).unlink()
    assert (await store.reconcile()).missing_blobs == 1
    assert [r.id for r in await store.list("u")] == [kept.id]
    await store.close()


@pytest.mark.parametrize("point", ["streaming"])
async def test_store_works_after_a_crash(data_dir: Path, point: str) -> None:
    """After a crash and reconcile the store accepts new files as before."""
    await kill_at(data_dir, point)
    store = await open_store(data_dir)
    await store.reconcile(min_age=timedelta(0))
    assert (await store.save("u", "after.txt", chunks_of(b"a"))).file_count == 1
    await store.close()
