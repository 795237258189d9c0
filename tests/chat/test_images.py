"""Images stay cheap: kept by file id, sent downscaled and at most once per request, a bounded
number per request, and a provider's 413 drops the oldest instead of jamming the conversation.
The real openai SDK against the loopback API, the real file store and SQLite."""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from labbot.app import open_app
from labbot.chat.engine import Event
from labbot.chat.images import IMAGE_REF, MAX_IMAGE_BYTES
from labbot.core import Final, Status
from labbot.llm import tokens
from tests.conftest import chunks_of, model_settings
from tests.fakes.openai_server import FakeOpenAI, Reply

MIB = 1024 * 1024


def noise_png(side: int = 1800) -> bytes:
    """A PNG that does not compress: side x side random pixels (1800: about 9.7 MB)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _status(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) * 1024


def reset_peak_memory() -> int:
    """Reset this process's peak resident memory (Linux clear_refs 5); returns the current."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def peak_memory() -> int:
    """This process's peak resident memory since the last reset, in bytes."""
    return _status("VmHWM")


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return noise_png()


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def image_urls(request: dict[str, Any]) -> list[str]:
    """The image URLs one request carried, oldest first."""
    return [
        part["image_url"]["url"]
        for message in request["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


def notes(request: dict[str, Any]) -> list[str]:
    """The text parts of user messages (where left-out images are named)."""
    return [
        part["text"]
        for message in request["messages"]
        if message["role"] == "user" and isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "text"
    ]


async def test_ten_large_pngs_keep_requests_and_memory_bounded(
    tmp_path: Path, big_png: bytes
) -> None:
    """Ten 9.7 MB PNGs in one conversation: every turn is answered (a provider refusing bodies
    over 16 MB never has to), each request holds at most MAX_IMAGES_PER_REQUEST images, each
    downscaled to what the model sees (2048 box, 768 short side), and peak memory stays low
    (before: 124 MB requests, refused from the second turn, and over 1 GiB of peak memory)."""
    assert len(big_png) > 9 * MIB
    async with FakeOpenAI(max_body_bytes=16 * MIB) as api:
        api.respond_with(lambda body: Reply.text("seen"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            assert services.engine is not None
            for n in range(10):
                if n == 1:
                    base = reset_peak_memory()
                saved = await services.store.save("42", f"photo{n}.png", chunks_of(big_png))
                events = await collect(
                    services.engine.turn("42", "c", f"photo {n}?", image_ids=[saved.record.id])
                )
                assert isinstance(events[-1], Final), events[-1]
            rise = peak_memory() - base
            stored = await services.conversations.messages("42", "c")
    limit = settings.MAX_IMAGES_PER_REQUEST
    assert max(api.body_sizes) <= limit * MAX_IMAGE_BYTES * 4 / 3 + MIB
    last = api.requests[-1]
    urls = image_urls(last)
    assert len(urls) == limit
    assert all(url.startswith("data:") for url in urls)
    assert sum("left out" in text for text in notes(last)) == 10 - limit
    for url in urls:
        data = base64.b64decode(url.partition(",")[2])
        assert len(data) <= MAX_IMAGE_BYTES
        assert Image.open(io.BytesIO(data)).size == (768, 768)
    assert rise < 150 * MIB, f"memory peaked {rise / MIB:.0f} MiB above the start"
    # History keeps file ids with the size, never bytes.
    parts = [p for m in stored if isinstance(m["content"], list) for p in m["content"]]
    refs = [p["image_url"] for p in parts if p["type"] == "image_url"]
    assert len(refs) == 10 and all(r["url"].startswith(IMAGE_REF) for r in refs)
    assert all((r["width"], r["height"]) == (1800, 1800) for r in refs)


async def test_a_413_drops_the_oldest_images_and_the_conversation_goes_on(
    tmp_path: Path, big_png: bytes
) -> None:
    """A provider that refuses the request as too large (HTTP 413) gets it again with the
    oldest images left out; the user gets a note, the model a note in place of each image,
    and later turns do not hit the 413 again."""
    limit = 1_000_000
    async with FakeOpenAI(max_body_bytes=limit) as api:
        api.respond_with(lambda body: Reply.text("ok"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            assert services.engine is not None
            turns = []
            for n in range(4):
                saved = await services.store.save("42", f"p{n}.png", chunks_of(big_png))
                turns.append(
                    await collect(
                        services.engine.turn("42", "c", f"and {n}?", image_ids=[saved.record.id])
                    )
                )
    assert [events[-1].kind for events in turns] == ["final"] * 4
    refused = [size for size in api.body_sizes if size > limit]
    assert len(refused) == 1, api.body_sizes
    statuses = [e.text for events in turns for e in events if isinstance(e, Status)]
    assert len(statuses) == 1 and "left out" in statuses[0] and "413" in statuses[0]
    retried = api.requests[2]
    assert 1 <= len(image_urls(retried)) < 3
    assert any("left out" in text for text in notes(retried))
    assert len(image_urls(api.requests[3])) == len(image_urls(retried))


async def test_the_same_image_twice_is_sent_once(tmp_path: Path) -> None:
    """An image attached in two turns is sent once per request (the newest place), the older
    place names it instead."""
    png = noise_png(64)
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("ok"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            assert services.engine is not None
            image = (await services.store.save("42", "tiny.png", chunks_of(png))).record
            for text in ("look", "look again"):
                await collect(services.engine.turn("42", "c", text, image_ids=[image.id]))
    last = api.requests[-1]
    assert len(image_urls(last)) == 1
    assert image_urls(last)[0] in str(last["messages"][-1]["content"])
    assert any(image.id in text for text in notes(last))


def test_stored_image_refs_are_counted_by_size() -> None:
    """A stored reference with its size costs what the model's tile rule says, not the worst
    case: trimming sees small images as small."""
    part = {"type": "image_url", "image_url": {"url": IMAGE_REF + "f1", "detail": "auto"}}
    sized = {
        "type": "image_url",
        "image_url": {"url": IMAGE_REF + "f1", "detail": "auto", "width": 300, "height": 200},
    }
    worst = tokens.count_messages([{"role": "user", "content": [part]}], "gpt-4o")
    small = tokens.count_messages([{"role": "user", "content": [sized]}], "gpt-4o")
    assert small < worst
    assert small - tokens.count_messages([{"role": "user", "content": []}], "gpt-4o") == 85 + 170


@pytest.mark.parametrize(
    ("model", "detail", "size", "seen"),
    [
        ("gpt-4o", "auto", (4000, 3000), (1024, 768)),
        ("gpt-4o", "high", (1800, 1800), (768, 768)),
        ("gpt-4o", "auto", (300, 200), (300, 200)),
        ("gpt-4o", "low", (4000, 3000), (512, 384)),
        ("gpt-4.1-mini", "auto", (4000, 3000), (1408, 1056)),
    ],
)
def test_seen_size_follows_the_model_rules(
    model: str, detail: str, size: tuple[int, int], seen: tuple[int, int]
) -> None:
    """Images are downscaled to the size the model's image rule works at, never upscaled."""
    assert tokens.seen_size(*size, model=model, detail=detail) == seen


async def test_an_image_sent_to_a_model_without_vision_is_named_and_kept(tmp_path: Path) -> None:
    """A model that cannot see images is told the attached image is not shown (it was left
    out without a word), and the image stays in the history: after /model to one that sees,
    the next request carries it."""
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("ok"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="llama3")
        async with open_app(settings) as services:
            assert services.engine is not None
            image = (await services.store.save("42", "tiny.png", chunks_of(noise_png(8)))).record
            await collect(services.engine.turn("42", "c", "what is it?", image_ids=[image.id]))
            await services.engine.set_model("42", "gpt-4o")
            await collect(services.engine.turn("42", "c", "and now?"))
    blind, seeing = api.requests
    assert image_urls(blind) == []
    assert any(image.id in t and "does not see images" in t for t in notes(blind)), notes(blind)
    assert len(image_urls(seeing)) == 1
