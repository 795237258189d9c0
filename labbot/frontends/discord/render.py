"""Turning engine output into Discord messages: 2000-character pieces that never break a code
block, and one reply edited at most about once a second while the answer streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from discord.utils import escape_markdown

from labbot.files import SaveResult, render_upload_confirmation
from labbot.files.names import clean_filename

DISCORD_MESSAGE_LIMIT = 2000
EDIT_INTERVAL_SECONDS = 1.0
STREAMING_INDICATOR = " ⏳"


def shown_name(name: str) -> str:
    """A file name fit to post in Discord: cleaned as the file store cleans names (no control,
    bidi or escape characters) and Markdown-escaped."""
    return escape_markdown(clean_filename(name))


def upload_confirmation(result: SaveResult, *, now: datetime) -> str:
    """The file store's upload confirmation, with every file name in it shown safely."""
    record = replace(result.record, name=shown_name(result.record.name))
    evicted = [replace(old, name=shown_name(old.name)) for old in result.evicted]
    return render_upload_confirmation(replace(result, record=record, evicted=evicted), now=now)


def split_message(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> list[str]:
    """Split text into pieces of at most ``limit`` characters, at line breaks where possible;
    a code block cut in two is closed at the end of one piece and reopened (same language) at
    the start of the next."""
    pieces: list[str] = []
    fence = ""  # the opening line of the code block we are inside, if any
    current = ""
    for line in text.splitlines(keepends=True):
        while line:
            closing = "\n```" if fence else ""
            room = limit - len(current) - len(closing)
            if len(line) <= room:
                current += line
                if line.lstrip().startswith("```"):
                    fence = "" if fence else line.strip()
                line = ""
                continue
            if current.strip() and current.strip() != fence:
                pieces.append(current.rstrip("\n") + closing)
                current = (fence + "\n") if fence else ""
                continue
            # A single line longer than a whole message: cut at its last space that fits, or
            # hard when there is none in the second half.
            take = max(room, 1)
            space = line.rfind(" ", 0, take)
            if space > take // 2:
                take = space + 1
            current += line[:take]
            line = line[take:]
            pieces.append(current + closing)
            current = (fence + "\n") if fence else ""
    if current.strip() and current.strip() != fence:
        pieces.append(current.rstrip("\n") + ("\n```" if fence else ""))
    return pieces or [""]


class ReplyStream:
    """Streams text into Discord messages: edits at most every EDIT_INTERVAL_SECONDS, and when a
    message is full, finishes it and continues in a new one.

    ``send(text)`` posts a new message and returns an ``edit(text)`` coroutine function for it.
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[Callable[[str], Awaitable[None]]]],
        *,
        interval: float = EDIT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._text = ""
        self._done: list[str] = []  # pieces already final in earlier messages
        self._edit: Callable[[str], Awaitable[None]] | None = None
        self._shown = ""
        self._last = float("-inf")  # the first write shows at once
        self._lock = asyncio.Lock()

    @property
    def text(self) -> str:
        """Everything written so far."""
        return self._text

    async def write(self, text: str) -> None:
        """Add text; the visible message catches up within the interval."""
        self._text += text
        if self._clock() - self._last >= self._interval:
            await self.flush(final=False)

    async def flush(self, *, final: bool) -> None:
        """Show everything written so far (``final``: without the streaming indicator)."""
        async with self._lock:
            pieces = split_message(self._text, DISCORD_MESSAGE_LIMIT - len(STREAMING_INDICATOR))
            done_count = len(self._done)
            # Pieces before the last are complete messages; post those not yet posted.
            while len(pieces) - 1 > done_count:
                piece = pieces[done_count]
                await self._show(piece)
                self._done.append(piece)
                self._edit, self._shown = None, ""
                done_count += 1
            last = pieces[-1]
            shown = last if final else last + STREAMING_INDICATOR
            if last.strip() or final:
                await self._show(shown if shown.strip() else "…")
            self._last = self._clock()

    async def _show(self, text: str) -> None:
        if text == self._shown:
            return
        if self._edit is None:
            self._edit = await self._send(text)
        else:
            await self._edit(text)
        self._shown = text
