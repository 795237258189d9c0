"""Folders and files that only the bot's own user may open: the data dir (0700) and the
database with its WAL files (0600). Modes are set explicitly, whatever the umask.

The database file is never opened here: a process that holds SQLite connections loses every
POSIX lock it holds on the file when it closes *any* descriptor of it, and another process
closing its last connection would then delete the WAL under it. So the database's modes are
set by path (chmod opens nothing), after SQLite has created the file inside a folder that is
already 0700 (nobody else can reach it meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import stat
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
    if not path.is_dir():  # a file where the folder should be: never chmod it
        raise NotADirectoryError(20, "Not a directory", str(path))
    os.chmod(path, DIR_MODE)
    return path


def private_mode(path: Path, *companions: str) -> None:
    """Make ``path`` and any existing ``path + companion`` (e.g. "-wal", "-shm") 0600, by path
    alone: nothing is opened, and a file that already has its mode is left untouched (so a
    correct install owned by another uid does not fail on chmod)."""
    for target in (str(path), *(f"{path}{suffix}" for suffix in companions)):
        try:
            current = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            continue
        if current != FILE_MODE:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile (a last close)
                os.chmod(target, FILE_MODE)
