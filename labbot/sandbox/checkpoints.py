"""The host's side of session checkpoints: where the pieces are kept, and the two moments they
move (after each cell, the changed variables' pieces come out; a fresh session's first step puts
them all back in).

A piece is one variable's pickle, made and read only inside the user's own sandbox
(``runtime/checkpoint.py``). The host moves the bytes, bounded and counted like any output, and
never parses them. Pieces are records of the user's file store of source "checkpoint": counted in
the user's quota, expiring with FILE_EXPIRATION_HOURS, removed by the sweeper like any file, never
listed as files. Each is named ``<conversation tag>.<variable>.ckpt``, so the store's own listing
is the index of every conversation's checkpoint (nothing else to keep in step after a crash).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labbot.core import FileRef
from labbot.errors import FileError, StorageError
from labbot.files import FileRecord, FileStore
from labbot.sandbox.frames import Checkpointed, Unkept
from labbot.sandbox.kernel_client import KernelProcess
from labbot.sandbox.runtime.protocol import CheckpointOrder

log = logging.getLogger(__name__)

SUFFIX = ".ckpt"
SESSION_PIECE = "+session"
MAX_SHOWN = 8  # variable names shown in one note
RESTORED = "restored "  # how the restore's note begins


def conversation_tag(conversation: str) -> str:
    """A short fixed-size name for a conversation in its pieces' names."""
    return hashlib.blake2b(conversation.encode(), digest_size=8).hexdigest()


def piece_name(conversation: str, name: str) -> str:
    """The store name of one piece of a conversation's checkpoint."""
    return f"{conversation_tag(conversation)}.{name}{SUFFIX}"


class PieceStore(Protocol):
    """Where a conversation's checkpoint pieces are kept."""

    async def held(self, user: str, conversation: str) -> dict[str, FileRef]:
        """The conversation's pieces, by variable name."""
        ...

    async def room(self, user: str, conversation: str) -> int:
        """Bytes the conversation's checkpoint may take: its cap, or less when the user's
        files and other checkpoints leave less of the quota."""
        ...

    async def state(self, user: str, conversation: str) -> tuple[dict[str, FileRef], int]:
        """``held`` and ``room`` together (what every cell asks: one look where it costs
        one)."""
        ...

    async def save_piece(
        self, user: str, conversation: str, name: str, chunks: AsyncIterator[bytes], size: int
    ) -> None:
        """Keep a new piece for ``name`` (replacing the old one).

        :raises FileError: it cannot be kept (limits). :raises StorageError: storage failed.
        """
        ...

    async def drop_pieces(self, user: str, conversation: str, names: list[str]) -> None:
        """Forget these variables' pieces."""
        ...

    async def delete(self, user: str, conversation: str) -> None:
        """Delete the whole checkpoint (/reset)."""
        ...


