"""Local copies of blobs for the sandbox to mount: the blob itself when it is on local disk,
else a read-through cache (sha256 checked, least recently used evicted past a size bound)."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import aclosing
from pathlib import Path

from labbot.files.blobs import BLOB_MODE, BlobStore, check_blob
from labbot.files.integrity import verified
from labbot.private import private_dir

log = logging.getLogger(__name__)


class BlobCache:
    """Where the sandbox finds a file's bytes on this machine.

    cache = BlobCache(blobs, settings.blob_cache_dir, max_bytes=10 * 2**30)
    path = await cache.path(user, file_id, sha256)
    """

    def __init__(self, blobs: BlobStore, root: Path, *, max_bytes: int) -> None:
        self.blobs = blobs
        self.root = root
        self.max_bytes = max_bytes
        self._fetching: dict[str, asyncio.Future[Path]] = {}

    async def path(self, user: str, file_id: str, sha256: str, size: int | None = None) -> Path:
        """A local path holding the blob's bytes (never more than ``size`` of them fetched,
        when the size is known).

        :raises FileNotFoundError: the blob is gone from the store.
        :raises StorageError: the bytes fetched do not match ``sha256`` (or ``size``).
        """
        check_blob(user, file_id)  # the cache's own paths are built from file_id too
        local = self.blobs.local_path(user, file_id)
        if local is not None:
            return local
        target = self.root / file_id
        if await asyncio.to_thread(_touch, target):
            return target
        pending = self._fetching.get(file_id)
        if pending is None:  # one download per blob, however many sessions ask
            pending = asyncio.ensure_future(self._fetch(user, file_id, sha256, size, target))
            self._fetching[file_id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(file_id, None))
        return await asyncio.shield(pending)

    async def _fetch(
        self, user: str, file_id: str, sha256: str, size: int | None, target: Path
    ) -> Path:
        await asyncio.to_thread(private_dir, self.root)
        partial = target.with_name(f"{file_id}.{os.getpid()}.part")
        if size is None:  # unknown: as large as the stored blob is now
            size = await self.blobs.size(user, file_id)
        written = 0
        handle = await asyncio.to_thread(_create, partial)
        checked = verified(
            self.blobs.read(user, file_id),
            size=size,
            sha256=sha256,
            name=file_id,
            where=f"user={user} id={file_id}",
        )
        try:
            async with aclosing(checked):
                async for chunk in checked:
                    written += len(chunk)
                    await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.rename, partial, target)
        finally:
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        log.info("cache.fetched id=%s size=%d", file_id, written)
        await asyncio.to_thread(self._trim, keep=target)
        return target

    def _trim(self, keep: Path) -> None:
        """Remove the least recently used copies until the cache fits (never ``keep``)."""
        entries = []
        with os.scandir(self.root) as found:
            for entry in found:
                if entry.is_file() and not entry.name.endswith(".part"):
                    stat = entry.stat()
                    entries.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)  # mounted copies are hard links: they stay valid
                total -= size


def _create(path: Path):  # type: ignore[no-untyped-def]
    """A new cached copy, 0644 like the blobs (the sandbox's uid reads it through a hard
    link; the 0700 cache folder keeps everyone else out)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, BLOB_MODE)
    os.fchmod(fd, BLOB_MODE)
    return os.fdopen(fd, "wb")


def _touch(path: Path) -> bool:
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False
