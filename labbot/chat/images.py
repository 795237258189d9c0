"""Images for the model: history keeps a file id (and the size, for counting tokens); each
request carries the newest images, each once, downscaled to the size the model works at and
encoded small, as data (never a link that expires). Encodings are cached, bounded by bytes."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections import OrderedDict
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from PIL import Image

from labbot.chat.history import Message
from labbot.errors import FileNotFound
from labbot.files import FileRecord, FileStore
from labbot.llm import tokens
from labbot.llm.models import ModelInfo

log = logging.getLogger(__name__)

IMAGE_REF = "labbot-file:"  # how history stores an image: by file id, expanded per request
MAX_IMAGE_BYTES = 1024 * 1024  # one encoded image in a request, at most
# Pixels the bot decodes for one image, at most (16.8 M: a 4096 x 4096 RGBA image is 64 MiB).
# The header's size is checked against it before decoding; a JPEG is decoded at a fraction of
# its size (draft), so one of up to MAX_SOURCE_PIXELS passes when its draft is within the cap.
MAX_DECODE_PIXELS = 4096 * 4096
MAX_SOURCE_PIXELS = 64_000_000  # a JPEG larger than this is never opened
CACHE_BYTES = 64 * 1024 * 1024  # encoded images kept in memory, across conversations
JPEG_QUALITIES = (85, 70, 50, 35)
HEAD_BYTES = 1 << 20  # enough of the file to find the size in any header


class ImageTooLarge(Exception):
    """The image has more pixels than the bot decodes (MAX_DECODE_PIXELS)."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__(f"{width}x{height}")
        self.width, self.height = width, height


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One image as a request carries it."""

    mime: str
    data: bytes
    width: int
    height: int

    def data_url(self) -> str:
        """The image as a data: URL."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


def image_part(file_id: str, size: tuple[int, int] | None, detail: str = "auto") -> dict:
    """The content part history stores for an image: its file id and, when known, its size."""
    spec: dict[str, Any] = {"url": IMAGE_REF + file_id, "detail": detail}
    if size is not None:
        spec["width"], spec["height"] = size
    return {"type": "image_url", "image_url": spec}


def _ref(part: Any) -> str | None:
    """The file id of a stored image part, or None for any other part."""
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    url = (part.get("image_url") or {}).get("url", "")
    return url.removeprefix(IMAGE_REF) if url.startswith(IMAGE_REF) else None


