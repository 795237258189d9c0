"""Download links for files too large to post in a chat: a link signed by the bot and served
by its small HTTP endpoint (``PUBLIC_URL`` + ``DOWNLOAD_LISTEN``), or a presigned address when
files live in S3. Reads the file store only, never a session or a turn.

    async with open_downloads(settings, app.store) as downloads:
        url = await downloads.link(user, file_id)    # None: no way to link; see ENABLE_HINT
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from labbot.config import Settings
from labbot.files import FileStore
from labbot.files.objects import ObjectBlobStore
from labbot.frontends.web.links import LinkSigner, signing_key
from labbot.frontends.web.server import serve_downloads

log = logging.getLogger(__name__)

ENABLE_HINT = (
    "The bot's operator can turn on download links: set PUBLIC_URL and DOWNLOAD_LISTEN"
    " (see the README's download links)."
)


class DownloadLinks:
    """Links to users' stored files, for the front ends."""

    def __init__(self, store: FileStore, signer: LinkSigner | None = None) -> None:
        self.store = store
        self.signer = signer

    async def link(self, user: str, file_id: str) -> str | None:
        """A download link to a live file of ``user`` (FileNotFound otherwise), or None when
        there is no way to make one."""
        record = await self.store.get(user, file_id)
        if self.signer is not None:
            return self.signer.url(user, file_id, until=record.expires_at)
        if self.available and isinstance(self.store.blobs, ObjectBlobStore):
            return await self._presigned(self.store.blobs, user, file_id, record.expires_at)
        return None

    async def _presigned(
        self, blobs: ObjectBlobStore, user: str, file_id: str, until: datetime | None
    ) -> str | None:
        import obstore

        lifetime = timedelta(hours=24)
        if until is not None:
            lifetime = max(timedelta(seconds=1), min(lifetime, until - self.store.clock()))
        return await obstore.sign_async(blobs.store, "GET", blobs.key(user, file_id), lifetime)

    @property
    def available(self) -> bool:
        """Whether links can be made: the bot's endpoint, or files in S3."""
        if self.signer is not None:
            return True
        from obstore.store import S3Store

        blobs = self.store.blobs
        return isinstance(blobs, ObjectBlobStore) and isinstance(blobs.store, S3Store)

    def allow(self, url: str) -> bool:
        """True for a valid signed link of ours (the link policy's ``allow``)."""
        return self.signer is not None and self.signer.is_ours(url)


@asynccontextmanager
async def open_downloads(settings: Settings, store: FileStore) -> AsyncIterator[DownloadLinks]:
    """The bot's download links: with PUBLIC_URL and DOWNLOAD_LISTEN set, the endpoint is
    served until the block ends; else links are presigned S3 addresses, or none."""
    if not settings.downloads_enabled:
        yield DownloadLinks(store)
        return
    assert settings.PUBLIC_URL is not None and settings.DOWNLOAD_LISTEN is not None
    lifetime = timedelta(hours=settings.DOWNLOAD_LINK_HOURS)
    secret = await asyncio.to_thread(signing_key, settings)
    signer = LinkSigner(secret, settings.PUBLIC_URL, lifetime=lifetime, now=store.clock)
    async with serve_downloads(store, signer, settings.DOWNLOAD_LISTEN):
        yield DownloadLinks(store, signer)


__all__ = ["ENABLE_HINT", "DownloadLinks", "LinkSigner", "open_downloads", "serve_downloads"]
