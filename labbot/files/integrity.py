"""Reading a blob back as it was stored: the size and sha256 recorded at upload are checked
while the bytes stream, so a blob changed where it is stored (anyone holding the object
store's keys can write it) is a clear error, never bytes served as the user's file."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from labbot.errors import StorageError

log = logging.getLogger(__name__)

THREAD_HASH_BYTES = 64 * 1024  # chunks this large are hashed off the event loop


def damaged(name: str) -> StorageError:
    """The error of a file whose stored bytes are not the ones recorded."""
    return StorageError(
        f"The file {name} is damaged; it was changed where it is stored.",
        hint="It cannot be used: delete it and upload or make it again, and tell the operator.",
    )


async def verified(
    chunks: AsyncGenerator[bytes, None], *, size: int, sha256: str, name: str, where: str
) -> AsyncGenerator[bytes, None]:
    """``chunks`` as they come, checked against the recorded ``size`` and ``sha256``.

    Never more than ``size`` bytes are read: the stream stops at the first byte past it. The
    last chunk is held back until the whole blob has been hashed, so a consumer never gets a
    complete file that is not the recorded one.

    :raises StorageError: the bytes are longer, shorter or other than recorded (``where``
        names the blob in the log: user and id).
    """
    digest = hashlib.sha256()
    seen = 0
    held: bytes | None = None
    async with aclosing(chunks) as stream:  # closing stops a download in progress
        async for chunk in stream:
            seen += len(chunk)
            if seen > size:
                log.error("file.damaged %s reason=longer size=%d", where, size)
                raise damaged(name)
            if len(chunk) >= THREAD_HASH_BYTES:
                await asyncio.to_thread(digest.update, chunk)
            else:
                digest.update(chunk)
            if held is not None:
                yield held
            held = chunk
    if seen != size or digest.hexdigest() != sha256:
        reason = "shorter" if seen != size else "sha256"
        log.error("file.damaged %s reason=%s size=%d read=%d", where, reason, size, seen)
        raise damaged(name)
    if held is not None:
        yield held
