"""Several processes on one data dir: the bot (open_app), the operator's CLI beside it, the
sweeper. Nothing outside SQLite may open the database file: closing any descriptor of it drops
every POSIX lock the process holds on it, so another process closing its last connection
believes it is the last, checkpoints and deletes the WAL under the first.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack, closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from labbot.app import open_app
from labbot.config import load_settings
from labbot.files import FileStore
from tests.backends import BACKENDS, mongo_database
from tests.conftest import chunks_of, make_store
from tests.files.stress import Counts, run_mongo, run_sqlite

LABBOT = str(Path(sys.executable).with_name("labbot"))
# How long the stress runs last here (bench/store_stress.py runs a minute); the SQLite run's
# wall time is this plus a few seconds.
STRESS_SECONDS = float(os.environ.get("LABBOT_STRESS_SECONDS", "20"))
MONGO_STRESS_SECONDS = 5.0


def exists(path: Path | str) -> bool:
    return Path(path).exists()


async def labbot(data_dir: Path, *args: str) -> Any:
    """Run the real `labbot ARGS... --json` in its own process; its JSON output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABBOT_")}
    env["LABBOT_DATA_DIR"] = str(data_dir)
    proc = await asyncio.create_subprocess_exec(
        LABBOT,
        *args,
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
    return json.loads(out)


async def test_the_cli_beside_the_running_bot_loses_nothing(tmp_path: Path) -> None:
    """With the bot's stores open (three migrations, as `labbot run` and `labbot chat` do),
    `labbot files add` and `labbot files list` in other processes neither delete the bot's WAL
    nor hide each other's writes, and the database stays intact."""
    data = tmp_path / "data"
    settings = load_settings(LABBOT_DATA_DIR=data, LABBOT_SANDBOX="off", SANDBOX_WARM_POOL=0)
    upload = tmp_path / "from-cli.csv"
    upload.write_bytes(b"a,b\n1,2\n")
    wal = Path(f"{settings.database_path}-wal")
    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(open_app(settings))
        first = (await app.store.save("u", "bot-1.txt", chunks_of(b"one"))).record
        assert exists(wal)

        [added] = await labbot(data, "files", "add", str(upload), "--user", "u")
        assert exists(wal), "the CLI deleted the WAL of the running bot"
        # The bot sees what the CLI added, and its own next write reaches other processes.
        assert {r.id for r in await app.store.list("u")} == {first.id, added["id"]}
        second = (await app.store.save("u", "bot-2.txt", chunks_of(b"two"))).record
        listed = await labbot(data, "files", "list", "--user", "u")
        assert {r["id"] for r in listed} == {first.id, added["id"], second.id}
        assert exists(wal)
        assert await app.store.read_bytes("u", added["id"]) == b"a,b\n1,2\n"

    with closing(sqlite3.connect(settings.database_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM files").fetchone() == (3,)


async def test_the_database_file_is_never_opened_outside_sqlite(tmp_path: Path) -> None:
    """Starting the bot's stores (each migrates), saving, listing and closing open no descriptor
    of the database or its WAL files outside SQLite (Python's audit hook sees every os.open and
    open; SQLite's own opens are not Python's)."""
    settings = load_settings(
        LABBOT_DATA_DIR=tmp_path / "data", LABBOT_SANDBOX="off", SANDBOX_WARM_POOL=0
    )
    database = str(settings.database_path)
    opened: list[str] = []
    watching = True

    def hook(event: str, args: tuple[object, ...]) -> None:
        if watching and event == "open" and str(args[0]).startswith(database):
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: this one stops watching at the end
    try:
        for _ in range(2):  # a fresh data dir, then an existing one
            async with open_app(settings) as app:
                await app.store.save("u", "a.txt", chunks_of(b"a"))
                await app.store.list("u")
    finally:
        watching = False
    assert exists(database)
    assert opened == []


def assert_nothing_lost(counts: Counts) -> None:
    """Every acknowledged save that was not deleted is there with its bytes, nothing failed,
    and the run really did work and really killed one of its processes mid-work."""
    print(counts)  # the figures, for -s and the closing note
    assert counts.failures == []
    assert counts.missing_midway == 0  # no listing lacked a file its process had saved
    assert (counts.found, counts.intact) == (counts.expected, counts.expected)
    assert counts.integrity in ("ok", "n/a (MongoDB)")
    assert counts.missing_blobs == 0  # no record lost its bytes
    assert counts.acknowledged >= 50 and counts.deleted > 0 and counts.calls > 0
    assert counts.ephemeral > counts.ephemeral_left  # the sweepers removed expired files
    assert counts.killed_after > 0, counts.killed


async def test_processes_sharing_one_data_dir_lose_nothing(tmp_path: Path) -> None:
    """The bot (with its sweeper), two terminal chats and real `labbot files add/list/rm/sweep`
    commands save, list, delete and sweep at once for STRESS_SECONDS; one chat is killed with
    SIGKILL halfway. Every acknowledged save is there, intact; the database's integrity check
    is ok; no call failed (a "busy" error counts as a failure)."""
    counts = await run_sqlite(tmp_path / "data", STRESS_SECONDS)
    assert_nothing_lost(counts)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "sqlite"])
async def test_stores_sharing_one_mongo_database_lose_nothing(backend: str, tmp_path: Path) -> None:
    """The same run on MongoDB (the stand-in, and a real server when LABBOT_TEST_MONGODB_URI is
    set), with tasks in one process, each with a FileStore of its own."""
    async with mongo_database(backend) as database:
        counts = await run_mongo(database, tmp_path / "files", MONGO_STRESS_SECONDS)
    assert_nothing_lost(counts)


async def test_a_starting_process_waits_for_another_process_lock(settings, clock) -> None:
    """A store starting (migrate, then a listing) while another connection holds the database
    exclusively, as a process closing the last connection does while it checkpoints and removes
    the WAL, waits for it (busy_timeout) instead of failing."""
    first = make_store(settings)
    await first.start()
    saved = (await first.save("u", "a.txt", chunks_of(b"a"))).record
    await first.close()
    other = sqlite3.connect(settings.database_path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")  # in WAL mode with exclusive locking: no reader passes
    released = threading.Event()

    def release() -> None:
        released.set()
        other.execute("COMMIT")
        other.close()

    timer = threading.Timer(0.3, release)  # holds the lock a while, as a checkpoint would
    timer.start()
    store = make_store(settings)
    store.clock = clock
    try:
        await store.start()
        listed = await store.list("u")
    finally:
        timer.join()
        await store.close()
    assert released.is_set() and [r.id for r in listed] == [saved.id]


async def test_reconcile_skips_a_blob_another_process_deletes_during_its_scan(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`labbot files sweep` and the bot's sweeper scan the blob folders while other processes
    delete files: a blob gone between the listing and its stat is skipped, not a failed sweep
    (found by the stress run: "file.sweeper_failed ... FileNotFoundError")."""
    kept = (await store.save("u", "kept.txt", chunks_of(b"kept"))).record
    gone = (await store.save("u", "gone.txt", chunks_of(b"gone"))).record
    victim = store.path(gone)
    assert victim is not None
    scandir = os.scandir

    class DeletedMeanwhile:
        """os.scandir, with the victim deleted (record, then bytes, as FileStore.delete does)
        after the folder was listed and before its entry is looked at."""

        def __init__(self, path: str) -> None:
            self.entries = scandir(path)

        def __enter__(self) -> DeletedMeanwhile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.entries.close()

        def __iter__(self) -> Iterator[os.DirEntry[str]]:
            for entry in self.entries:
                if entry.path == str(victim):
                    os.unlink(entry.path)
                yield entry

    await store.meta.delete("u", gone.id, now=store.clock())
    monkeypatch.setattr(os, "scandir", DeletedMeanwhile)
    result = await store.reconcile(min_age=timedelta(0))
    monkeypatch.undo()
    assert (result.orphan_blobs, result.partial_files, result.missing_blobs) == (0, 0, 0)
    assert [r.id for r in await store.list("u")] == [kept.id]
    assert await store.read_bytes("u", kept.id) == b"kept"