class ModelImages:
    """Prepares a user's stored images for a model: read once, downscaled, encoded, cached.

    images = ModelImages(store)
    size = await images.size(user, file_id)                   # for history and token counts
    messages, sent = await images.expand(user, messages, model=model, limit=8)
    """

    def __init__(self, store: FileStore, *, cache_bytes: int = CACHE_BYTES) -> None:
        self.store = store
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str, str, str], PreparedImage] = OrderedDict()
        self._cached = 0
        self._decoding = asyncio.Semaphore(1)  # one big image in memory at a time
        store.on_removed(self._forget)  # deleted, evicted and expired images leave the cache

    async def _forget(self, records: list[FileRecord]) -> None:
        """Drop the encodings of removed files."""
        self._drop({(r.user, r.id) for r in records})

    def _drop(self, gone: set[tuple[str, str]]) -> None:
        for key in [k for k in self._cache if (k[0], k[1]) in gone]:
            self._cached -= len(self._cache.pop(key).data)

    async def size(self, user: str, file_id: str) -> tuple[int, int] | None:
        """An image's width and height from its header, or None when it cannot be read."""
        head = bytearray()
        try:
            async with aclosing(self.store.read(user, file_id)) as chunks:
                async for chunk in chunks:
                    head += chunk
                    if len(head) >= HEAD_BYTES:
                        break
        except FileNotFound:
            return None
        return tokens.image_size(bytes(head))

    async def expand(
        self, user: str, messages: list[Message], *, model: ModelInfo, limit: int
    ) -> tuple[list[Message], int]:
        """The messages with stored images made ready to send: the newest ``limit`` distinct
        images as data, each once; the others named in a note. Returns them and how many
        images were sent."""
        chosen: set[tuple[int, int]] = set()
        seen: set[str] = set()
        for i in range(len(messages) - 1, -1, -1):
            content = messages[i].get("content")
            parts = content if isinstance(content, list) else []
            for j in range(len(parts) - 1, -1, -1):
                file_id = _ref(parts[j])
                if file_id is None or file_id in seen:
                    continue
                seen.add(file_id)
                if model.vision and len(chosen) < limit:
                    chosen.add((i, j))
        sent = 0
        expanded = []
        for i, message in enumerate(messages):
            content = message.get("content")
            if not isinstance(content, list) or not any(_ref(p) for p in content):
                expanded.append(message)
                continue
            parts = []
            for j, part in enumerate(content):
                file_id = _ref(part)
                if file_id is None:
                    parts.append(part)
                    continue
                new = await self._part(user, file_id, part, model, (i, j) in chosen)
                sent += new.get("type") == "image_url"
                parts.append(new)
            expanded.append({**message, "content": parts})
        return expanded, sent

    async def _part(
        self, user: str, file_id: str, part: dict, model: ModelInfo, chosen: bool
    ) -> dict[str, Any]:
        if not model.vision:
            return _note(f"[image {file_id}: this model does not see images]")
        if not chosen:
            return _note(
                f"[image {file_id} left out of this request to keep it small (or it is shown"
                " later); it is still in the user's files]"
            )
        detail = part["image_url"].get("detail") or "auto"
        try:
            prepared = await self.prepare(user, file_id, model=model.name, detail=detail)
        except FileNotFound:
            return _note(f"[image {file_id} has expired]")
        except ImageTooLarge as big:
            return _note(
                f"[image {file_id} is {big.width}x{big.height} pixels, more than the"
                f" {MAX_DECODE_PIXELS / 1e6:.1f} million pixels the bot decodes to show a model,"
                " so it is not shown; it is still in the user's files: load_file it in code and"
                " save a smaller copy (e.g. with Image.thumbnail) to look at it]"
            )
        if prepared is None:
            return _note(f"[image {file_id} could not be read as an image]")
        return {"type": "image_url", "image_url": {"url": prepared.data_url(), "detail": detail}}

    async def prepare(
        self, user: str, file_id: str, *, model: str, detail: str = "auto"
    ) -> PreparedImage | None:
        """The image downscaled for ``model`` and encoded within MAX_IMAGE_BYTES; None when it
        is not an image Pillow reads. :raises FileNotFound: it is gone (deleted or expired, by
        this process or another: the store is asked before the cache answers). :raises
        ImageTooLarge: its header says more pixels than the bot decodes (checked before reading
        it whole)."""
        key = (user, file_id, model, detail)
        try:
            await self.store.get(user, file_id)
        except FileNotFound:
            self._drop({(user, file_id)})
            raise
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        async with self._decoding:
            size = await self.size(user, file_id)  # reads at most HEAD_BYTES
            if size is not None and size[0] * size[1] > MAX_SOURCE_PIXELS:
                raise ImageTooLarge(*size)
            data = await self.store.read_bytes(user, file_id)
            prepared = await asyncio.to_thread(_prepare, data, model, detail)
            del data
        if prepared is None:
            log.info("image.unreadable user=%s file=%s", user, file_id)
            return None
        self._remember(key, prepared)
        return prepared

    def _remember(self, key: tuple[str, str, str, str], prepared: PreparedImage) -> None:
        self._cache[key] = prepared
        self._cached += len(prepared.data)
        while self._cached > self.cache_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old.data)


def _note(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _prepare(data: bytes, model: str, detail: str) -> PreparedImage | None:
    """Decode, downscale to what the model sees, encode within MAX_IMAGE_BYTES (in a thread).
    The size in the header is checked before anything is decoded: Image.open reads only it,
    and draft() picks a JPEG's reduced decoding size. :raises ImageTooLarge: over the cap."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            width, height = source.size
            if width * height > MAX_SOURCE_PIXELS:
                raise ImageTooLarge(width, height)
            target = tokens.seen_size(width, height, model=model, detail=detail)
            source.draft("RGB", target)  # JPEG: decode at a fraction of the size
            if source.width * source.height > MAX_DECODE_PIXELS:  # the size decode would use
                raise ImageTooLarge(width, height)
            mode = "RGBA" if _has_alpha(source) else "RGB"
            source.load()
            image = source if source.mode == mode else source.convert(mode)  # no extra copy
            if image.size != target:
                image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            return _encode(image, photo=source.format == "JPEG")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _encode(image: Image.Image, *, photo: bool) -> PreparedImage:
    """PNG when it fits (charts stay sharp), else JPEG at falling quality, else smaller."""
    while True:
        if not photo:
            png = _save(image, "PNG", optimize=False)
            if len(png) <= MAX_IMAGE_BYTES:
                return PreparedImage("image/png", png, image.width, image.height)
        flat = _flatten(image)
        for quality in JPEG_QUALITIES:
            jpeg = _save(flat, "JPEG", quality=quality)
            if len(jpeg) <= MAX_IMAGE_BYTES:
                return PreparedImage("image/jpeg", jpeg, image.width, image.height)
        smaller = (max(1, image.width * 3 // 4), max(1, image.height * 3 // 4))
        image = image.resize(smaller, Image.Resampling.LANCZOS)


def _flatten(image: Image.Image) -> Image.Image:
    """The image on white, without alpha (JPEG has none)."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    flat = Image.new("RGB", image.size, "white")
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()
