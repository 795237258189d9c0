"""Blobs in object storage (S3-compatible, or memory for tests) through ``obstore``.

Keys mirror the local layout: ``<prefix>/<user>/<file_id>``. Uploads stream as multipart uploads
with a bounded number of parts in flight, so memory stays flat whatever the file size; an
aborted upload leaves no object (obstore aborts the multipart upload when the stream fails).

A writer never replaces an object: the writer checks that the key is free before it starts (a
HEAD), and an empty blob is one conditional put (``If-None-Match: *``). A streaming upload
cannot be conditional here (obstore makes any conditional put a single in-memory request), so
between that HEAD and the upload's completion an object written to the same key by someone
else would be replaced: only a holder of the bucket's write keys can do that, and they can
overwrite any object anyway. The bot's own ids are 128 random bits, never reused.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import MemoryStore, S3Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig

from labbot.errors import ConfigError
from labbot.files.blobs import StoredBlob, check_blob
from labbot.logs import mask_urls

log = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024  # multipart part size (S3 needs at least 5 MiB)
PARTS_IN_FLIGHT = 2
READ_CHUNK = 1024 * 1024
DELETE_BATCH = 1000  # the S3 DeleteObjects limit


class ObjectWriter:
    """Feeds one streaming upload. Chunks pass through a one-slot queue, so at most a chunk
    waits here and ``PARTS_IN_FLIGHT`` parts are in the upload."""

    _DONE = object()

    def __init__(self, store: Any, key: str, head_bytes: int) -> None:
        self.store = store
        self.key = key
        self.size = 0
        self.head = b""
        self._head_bytes = head_bytes
        self._hash = hashlib.sha256()
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        self._upload: asyncio.Future[Any] | None = None

    @property
    def sha256(self) -> str:
        """Hex digest of everything written so far."""
        return self._hash.hexdigest()

    @property
    def local_path(self) -> None:
        """Object blobs have no local path."""
        return None

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (item := await self._queue.get()) is not self._DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def _start(self) -> None:
        self._upload = asyncio.ensure_future(
            obstore.put_async(
                self.store,
                self.key,
                self._chunks(),
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        )

    async def _put(self, item: object) -> None:
        assert self._upload is not None
        put = asyncio.ensure_future(self._queue.put(item))
        done, _ = await asyncio.wait({put, self._upload}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:  # the upload ended early: it failed
            put.cancel()
            self._upload.result()
            raise OSError("the object store ended the upload early")

    async def write(self, chunk: bytes) -> None:
        """Append a chunk (hashed on a worker thread)."""
        if self._upload is None:
            self._start()
        if len(self.head) < self._head_bytes:
            self.head += chunk[: self._head_bytes - len(self.head)]
        self.size += len(chunk)
        await asyncio.to_thread(self._hash.update, chunk)
        await self._put(bytes(chunk))

    async def commit(self) -> None:
        """Finish the upload; the object becomes visible only now.

        :raises FileExistsError: (an empty blob) an object with this key exists.
        """
        if self._upload is None:
            try:
                await obstore.put_async(self.store, self.key, b"", mode="create")
            except AlreadyExistsError as exc:
                raise FileExistsError(errno.EEXIST, "an object with this key exists") from exc
            return
        await self._put(self._DONE)
        await self._upload

    async def abort(self) -> None:
        """Abandon the upload (no object is left); safe to call twice."""
        if self._upload is None or self._upload.done():
            return
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(OSError("upload aborted"))
        try:
            await self._upload
        except Exception:  # the abort itself: expected
            pass


class ObjectBlobStore:
    """Blobs in an obstore store under ``prefix``.

    blobs = ObjectBlobStore.from_url("s3://labbot/files", endpoint=..., ...)
    """

    def __init__(self, store: Any, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix.strip("/")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> ObjectBlobStore:
        """``s3://bucket/prefix`` (credentials from the arguments) or ``memory://``."""
        parts = urlsplit(url)
        if parts.scheme == "memory":
            return cls(MemoryStore(), parts.path)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(
                f"LABBOT_BLOB_URL must be file:///… or s3://bucket/… (got {mask_urls(url)!r})."
            )
        config: dict[str, Any] = {"region": region or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
        if access_key_id:
            config["access_key_id"] = access_key_id
        if secret_access_key:
            config["secret_access_key"] = secret_access_key
        if session_token:
            config["session_token"] = session_token
        client = (
            cast("ClientConfig", {"allow_http": True})
            if endpoint and endpoint.startswith("http://")
            else None
        )
        store = S3Store(parts.netloc, client_options=client, **config)
        return cls(store, parts.path)

    def key(self, user: str, file_id: str) -> str:
        """The object key of a blob."""
        user, file_id = check_blob(user, file_id)
        return f"{self.prefix}/{user}/{file_id}" if self.prefix else f"{user}/{file_id}"

    async def start(self) -> None:
        """Nothing to create: the bucket must exist."""

    async def close(self) -> None:
        """Nothing to release."""

    def local_path(self, user: str, file_id: str) -> None:
        """Object blobs have no local path; workers fetch them into a cache."""
        check_blob(user, file_id)
        return None

    async def writer(self, user: str, file_id: str, *, head_bytes: int) -> ObjectWriter:
        """A writer for a new blob.

        :raises FileExistsError: an object with this key exists (see the module's note).
        """
        key = self.key(user, file_id)
        try:
            await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return ObjectWriter(self.store, key, head_bytes)
        raise FileExistsError(errno.EEXIST, "an object with this key exists")

    async def read(self, user: str, file_id: str) -> AsyncGenerator[bytes, None]:
        """Stream a blob's bytes; FileNotFoundError if there is none."""
        result = await obstore.get_async(self.store, self.key(user, file_id))
        async for chunk in result.stream(min_chunk_size=READ_CHUNK):
            yield bytes(chunk)

    async def size(self, user: str, file_id: str) -> int:
        """A stored blob's size in bytes, from the store's metadata (a HEAD request, no
        bytes); FileNotFoundError if there is none."""
        meta = await obstore.head_async(self.store, self.key(user, file_id))
        return int(meta["size"])

    async def delete(self, user: str, file_id: str) -> None:
        """Remove a blob if it exists."""
        await self.delete_many([(user, file_id)])

    async def delete_many(self, blobs: list[tuple[str, str]]) -> None:
        """Remove several blobs, a thousand keys per request."""
        keys = [self.key(user, file_id) for user, file_id in blobs]
        await self._delete_keys(keys)

    async def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            await obstore.delete_async(self.store, keys[start : start + DELETE_BATCH])

    async def scan(self) -> tuple[list[StoredBlob], list[StoredBlob]]:
        """Every stored blob with its age. Unfinished multipart uploads are invisible here;
        a bucket lifecycle rule removes them (see the README)."""
        now = time.time()
        found: list[StoredBlob] = []
        prefix = f"{self.prefix}/" if self.prefix else None
        async for batch in obstore.list(self.store, prefix):
            for meta in batch:
                key = meta["path"]
                rest = key[len(prefix) :] if prefix else key
                user, _, file_id = rest.partition("/")
                if not file_id or "/" in file_id:
                    continue  # not ours
                age = now - meta["last_modified"].timestamp()
                found.append(StoredBlob(user, file_id, key, age))
        return found, []

    async def remove(self, blobs: list[StoredBlob]) -> None:
        """Remove scanned blobs."""
        await self._delete_keys([b.ref for b in blobs])
