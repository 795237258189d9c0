"""Session checkpoints across machines: the bot sends a conversation's pieces with each request
(a fresh session on any worker restores them), the worker stores the pieces a cell wrote in the
shared blob store under fresh ids and names them in its reply, and the bot registers them in the
user's file store (quota, expiry) as a single machine would. Neither side ever reads a piece."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from labbot.core import FileRef
from labbot.errors import FileError, FileTooLarge, StorageError
from labbot.files import FileStore
from labbot.files.blobs import BlobStore
from labbot.files.names import new_file_id
from labbot.remote import wire
from labbot.sandbox.checkpoints import StorePieces, piece_name

log = logging.getLogger(__name__)

PIECE_KIND = "binary"


async def shipped(
    pieces: StorePieces | None, user: str, conversation: str
) -> wire.CheckpointIn | None:
    """The conversation's checkpoint as a request carries it (None: checkpoints are off)."""
    if pieces is None or pieces.cap <= 0:
        return None
    held, room = await pieces.state(user, conversation)
    return wire.CheckpointIn(pieces={n: wire.FileRef.of(r) for n, r in held.items()}, room=room)


async def register(
    store: FileStore,
    pieces: StorePieces,
    user: str,
    conversation: str,
    changes: wire.CheckpointOut,
    room: int,
) -> list[str]:
    """Keep the pieces a worker stored (within the room the request gave), drop the variables
    that went; notes for the pieces that could not be kept."""
    failed = []
    held = await pieces.records(user, conversation)
    kept = sum(
        found[0].size
        for name, found in held.items()
        if name not in changes.saved and name not in changes.dropped
    )
    for name, ref in changes.saved.items():
        if kept + ref.size > room:  # a worker that says more than the kernel may send
            await store.blobs.delete(user, ref.id)
            failed.append(name)
            continue
        kept += ref.size
        try:
            saved = await store.register(
                user,
                piece_name(conversation, name),
                ref.id,
                kind=PIECE_KIND,
                size=ref.size,
                sha256=ref.sha256,
                source="checkpoint",
                max_bytes=room,
            )
        except (FileError, StorageError) as exc:
            log.warning("checkpoint.register_failed user=%s error=%s", user, exc)
            failed.append(name)
            continue
        old = held.get(name, [])
        await store.delete_pieces(user, [r.id for r in old if r.id != saved.record.id])
    gone = [*changes.dropped, *failed]  # a failed piece's old one would be restored as current
    if gone:
        await pieces.drop_pieces(user, conversation, gone)
    if not failed:
        return []
    return [
        "The session's checkpoint could not keep "
        + ", ".join(failed[:8])
        + " (the storage quota or the disk); they are gone if the session is lost."
    ]


class ShippedPieces:
    """A worker's PieceStore for one request: the pieces the bot sent; new pieces go to the
    shared blob store under fresh ids, for the reply."""

    def __init__(self, checkpoint: wire.CheckpointIn, blobs: BlobStore) -> None:
        self.pieces = {name: ref.core() for name, ref in checkpoint.pieces.items()}
        self.room_bytes = checkpoint.room
        self.blobs = blobs
        self.saved: dict[str, wire.FileRef] = {}
        self.dropped: set[str] = set()

    async def held(self, user: str, conversation: str) -> dict[str, FileRef]:
        """The pieces as they stand in this request (the bot's, then this request's cells')."""
        current = {n: r for n, r in self.pieces.items() if n not in self.dropped}
        current.update({n: r.core() for n, r in self.saved.items()})
        return current

    async def room(self, user: str, conversation: str) -> int:
        """What the bot said the checkpoint may take."""
        return self.room_bytes

    async def state(self, user: str, conversation: str) -> tuple[dict[str, FileRef], int]:
        """``held`` and ``room``."""
        return await self.held(user, conversation), self.room_bytes

    async def save_piece(
        self, user: str, conversation: str, name: str, chunks: AsyncIterator[bytes], size: int
    ) -> None:
        """Upload under a fresh id; the bot registers it."""
        file_id = new_file_id()
        writer = await self.blobs.writer(user, file_id, head_bytes=0)
        try:
            async for chunk in chunks:
                if writer.size + len(chunk) > size:
                    raise FileTooLarge(limit_bytes=size, what="the checkpoint's room")
                await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await asyncio.shield(writer.abort())
            raise
        await self._forget_saved(user, name)  # the restore step's piece, replaced by the cell's
        self.saved[name] = wire.FileRef(
            id=file_id, name=name, kind=PIECE_KIND, size=writer.size, sha256=writer.sha256
        )
        self.dropped.discard(name)

    async def drop_pieces(self, user: str, conversation: str, names: list[str]) -> None:
        """Name them in the reply (and delete what this request uploaded for them)."""
        for name in names:
            await self._forget_saved(user, name)
            self.dropped.add(name)

    async def delete(self, user: str, conversation: str) -> None:
        """A worker never deletes a checkpoint: /reset goes through the bot."""
        await self.drop_pieces(user, conversation, list(await self.held(user, conversation)))

    async def _forget_saved(self, user: str, name: str) -> None:
        old = self.saved.pop(name, None)
        if old is not None:
            await self.blobs.delete(user, old.id)

    def reply(self) -> wire.CheckpointOut:
        """The changes, for the bot."""
        return wire.CheckpointOut(saved=self.saved, dropped=sorted(self.dropped - set(self.saved)))
