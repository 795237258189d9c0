"""Who may read what on disk: the data dir is the owner's alone (0700), and so is the database
with its WAL files (0600); blob files are 0644 inside it (see LocalBlobStore)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from labbot.config import load_settings
from labbot.files.blobs import TMP_DIR
from tests.conftest import chunks_of, make_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(*paths: Path) -> dict[str, str]:
    """Each path's permission bits in octal ("missing" if it is not there)."""
    return {p.name: oct(mode(p)) if p.exists() else "missing" for p in paths}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the modes must come from labbot, not the shell."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
async def test_fresh_data_dir_database_and_blobs_get_their_modes(tmp_path: Path) -> None:
    """A first start creates the data dir 0700, the database and its -wal/-shm 0600, the blob
    folders 0700 and each blob 0644."""
    data = tmp_path / "fresh" / "labbot"
    store = make_store(load_settings(LABBOT_DATA_DIR=data))
    await store.start()
    try:
        saved = await store.save("u", "a.csv", chunks_of(b"a,b\n1,2\n"))
        database = data / "labbot.sqlite3"
        wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")  # open, in WAL mode
        assert modes(database, wal, shm) == {p.name: "0o600" for p in (database, wal, shm)}
        files = data / "files"
        for folder in (data, data.parent, files, files / TMP_DIR, files / "u"):
            assert mode(folder) == 0o700, folder
        assert mode(files / "u" / saved.record.id) == 0o644
    finally:
        await store.close()


@pytest.mark.usefixtures("open_umask")
async def test_an_existing_world_readable_install_is_tightened(tmp_path: Path) -> None:
    """A data dir and database left 0755/0644 by an older version are made 0700/0600."""
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    store = make_store(load_settings(LABBOT_DATA_DIR=data))
    await store.start()
    await store.close()
    database = data / "labbot.sqlite3"
    os.chmod(data, 0o755)
    os.chmod(database, 0o644)
    store = make_store(load_settings(LABBOT_DATA_DIR=data))
    await store.start()
    try:
        await store.save("u", "a.txt", chunks_of(b"hello"))
        assert (oct(mode(data)), oct(mode(database))) == ("0o700", "0o600")
    finally:
        await store.close()
