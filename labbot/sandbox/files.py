"""The files one execution sees (read-only, linked into the session's folder) and where the
files it writes go: from this machine's FileStore, or, on a worker, from what the bot sent."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from labbot.core import FileRef, OutputFile
from labbot.files import FileRecord, FileStore, kind_by_name
from labbot.files.cache import BlobCache
from labbot.files.store import files_among
from labbot.sandbox.checkpoints import PieceStore, StorePieces
from labbot.sandbox.runtime.protocol import FileEntry

MAX_NOTES = 8  # notes of one kind kept in a result; the rest are counted


class SessionFiles(Protocol):
    """The files one execution sees and where the files it writes go."""

    @property
    def pieces(self) -> PieceStore | None:
        """Where the session's checkpoint is kept (None: not kept)."""
        ...

    async def look(self, user: str, conversation: str) -> FilesNow:
        """What the next cell sees: the user's live files (shown to the code through
        load_file) and, where the pieces are kept here, the conversation's checkpoint."""
        ...

    async def local(self, user: str, ref: FileRef) -> Path | None:
        """A local path with the file's bytes, or None if the file is gone."""
        ...

    async def save_output(
        self, user: str, name: str, chunks: AsyncIterator[bytes]
    ) -> tuple[OutputFile, list[str]]:
        """Keep a file the code wrote: the file, and notes for the model (evictions).

        :raises FileError: it cannot be kept (limits). :raises StorageError: storage failed.
        """
        ...


@dataclass(frozen=True, slots=True)
class FilesNow:
    """One look at a user's store, for one cell."""

    refs: list[FileRef]
    pieces: tuple[dict[str, FileRef], int] | None = None  # PieceStore.state (None: not looked)


class StoreFiles:
    """SessionFiles straight from this machine's FileStore (limits and eviction applied)."""

    def __init__(
        self, store: FileStore, cache: BlobCache, pieces: StorePieces | None = None
    ) -> None:
        self.store = store
        self.cache = cache
        self.pieces: StorePieces | None = pieces

    async def look(self, user: str, conversation: str) -> FilesNow:
        """The user's live files and the conversation's pieces, from one listing (a cell
        asks the database once)."""
        records = await self.store.records(user)
        refs = [record.ref() for record in files_among(records)]
        if self.pieces is None:
            return FilesNow(refs)
        return FilesNow(refs, self.pieces.state_among(records, conversation))

    async def local(self, user: str, ref: FileRef) -> Path | None:
        """The blob (or its cached copy)."""
        try:
            return await self.cache.path(user, ref.id, ref.sha256)
        except FileNotFoundError:
            return None  # deleted meanwhile

    async def save_output(
        self, user: str, name: str, chunks: AsyncIterator[bytes]
    ) -> tuple[OutputFile, list[str]]:
        """Save through the store, which may evict the oldest files."""
        saved = await self.store.save(user, name, chunks, source="generated")
        return saved.record.output(), eviction_notes(saved.evicted)


def eviction_notes(evicted: list[FileRecord]) -> list[str]:
    """What the model is told about files removed to make room."""
    return [
        f"To stay within the user's limits, {old.name} ({old.id}) was removed." for old in evicted
    ]


def bounded_notes(notes: list[str], *, what: str) -> list[str]:
    """At most MAX_NOTES of ``notes``, then one line counting the rest."""
    if len(notes) <= MAX_NOTES:
        return notes
    rest = len(notes) - MAX_NOTES
    return [*notes[:MAX_NOTES], f"... and {rest} more {what}."]


def link_files(
    folder: Path, refs: list[FileRef], local: dict[str, Path], *, inside: Path, shared: bool
) -> dict[str, FileEntry]:
    """Make exactly these files visible in the session's read-only folder (a thread); return
    the kernel's manifest (id → name, kind, loader, size and path as the code sees it).
    ``shared``: the sandbox runs as another user, who must be able to read them."""
    wanted = {ref.id: ref for ref in refs}
    present = set(os.listdir(folder))
    for stale in present - wanted.keys():
        (folder / stale).unlink(missing_ok=True)
    for file_id in wanted.keys() - present:
        source, target = local[file_id], folder / file_id
        try:
            os.link(source, target)
        except FileNotFoundError:
            continue  # deleted meanwhile
        except OSError:
            shutil.copyfile(source, target)  # another filesystem: copy instead
        if shared and not target.stat().st_mode & 0o004:
            # The sandbox user reads it; the data dir (0700) keeps everyone else out.
            target.chmod(0o644)
    return {
        ref.id: FileEntry(
            name=ref.name,
            kind=ref.kind,
            loader=kind_by_name(ref.kind).loader,
            size=ref.size,
            path=str(inside / ref.id),
        )
        for ref in refs
    }