class StorePieces:
    """Pieces in this machine's FileStore."""

    def __init__(self, store: FileStore, cap: int) -> None:
        self.store = store
        self.cap = cap

    async def records(self, user: str, conversation: str) -> dict[str, list[FileRecord]]:
        """The conversation's piece records by variable, newest first."""
        return (await self._state(user, conversation))[0]

    async def _state(self, user: str, conversation: str) -> tuple[dict[str, list[FileRecord]], int]:
        """The conversation's piece records by variable (newest first), and its room: the
        cap, or what the quota leaves beside everything else the user keeps. One listing."""
        return self.split(await self.store.records(user), conversation)

    def split(
        self, records: list[FileRecord], conversation: str
    ) -> tuple[dict[str, list[FileRecord]], int]:
        """``_state`` from a listing of the user's records already made (newest first)."""
        prefix = conversation_tag(conversation) + "."
        found: dict[str, list[FileRecord]] = {}
        others = 0
        for record in records:
            name = record.name
            if record.source == "checkpoint" and name.startswith(prefix) and name.endswith(SUFFIX):
                found.setdefault(name[len(prefix) : -len(SUFFIX)], []).append(record)
            else:
                others += record.size
        return found, max(0, min(self.cap, self.store.limits.max_total_bytes - others))

    async def state(self, user: str, conversation: str) -> tuple[dict[str, FileRef], int]:
        """``held`` and ``room`` from one listing."""
        return self.state_among(await self.store.records(user), conversation)

    def state_among(
        self, records: list[FileRecord], conversation: str
    ) -> tuple[dict[str, FileRef], int]:
        """``state`` from a listing of the user's records already made (newest first)."""
        found, room = self.split(records, conversation)
        return {name: pieces[0].ref() for name, pieces in found.items()}, room

    async def held(self, user: str, conversation: str) -> dict[str, FileRef]:
        """The newest piece of each variable."""
        return (await self.state(user, conversation))[0]

    async def room(self, user: str, conversation: str) -> int:
        """The cap, or what the quota leaves beside everything else the user keeps."""
        return (await self._state(user, conversation))[1]

    async def save_piece(
        self, user: str, conversation: str, name: str, chunks: AsyncIterator[bytes], size: int
    ) -> None:
        """Store it, then remove the variable's older pieces (a crash between the two leaves
        two, and the newest is the one read)."""
        saved = await self.store.save(
            user, piece_name(conversation, name), chunks, source="checkpoint", max_bytes=size
        )
        old = (await self.records(user, conversation)).get(name, [])
        await self.store.delete_pieces(user, [r.id for r in old if r.id != saved.record.id])

    async def drop_pieces(self, user: str, conversation: str, names: list[str]) -> None:
        """Delete every piece of these variables."""
        records = await self.records(user, conversation)
        await self.store.delete_pieces(user, [r.id for n in names for r in records.get(n, [])])

    async def delete(self, user: str, conversation: str) -> None:
        """Delete every piece of the conversation."""
        records = await self.records(user, conversation)
        await self.store.delete_pieces(user, [r.id for rs in records.values() for r in rs])


@dataclass
class CheckpointCell:
    """The checkpoint side of one execution: what the kernel is asked, and what came back."""

    user: str
    conversation: str
    pieces: PieceStore
    order: CheckpointOrder  # what the kernel is asked
    room: int
    restoring: frozenset[str] = frozenset()  # the ids of the pieces put back, if any
    received: int = 0
    failed: list[str] = field(default_factory=list)

    async def on_piece(self, name: str, chunks: AsyncIterator[bytes]) -> None:
        """Keep one piece, within the room this checkpoint has (the kernel keeps to it; a
        kernel that does not only loses the piece)."""

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                self.received += len(chunk)
                if self.received > self.room:
                    raise FileError("over the checkpoint's room")
                yield chunk

        try:
            await self.pieces.save_piece(
                self.user, self.conversation, name, counted(), max(0, self.room)
            )
        except (FileError, StorageError) as exc:
            log.warning("checkpoint.piece_not_kept name_chars=%d error=%s", len(name), exc)
            self.failed.append(name)
            # Its old piece would be restored as if current: forget the variable instead.
            await self.pieces.drop_pieces(self.user, self.conversation, [name])

    async def finish(self, report: Checkpointed | None) -> list[str]:
        """Forget the variables that are gone; the notes for the model and the user."""
        if report is None:
            return []
        log.debug(
            "checkpoint.saved pieces=%d bytes=%d total=%d seconds=%.4f",
            len(report.saved),
            self.received,
            report.bytes,
            report.seconds,
        )
        if report.dropped:
            await self.pieces.drop_pieces(self.user, self.conversation, list(report.dropped))
        notes = []
        restored = report.restored
        if restored is not None and (restored.names or restored.failed or restored.not_kept):
            log.info(
                "checkpoint.restored variables=%d failed=%d seconds=%.3f",
                len(restored.names),
                len(restored.failed),
                restored.seconds,
            )
            notes.append(restore_note(restored.names, report.restored))
        if report.not_kept:
            notes.append(
                "Not kept in the session's checkpoint (gone if the session is lost): "
                + _listed(report.not_kept)
                + "."
            )
        if self.failed:
            notes.append(
                "The session's checkpoint could not keep "
                + ", ".join(self.failed[:MAX_SHOWN])
                + " (the storage quota or the disk); they are gone if the session is lost."
            )
        return notes


