"""Turning engine output into Discord messages: 2000-character pieces that never break a code
block, one reply edited at most about once a second while the answer streams, at most
MAX_MESSAGES_PER_ANSWER of them, masked links shown with their address, and names and error
texts Markdown-escaped."""

from __future__ import annotations

import asyncio
import re
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
MAX_MESSAGES_PER_ANSWER = 10  # past this the answer is cut (and attached whole by the caller)
MAX_KEPT_CHARS = 1_000_000  # of one answer's text, for the attached copy

# Code (fenced, maybe still open while streaming, or inline) is shown as written.
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
# [text](url), [text](<url>) and [text](url "title"); text may hold one level of [brackets].
_MASKED_LINK = re.compile(
    r"(?<!\\)\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]"
    r"\(\s*<?([^\s()<>]+(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+\"[^\"\n]*\")?\s*\)"
)


def shown_name(name: str) -> str:
    """A file name fit to post in Discord: cleaned as the file store cleans names (no control,
    bidi or escape characters) and Markdown-escaped."""
    return escape_markdown(clean_filename(name))


def shown_text(text: str) -> str:
    """A text Discord should show as written (error texts, which may repeat a name or a
    provider's words): Markdown-escaped."""
    return escape_markdown(text)


def show_links(text: str) -> str:
    """Masked links ``[text](url)`` outside code shown as ``text (<url>)``: the real address
    is visible (and not previewed), so a link cannot pretend to go somewhere else."""
    shown: list[str] = []
    start = 0
    for code in _CODE.finditer(text):
        shown += [_unmask(text[start : code.start()]), code.group()]
        start = code.end()
    shown.append(_unmask(text[start:]))
    return "".join(shown)


def _unmask(text: str) -> str:
    return _MASKED_LINK.sub(lambda m: f"{m[1]} (<{m[2]}>)", text)


EVICTED_IN_PUBLIC = "⚠️ To make room, {count} removed (see /files)."


def upload_confirmation(result: SaveResult, *, now: datetime, private: bool) -> str:
    """The file store's upload confirmation, with every file name in it shown safely. Unless
    ``private`` (a DM), the files evicted to make room are not named: one of them may have
    been uploaded in a DM, and the confirmation is public."""
    record = replace(result.record, name=shown_name(result.record.name))
    evicted = [replace(old, name=shown_name(old.name)) for old in result.evicted]
    shown = replace(result, record=record, evicted=evicted if private else [])
    text = render_upload_confirmation(shown, now=now)
    if private or not evicted:
        return text
    count = "an older file was" if len(evicted) == 1 else f"{len(evicted)} older files were"
    lines = text.split("\n")
    # Where the store's text names evicted files: after its four lines about the new file.
    lines.insert(4, EVICTED_IN_PUBLIC.format(count=count))
    return "\n".join(lines)


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
    message is full, finishes it and continues in a new one, up to ``max_messages``; past
    them the answer is ``cut`` (the caller says so and attaches ``text``). Masked links are
    shown with their address.

    ``send(text)`` posts a new message and returns an ``edit(text)`` coroutine function for it.
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[Callable[[str], Awaitable[None]]]],
        *,
        interval: float = EDIT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_messages: int = MAX_MESSAGES_PER_ANSWER,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._max_messages = max_messages
        self._text = ""
        self.dropped = 0  # characters written past MAX_KEPT_CHARS (not kept at all)
        self.cut = False  # the answer outgrew max_messages: the rest is not shown
        self._done: list[str] = []  # pieces already final in earlier messages
        self._edit: Callable[[str], Awaitable[None]] | None = None
        self._shown = ""
        self._last = float("-inf")  # the first write shows at once
        self._lock = asyncio.Lock()

    @property
    def text(self) -> str:
        """Everything written so far (its first MAX_KEPT_CHARS characters)."""
        return self._text

    async def write(self, text: str) -> None:
        """Add text; the visible message catches up within the interval."""
        room = MAX_KEPT_CHARS - len(self._text)
        self._text += text[:room]
        self.dropped += max(0, len(text) - room)
        if not self.cut and self._clock() - self._last >= self._interval:
            await self.flush(final=False)

    async def flush(self, *, final: bool) -> None:
        """Show everything written so far (``final``: without the streaming indicator)."""
        async with self._lock:
            if self.cut:
                return
            limit = DISCORD_MESSAGE_LIMIT - len(STREAMING_INDICATOR)
            pieces = split_message(show_links(self._text), limit)
            if len(pieces) > self._max_messages:  # show what fits, final; the rest is cut
                pieces, final, self.cut = pieces[: self._max_messages], True, True
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
