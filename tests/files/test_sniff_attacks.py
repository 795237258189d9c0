"""More crafted inputs for the host's sniffer (beside test_hostile_bytes.py): each answers
within the ceiling in a child process, and a ZIP's crafted end records never make the host
read past its caps. Measured in-process at 64 KiB, each took under 35 ms (the list in the
closing note of the attack review)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from labbot.files import ziplisting
from tests.files.sniff_worker import SniffWorker

CEILING = 5.0
K = 64 * 1024
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_EOCD = struct.Struct("<4s4H2LH")

CRAFTED = {
    "end records whose comments all overrun": (b"PK\x05\x06" + b"\x00" * 16 + b"\xff\xff")
    * (K // 22),
    "JSON lines of 4,000-digit numbers": (b"[" + b"9" * 4000 + b"]\n") * 16,
    "a JSON opening nested 64 Ki deep": b"[" * K,
    '"type" then 64 KiB of spaces (the GeoJSON search)': b'{"type"' + b" " * (K - 20) + b":",
    "UTF-16 without BOM, CSV-shaped": ("a,b\n" * (K // 8)).encode("utf-16-le"),
    "one CSV field of doubled quotes": b'"' + b'a""' * (K // 3),
    "a line of 'create' over and over (the SQL check)": b"create\n" * (K // 7),
    "XML prolog of processing instructions": b"<?a?>" * (K // 5),
}


@pytest.fixture(scope="module")
def worker() -> Iterator[SniffWorker]:
    with SniffWorker() as child:
        yield child


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_heads_answer_within_the_ceiling(worker: SniffWorker, case: str) -> None:
    for name in ("x.csv", "x.json", "x", "x.zip"):
        answer = worker.kind(name, CRAFTED[case], timeout=CEILING)
        assert answer["seconds"] < CEILING, (case, name)


def _central(name: bytes, *, method: int = 0, size: int = 0, offset: int = 0) -> bytes:
    return (
        _CENTRAL.pack(
            b"PK\x01\x02",
            0,
            0,
            0,
            0,
            0,
            method,
            0,
            0,
            0,
            size,
            size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + name
    )


def test_crafted_zip_end_records_stay_bounded(tmp_path: Path) -> None:
    """ZIP64 sizes and offsets near 2**64, a directory far longer than the caps, a marker
    member whose offset points past the end: None or a capped listing, never an error."""
    huge = tmp_path / "zip64.zip"
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 2**64 - 1, 2**64 - 1, 2**63, 2**63
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)
    end = _EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    huge.write_bytes(record + locator + end)
    assert ziplisting.read_listing(huge) is None

    many = tmp_path / "many.zip"
    directory = b"".join(_central(b"a") for _ in range(30_000))
    many.write_bytes(
        directory + _EOCD.pack(b"PK\x05\x06", 0, 0, 30_000, 30_000, len(directory), 0, 0)
    )
    listing = ziplisting.read_listing(many)
    assert listing is not None and len(listing.names) == ziplisting.MAX_ENTRIES
    assert listing.total == 30_000

    past = tmp_path / "past.zip"
    entry = _central(b"mimetype", method=8, size=100, offset=2**32 - 1)
    past.write_bytes(entry + _EOCD.pack(b"PK\x05\x06", 0, 0, 1, 1, len(entry), 0, 0))
    listing = ziplisting.read_listing(past, ["mimetype"])
    assert listing is not None and listing.names == ["mimetype"] and listing.peek == {}
