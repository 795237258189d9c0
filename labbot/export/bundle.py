"""An export as one zip: the notebook and, in ``files/``, the files it loads, streamed from the
file store (never a whole file in memory; the zip is written on a worker thread)."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path
from typing import IO

from labbot.export.notebook import Export
from labbot.files import FileStore


async def write_bundle(export: Export, store: FileStore, user: str, target: Path, name: str) -> int:
    """Write the zip to ``target`` (the notebook as ``name``); returns its size in bytes.
    A failure leaves no partial zip behind."""
    try:
        await _write(export, store, user, target, name)
        return (await asyncio.to_thread(target.stat)).st_size
    except BaseException:
        await asyncio.shield(asyncio.to_thread(target.unlink, missing_ok=True))
        raise


async def _write(export: Export, store: FileStore, user: str, target: Path, name: str) -> None:
    archive = await asyncio.to_thread(zipfile.ZipFile, target, "w", zipfile.ZIP_DEFLATED)
    try:
        await asyncio.to_thread(archive.writestr, name, export.text())
        for file in export.files:
            info = zipfile.ZipInfo(file.path, file.record.created_at.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            entry: IO[bytes] = await asyncio.to_thread(archive.open, info, "w", force_zip64=True)
            try:
                async for chunk in store.read(user, file.record.id):
                    await asyncio.to_thread(entry.write, chunk)
            finally:
                await asyncio.to_thread(entry.close)
    finally:
        await asyncio.to_thread(archive.close)
