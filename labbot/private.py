"""Folders and files that only the bot's own user may open: the data dir (0700) and the
database with its WAL files (0600). Modes are set explicitly, whatever the umask."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents 0700; an existing ``path`` is made 0700 too
    (an older install left it 0755)."""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            created.mkdir(mode=DIR_MODE)
        os.chmod(created, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path, *companions: str) -> Path:
    """Create ``path`` empty if missing, and make it and any existing ``path + companion``
    (e.g. "-wal", "-shm") 0600."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
    os.chmod(path, FILE_MODE)
    for suffix in companions:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", FILE_MODE)
    return path
