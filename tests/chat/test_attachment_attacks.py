"""Hostile uploads against the attachment intake: more attachments than the user may keep
(the later ones evict the earlier ones of the same message), a declared size that lies, a
stream that is never closed. The real file store on a real SQLite file; the real engine and
openai SDK against the loopback model API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image

from labbot.app import open_app, open_store
from labbot.chat.attachments import Attachments, Upload
from labbot.chat.images import ModelImages
from labbot.core import Final
from labbot.errors import FileTooLarge
from tests.conftest import chunks_of, model_settings
from tests.fakes.app import fake_settings
from tests.fakes.openai_server import FakeOpenAI, Reply


def png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(out, "PNG")
    return out.getvalue()


async def test_a_message_with_more_files_than_the_user_keeps_is_answered(tmp_path: Path) -> None:
    """Three attachments for a user who keeps two: the third evicts the first (an image) while
    the message is taken. The turn names only the files that are still there, shows only the
    image still there, and is answered (before: the turn failed on the evicted file's id)."""
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("seen"))
        settings = model_settings(
            tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o", MAX_FILES_PER_USER=2
        )
        async with open_app(settings) as services:
            assert services.engine is not None
            taken = await services.attachments.take(
                "42",
                [
                    Upload("first.png", chunks_of(png("red"))),
                    Upload("second.txt", chunks_of(b"notes")),
                    Upload("third.png", chunks_of(png("blue"))),
                ],
            )
            first, second, third = (r.record for r in taken.saved)
            assert [r.id for r in taken.saved[2].evicted] == [first.id]
            assert taken.file_ids == [second.id, third.id]
            assert taken.image_ids == [third.id]
            events = [
                event
                async for event in services.engine.turn(
                    "42", "c", "what are these?", file_ids=taken.file_ids, image_ids=taken.image_ids
                )
            ]
    assert isinstance(events[-1], Final), events[-1]
    asked = str(api.requests[-1]["messages"][-1]["content"])
    assert first.id not in asked and second.id in asked and third.id in asked


async def test_a_file_deleted_before_the_turn_does_not_fail_it(tmp_path: Path) -> None:
    """An attached file removed between the upload and the turn (the user's /delete, or a
    concurrent message's upload evicting it) is left out of the turn, which is answered."""
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("ok"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            assert services.engine is not None
            taken = await services.attachments.take(
                "42",
                [Upload("a.txt", chunks_of(b"notes")), Upload("p.png", chunks_of(png("red")))],
            )
            for file_id in taken.file_ids:
                await services.store.delete("42", file_id)
            events = [
                event
                async for event in services.engine.turn(
                    "42", "c", "and now?", file_ids=taken.file_ids, image_ids=taken.image_ids
                )
            ]
    assert isinstance(events[-1], Final), events[-1]
    asked = str(api.requests[-1]["messages"][-1]["content"])
    assert all(file_id not in asked for file_id in taken.file_ids)


async def test_a_stream_longer_than_declared_is_cut_and_closed(tmp_path: Path) -> None:
    """A small declared size on an endless stream: read only up to the limit, refused as too
    large, and the stream is closed (its download ends) before the next upload is read; a
    negative declared size is no way around the limit either."""
    closed: list[str] = []
    read = {"liar": 0, "negative": 0}

    async def endless(name: str) -> AsyncIterator[bytes]:
        try:
            while True:
                read[name] += 1
                yield b"x" * 65536
        finally:
            closed.append(name)

    async def then(name: str) -> AsyncIterator[bytes]:
        assert closed == ["liar", "negative"][: len(closed)] and len(closed) >= 1
        yield b"a\n1\n"

    settings = fake_settings(tmp_path / "data", MAX_FILE_SIZE_MB=1)
    async with open_store(settings) as store:
        taken = await Attachments(store).take(
            "42",
            [
                Upload("liar.csv", endless("liar"), declared_size=10),
                Upload("negative.csv", endless("negative"), declared_size=-1),
                Upload("ok.csv", then("ok")),
            ],
        )
        stored = await store.list("42")
    assert [r.name for r in taken.refused] == ["liar.csv", "negative.csv"]
    assert all(isinstance(r.error, FileTooLarge) for r in taken.refused)
    assert closed == ["liar", "negative"]
    assert max(read.values()) <= 17  # 1 MiB in 64 KiB chunks, and the one over it
    assert [r.name for r in stored] == ["ok.csv"]


async def test_names_that_say_image_get_no_bytes_to_the_model(tmp_path: Path) -> None:
    """Files named .png that are an HTML page or an SVG are not images for the model; a PNG
    signature in front of HTML is marked as an image but does not decode, so the model gets a
    note, never its bytes."""
    html = b"<!doctype html><html><script>steal()</script></html>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>steal()</script></svg>'
    front = b"\x89PNG\r\n\x1a\n<html><script>steal()</script></html>"
    settings = fake_settings(tmp_path / "data")
    async with open_store(settings) as store:
        taken = await Attachments(store).take(
            "42",
            [
                Upload("page.png", chunks_of(html)),
                Upload("drawing.png", chunks_of(svg)),
                Upload("front.png", chunks_of(front)),
            ],
        )
        front_id = taken.file_ids[2]
        assert len(taken.file_ids) == 3 and taken.image_ids == [front_id]
        assert await ModelImages(store).prepare("42", front_id, model="gpt-4o") is None
