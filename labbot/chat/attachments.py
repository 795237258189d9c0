"""Files a user attaches to a message: each stored on its own (one refused does not stop the
others, and says why in a sentence), and the images among them marked for the model.

    attachments = Attachments(store)
    taken = await attachments.take(user, [Upload("sales.csv", chunks)])
    taken.saved, taken.refused            # receipts to show, and why the others were not kept
    engine.turn(user, conversation, text, file_ids=taken.file_ids, image_ids=taken.image_ids)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from labbot.errors import FileError, LabbotError
from labbot.files import FileStore, SaveResult
from labbot.files.receipt import format_size

log = logging.getLogger(__name__)

IMAGE_KIND = "image"  # the stored kind the model is shown as an image (with vision)


@dataclass(frozen=True, slots=True)
class Upload:
    """One file a user hands over: its name, its bytes as they arrive (read only when it is
    stored) and, when the front end is told before reading, the size it declares."""

    name: str
    chunks: AsyncIterator[bytes]
    declared_size: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """An upload that was not stored, and the error that says why (a sentence, with the fix)."""

    name: str
    error: LabbotError

    @property
    def reason(self) -> str:
        """Why, as the user reads it after the file's name."""
        return str(self.error)


@dataclass(frozen=True, slots=True)
class Taken:
    """What one message's uploads came to: the saves, in order, and the refusals, in order."""

    saved: list[SaveResult] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    @property
    def evicted(self) -> set[str]:
        """The ids of files these saves removed to make room (more files than the user may
        keep); each save's receipt names them."""
        return {old.id for result in self.saved for old in result.evicted}

    @property
    def kept(self) -> list[SaveResult]:
        """The saves still there: one a later upload of the same message evicted is no longer
        the model's to see."""
        evicted = self.evicted
        return [result for result in self.saved if result.record.id not in evicted]

    @property
    def file_ids(self) -> list[str]:
        """Every stored file's id still there (the turn names them to the model): one a
        later upload of the same message evicted is gone, and its receipt said so."""
        return [result.record.id for result in self.kept]

    @property
    def image_ids(self) -> list[str]:
        """The stored files still there the model is shown as images."""
        return [r.record.id for r in self.kept if r.record.kind == IMAGE_KIND]


class Attachments:
    """Stores the files users attach, one by one, in the user's file store."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    @property
    def limit(self) -> int:
        """The most bytes one upload can be (the per-file limit, or the whole quota if less)."""
        return min(self.store.limits.max_file_bytes, self.store.limits.max_total_bytes)

    async def take(self, user: str, uploads: Iterable[Upload]) -> Taken:
        """Store each upload; one declared over the limit is refused before a byte is read.
        A refused upload (too large, empty, unreadable, over the quota) is named with why;
        the others are stored all the same."""
        taken = Taken()
        for upload in uploads:
            try:
                taken.saved.append(await self._save(user, upload))
            except LabbotError as exc:
                taken.refused.append(Refused(upload.name, exc))
            except OSError as exc:  # the upload's own bytes could not be read
                log.warning("upload.unreadable user=%s error=%s", user, type(exc).__name__)
                taken.refused.append(Refused(upload.name, FileError(exc.strerror or str(exc))))
        return taken

    async def _save(self, user: str, upload: Upload) -> SaveResult:
        limit = self.limit
        try:
            if upload.declared_size is not None and upload.declared_size > limit:
                raise FileError(  # never read: nothing is downloaded
                    f"{format_size(upload.declared_size)} is over the {format_size(limit)} limit,"
                    " so it was not downloaded."
                )
            return await self.store.save(user, upload.name, upload.chunks)
        finally:
            # Closed now, read or not: a stream cut off at the limit (a declared size that
            # lied) must not keep its download open while the next upload is read.
            if inspect.isasyncgen(upload.chunks):
                await upload.chunks.aclose()
