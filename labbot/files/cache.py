"""Local copies of blobs for the sandbox to mount: the blob itself when it is on local disk,
else a read-through cache (sha256 checked, least recently used evicted past a size bound).

Deleted means gone here too: copies live in ``root/<user>/<file_id>``, ``forget`` removes the
copies of removed files (the file store tells its listeners), and ``retain`` removes every copy
of a user's files that the caller does not name as live (a worker, told the user's live files
with every request, calls it before any copy is used)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from contextlib import aclosing
from pathlib import Path

from labbot.files.blobs import BLOB_MODE, BlobStore, check_blob, check_user
from labbot.files.integrity import verified
from labbot.private import private_dir

log = logging.getLogger(__name__)


class BlobCache:
    """Where the sandbox finds a file's bytes on this machine.

    cache = BlobCache(blobs, settings.blob_cache_dir, max_bytes=10 * 2**30)
    await cache.retain(user, live_ids)    # drop copies of files deleted since
    path = await cache.path(user, file_id, sha256)
    """

    def __init__(self, blobs: BlobStore, root: Path, *, max_bytes: int) -> None:
        self.blobs = blobs
        self.root = root
        self.max_bytes = max_bytes
        self._fetching: dict[tuple[str, str], asyncio.Future[Path]] = {}

    def _copy(self, user: str, file_id: str) -> Path:
        user, file_id = check_blob(user, file_id)  # the cache's paths are built from both
        return self.root / user / file_id

    async def forget(self, blobs: Iterable[tuple[str, str]]) -> None:
        """Remove the cached copies of these (user, file_id) blobs, if any."""
        paths = [self._copy(user, file_id) for user, file_id in blobs]
        if paths:
            await asyncio.to_thread(_unlink_all, paths)

    async def retain(self, user: str, file_ids: Iterable[str]) -> int:
        """Remove every cached copy of ``user``'s files except ``file_ids`` (the user's live
        files); returns how many went. Local blobs have no copies."""
        folder = self.root / check_user(user)
        removed = await asyncio.to_thread(_remove_others, folder, set(file_ids))
        if removed:
            log.info("cache.dropped user=%s files=%d", user, removed)
        return removed

    async def path(self, user: str, file_id: str, sha256: str, size: int | None = None) -> Path:
        """A local path holding the blob's bytes (never more than ``size`` of them fetched,
        when the size is known).

        :raises FileNotFoundError: the blob is gone from the store.
        :raises StorageError: the bytes fetched do not match ``sha256`` (or ``size``).
        """
        target = self._copy(user, file_id)
        local = self.blobs.local_path(user, file_id)
        if local is not None:
            return local
        if await asyncio.to_thread(_touch, target):
            return target
        key = (user, file_id)
        pending = self._fetching.get(key)
        if pending is None:  # one download per blob, however many sessions ask
            pending = asyncio.ensure_future(self._fetch(user, file_id, sha256, size, target))
            self._fetching[key] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch(
        self, user: str, file_id: str, sha256: str, size: int | None, target: Path
    ) -> Path:
        await asyncio.to_thread(private_dir, self.root)
        await asyncio.to_thread(private_dir, target.parent)
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
        for folder in _subfolders(self.root):
            with os.scandir(folder) as found:
                for entry in found:
                    if entry.is_file(follow_symlinks=False) and not entry.name.endswith(".part"):
                        stat = entry.stat(follow_symlinks=False)
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


def _subfolders(root: Path) -> list[Path]:
    """The users' folders of the cache."""
    with os.scandir(root) as found:
        return [Path(e.path) for e in found if e.is_dir(follow_symlinks=False)]


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)  # a mounted copy is a hard link: the session's folder
        # drops it at its next cell (it lists only live files)


def _remove_others(folder: Path, keep: set[str]) -> int:
    try:
        found = os.listdir(folder)
    except FileNotFoundError:
        return 0
    stale = [folder / name for name in found if name not in keep and not name.endswith(".part")]
    _unlink_all(stale)
    return len(stale)


def _touch(path: Path) -> bool:
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False
