"""Deleted means gone: an image deleted (by this process or another) or expired after a turn
sent it is not sent again; no byte of it reaches the model API afterwards. The real openai SDK
against the loopback API, the real file store and SQLite."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from labbot.app import open_app, open_store
from labbot.core import Final
from tests.conftest import chunks_of, model_settings
from tests.fakes.openai_server import FakeOpenAI, Reply


def png(seed: int) -> bytes:
    """A small PNG of random pixels (each one distinct)."""
    image = Image.frombytes("RGB", (48, 48), os.urandom(48 * 48 * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def data_urls(request: dict[str, Any]) -> list[str]:
    """The image data URLs one request carried."""
    return [
        part["image_url"]["url"]
        for message in request["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


async def test_deleted_and_expired_images_are_not_sent_again(tmp_path: Path) -> None:
    """Four images sent in one turn; then one is deleted here, one by another process (the
    CLI's `files rm`: another FileStore on the same data dir), one expires, one stays. The
    next request carries only the one that stayed: no data URL, no base64 of the others."""
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("seen"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            engine, store = services.engine, services.store
            assert engine is not None
            lifetime = settings.file_lifetime
            assert lifetime is not None
            start = datetime.now(UTC)
            store.clock = lambda: start
            ids = []
            for n in range(4):
                if n == 3:  # saved later: it outlives the third one's expiry
                    store.clock = lambda: start + lifetime - timedelta(hours=1)
                saved = await store.save("42", f"p{n}.png", chunks_of(png(n)))
                ids.append(saved.record.id)
            events = [e async for e in engine.turn("42", "c", "look", image_ids=ids)]
            assert isinstance(events[-1], Final)
            first = data_urls(api.requests[-1])
            assert len(first) == 4 and all(u.startswith("data:") for u in first)
            sent = dict(zip(ids, first, strict=True))  # each turn's parts keep their order

            await store.delete("42", ids[0])  # here
            async with open_store(settings) as other:  # another process's store
                await other.delete("42", ids[1])
            store.clock = lambda: start + lifetime + timedelta(seconds=1)  # the third expires
            assert [r.id for r in await store.list("42")] == [ids[3]]

            events = [e async for e in engine.turn("42", "c", "and now?")]
            assert isinstance(events[-1], Final)
    body = json.dumps(api.requests[-1])
    assert data_urls(api.requests[-1]) == [sent[ids[3]]]
    for gone in ids[:3]:
        payload = sent[gone].partition(",")[2]
        middle = payload[len(payload) // 2 :][:64]  # headers are alike; pixels are not
        assert middle not in body and sent[gone] not in body
        assert len(base64.b64decode(payload)) > 100  # it was an image's bytes
