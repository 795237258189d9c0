"""Attachments: every upload of a message stored on its own (one refused says why and stops
none of the others), one declared too large never read, and the images marked for the model.
The real file store on a real SQLite file."""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image

from labbot.app import open_store
from labbot.chat.attachments import Attachments, Upload
from labbot.errors import FileTooLarge
from tests.conftest import chunks_of
from tests.fakes.app import fake_settings


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, "PNG")
    return out.getvalue()


async def unreadable() -> AsyncIterator[bytes]:
    """A source that fails mid-read, as a local file on a failing disk does."""
    yield b"a,b\n"
    raise OSError(errno.EIO, "Input/output error")


async def test_each_upload_on_its_own_and_images_marked(tmp_path: Path) -> None:
    """Good files around bad ones are all stored, in order; each bad one has its sentence;
    only the image goes to the model as one; the store holds exactly the good ones."""
    read: list[str] = []

    async def watched(name: str, data: bytes) -> AsyncIterator[bytes]:
        read.append(name)
        yield data

    settings = fake_settings(tmp_path / "data", MAX_FILE_SIZE_MB=1)
    async with open_store(settings) as store:
        taken = await Attachments(store).take(
            "42",
            [
                Upload("a.csv", chunks_of(b"x\n1\n")),
                Upload("big.csv", watched("big.csv", b"y"), declared_size=50 * 2**20),
                Upload("empty.txt", chunks_of()),
                Upload("plot.png", chunks_of(png())),
                Upload("broken.csv", unreadable()),
                Upload("huge.bin", chunks_of(b"z" * (2 * 2**20))),
                Upload("b.json", chunks_of(b'{"k": 1}')),
            ],
        )
        stored = await store.list("42")

    assert [r.record.name for r in taken.saved] == ["a.csv", "plot.png", "b.json"]
    assert taken.file_ids == [r.record.id for r in taken.saved]
    assert taken.image_ids == [taken.saved[1].record.id]
    reasons = {r.name: r.reason for r in taken.refused}
    assert list(reasons) == ["big.csv", "empty.txt", "broken.csv", "huge.bin"]
    assert "over the 1.0 MiB limit, so it was not downloaded" in reasons["big.csv"]
    assert read == []  # declared too large: not a byte read
    assert "empty" in reasons["empty.txt"]
    assert reasons["broken.csv"] == "Input/output error"
    assert isinstance(taken.refused[3].error, FileTooLarge)
    assert sorted(r.name for r in stored) == ["a.csv", "b.json", "plot.png"]


async def test_a_file_evicted_by_a_later_one_of_the_message_is_not_given_to_the_model(
    tmp_path: Path,
) -> None:
    """With room for one file, the second upload evicts the first (the receipt says so): the
    turn is given only the live file, not the evicted one's id (which failed the whole turn)."""
    settings = fake_settings(tmp_path / "data", MAX_FILES_PER_USER=1)
    async with open_store(settings) as store:
        taken = await Attachments(store).take(
            "42", [Upload("a.png", chunks_of(png())), Upload("b.csv", chunks_of(b"x\n1\n"))]
        )
        [live] = await store.list("42")
    [first, second] = taken.saved
    assert [r.id for r in second.evicted] == [first.record.id]  # said in b.csv's receipt
    assert taken.file_ids == [live.id] == [second.record.id]
    assert taken.image_ids == []
