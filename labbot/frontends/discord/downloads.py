"""Files too large to upload here: a download link each (the bot's own endpoint, or S3), or,
when the operator has turned neither on, a sentence saying how to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from labbot.errors import FileNotFound
from labbot.files.receipt import format_size
from labbot.frontends.discord.render import shown_name
from labbot.frontends.web import ENABLE_HINT, DownloadLinks


class _Named(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...


async def too_large(
    downloads: DownloadLinks, user: str, files: Sequence[_Named], limit: int
) -> str | None:
    """The message for ``files`` over Discord's ``limit``: a link each, the rest named by id
    with how links are turned on; None when every file is gone meanwhile."""
    lines, unlinked = [], []
    for file in files:
        try:
            url = await downloads.link(user, file.id)
        except FileNotFound:  # evicted by a later output, or deleted meanwhile
            continue
        label = f"{shown_name(file.name)} ({format_size(file.size)})"
        if url is None:
            unlinked.append(f"{shown_name(file.name)} (`{file.id}`, {format_size(file.size)})")
        else:
            lines.append(f"📥 {label}: {url}")
    if unlinked:
        lines.append(
            f"Too large to attach here (over {format_size(limit)}): {', '.join(unlinked)}."
            f" {ENABLE_HINT}"
        )
    return "\n".join(lines) or None
