"""The download endpoint: serves a stored file under a signed link, and nothing else.

Every request checks the signature and expiry, then asks the file store again, so a link stops
working once its file expires, is deleted or is evicted. Local blobs go out with aiohttp's
FileResponse (sendfile, range requests); blobs in object storage stream chunk by chunk (memory
stays flat; whole files only). Reads the file store only: never a session or a turn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from aiohttp import web

from labbot.errors import FileError
from labbot.files import FileRecord, FileStore
from labbot.files.names import clean_filename
from labbot.frontends.web.links import ROUTE, LinkSigner

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Frame-Options": "DENY",
}
WRITE_BYTES = 256 * 1024
_GONE = "This file is no longer stored: it expired, was deleted or was evicted.\n"


def content_disposition(name: str) -> str:
    """``attachment`` with the cleaned name: an ASCII fallback and the UTF-8 ``filename*``
    (RFC 6266, RFC 5987)."""
    name = clean_filename(name)
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers=SECURITY_HEADERS)


class DownloadServer:
    """The aiohttp application of download links over one file store."""

    def __init__(self, store: FileStore, signer: LinkSigner) -> None:
        self.store = store
        self.signer = signer
        self.app = web.Application()
        self.app.router.add_get(ROUTE, self.download)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """GET (and HEAD) one file by its signed link."""
        info = request.match_info
        user, file_id = info["user"], info["file_id"]
        verdict = self.signer.check(user, file_id, info["expires"], info["signature"])
        if verdict == "bad":
            log.info("download.refused reason=signature")
            return _text(404, "No such download link.\n")
        if verdict == "expired":
            log.info("download.refused reason=expired user=%s id=%s", user, file_id)
            return _text(410, "This download link has expired; ask the bot for a new one.\n")
        try:
            record = await self.store.get(user, file_id)
        except FileError:  # gone, or never there
            log.info("download.refused reason=gone user=%s id=%s", user, file_id)
            return _text(404, _GONE)
        log.info("download.served user=%s id=%s size=%d", user, file_id, record.size)
        headers = {
            **SECURITY_HEADERS,
            "Content-Disposition": content_disposition(record.name),
            "Content-Type": "application/octet-stream",
        }
        path = self.store.path(record)
        if path is not None:
            return web.FileResponse(path, headers=headers)
        return await self._stream(request, record, headers)

    async def _stream(
        self, request: web.Request, record: FileRecord, headers: dict[str, str]
    ) -> web.StreamResponse:
        """A blob from object storage, chunk by chunk, checked as ``FileStore.read`` checks it
        (a damaged blob ends the response short, never as a complete file)."""
        response = web.StreamResponse(headers={**headers, "Accept-Ranges": "none"})
        response.content_length = record.size
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in self.store.read(record.user, record.id):
                view = memoryview(chunk)  # a store may hand over large chunks: written in
                for start in range(0, len(view), WRITE_BYTES):  # slices, each drained first
                    await response.write(view[start : start + WRITE_BYTES])
        await response.write_eof()
        return response


@asynccontextmanager
async def serve_downloads(store: FileStore, signer: LinkSigner, listen: str) -> AsyncIterator[str]:
    """Serve download links on ``listen`` (host:port; port 0 picks a free one) until the block
    ends; yields the address it listens on as ``http://host:port``."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    runner = web.AppRunner(DownloadServer(store, signer).app, access_log=None)  # no links logged
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, int(port))
        await site.start()
        bound = runner.addresses[0][1]  # the port, when 0 asked for a free one
        shown = f"[{host}]" if ":" in host else host
        log.info("download.listening address=%s:%s", shown, bound)
        yield f"http://{shown}:{bound}"
    finally:
        await runner.cleanup()