def restore_note(names: list[str], restored: Any) -> str:
    """ "restored 7 variables (df, model, …); not restored: conn (sqlite3.Connection)"."""
    shown = ", ".join(names[:MAX_SHOWN]) + (", …" if len(names) > MAX_SHOWN else "")
    text = f"{RESTORED}{len(names)} variable" + ("s" if len(names) != 1 else "")
    text += f" ({shown})" if names else ""
    lost = [*restored.failed, *restored.not_kept]
    if lost:
        text += "; not restored: " + _listed(lost)
    return text + ". Files are kept."


def _listed(entries: list[Unkept]) -> str:
    shown = ", ".join(f"{e.name} ({e.why})" for e in entries[:MAX_SHOWN])
    return shown + (f" and {len(entries) - MAX_SHOWN} more" if len(entries) > MAX_SHOWN else "")


class Checkpoints:
    """Which sessions still need their variables back, and each cell's checkpoint request."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._past_restore: weakref.WeakSet[KernelProcess] = weakref.WeakSet()
        # Pieces whose restore ended a session: never tried again (until they change).
        self._unrestorable: dict[tuple[str, str], frozenset[str]] = {}

    async def needs_restore(
        self, user: str, conversation: str, kernel: KernelProcess, pieces: PieceStore | None
    ) -> bool:
        """A fresh session of a conversation with a checkpoint (not one whose restore ended
        a session before): its first step is the restore."""
        if pieces is None or self.cap <= 0 or kernel in self._past_restore:
            return False
        held = await pieces.held(user, conversation)
        ids = frozenset(ref.id for ref in held.values())
        return bool(held) and self._unrestorable.get((user, conversation)) != ids

    async def begin(
        self,
        user: str,
        conversation: str,
        kernel: KernelProcess,
        pieces: PieceStore | None,
        *,
        state: tuple[dict[str, FileRef], int] | None,
        local: Any,
        inside: Path,
        shared: bool,
    ) -> CheckpointCell | None:
        """The checkpoint part of the next execution (restoring first in a fresh session);
        None when checkpoints are off. ``state``: the pieces' ``state`` if the caller has
        just looked (asked here otherwise)."""
        if pieces is None or self.cap <= 0:
            return None
        held, room = state if state is not None else await pieces.state(user, conversation)
        ids = frozenset(ref.id for ref in held.values())
        restoring: frozenset[str] = frozenset()
        paths: dict[str, str] = {}
        fresh = kernel not in self._past_restore
        if fresh and held and self._unrestorable.get((user, conversation)) != ids:
            restoring = ids
            for name, ref in held.items():
                source = await local(user, ref)
                if source is not None:
                    target = await asyncio.to_thread(_link, source, kernel.files_dir, ref, shared)
                    paths[name] = str(inside / target)
        self._past_restore.add(kernel)
        order = CheckpointOrder(room, tuple(sorted(held)), paths)
        return CheckpointCell(user, conversation, pieces, order, room, restoring)

    def restore_failed(self, cell: CheckpointCell) -> None:
        """The restore ended the session (memory, time): these pieces are not tried again."""
        if cell.restoring:
            self._unrestorable[(cell.user, cell.conversation)] = cell.restoring


def _link(source: Path, folder: Path, ref: FileRef, shared: bool) -> str:
    """Put a piece in the session's read-only files folder (removed again by the next cell's
    link_files, which keeps only the user's files)."""
    name = f".checkpoint-{ref.id}"
    target = folder / name
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        if shared and not target.stat().st_mode & 0o004:
            target.chmod(0o644)
    return name
