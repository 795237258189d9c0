"""Writing stored files to this machine for the CLI: into a folder under a free name (never
over an existing file), or to one path the user named."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import IO

from labbot.errors import FileError
from labbot.files import FileStore
from labbot.files.meta.base import FileRecord
from labbot.files.names import clean_filename

MAX_NUMBERED = 1000  # "name (2).csv" ... "name (999).csv"


def numbered(name: str, n: int) -> str:
    """ "sales.csv" for n=1, "sales (2).csv" for n=2."""
    if n == 1:
        return name
    path = Path(name)
    return f"{path.stem} ({n}){path.suffix}"


def _claim(folder: Path, name: str) -> tuple[Path, IO[bytes]]:
    """Create the first free numbered name in ``folder`` (atomically: never an existing file)."""
    for n in range(1, MAX_NUMBERED):
        target = folder / numbered(name, n)
        try:
            return target, target.open("xb")
        except FileExistsError:
            continue
    raise FileError(f"{folder} already holds {MAX_NUMBERED} files named like {name!r}.")


def _open_target(target: Path, *, overwrite: bool) -> tuple[Path, IO[bytes]]:
    """Open the path the user named; an existing file only with ``overwrite``."""
    try:
        return target, target.open("wb" if overwrite else "xb")
    except FileExistsError:
        raise FileError(
            f"{target} already exists.",
            hint="Name another path or a folder, or add --force to overwrite it.",
        ) from None


async def save_file(
    store: FileStore,
    user: str,
    record: FileRecord,
    target: Path,
    *,
    folder: bool,
    overwrite: bool = False,
) -> Path:
    """Write ``record``'s bytes to ``target`` (into it when ``folder``, under the file's own
    name, numbered when taken); returns the path written. A failed copy leaves nothing."""
    if folder:
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        path, handle = await asyncio.to_thread(_claim, target, clean_filename(record.name))
    else:
        path, handle = await asyncio.to_thread(_open_target, target, overwrite=overwrite)
    try:
        with handle:
            async for chunk in store.read(user, record.id):
                await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
