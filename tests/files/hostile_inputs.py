"""Hostile inputs for the host's parsers, shared by tests/files/test_hostile_bytes.py and
bench/hostile.py: the cases reported in issue 17 grown to a size, a ZIP whose central
directory holds a million entries, and a PNG whose header claims 7999 x 7999 pixels."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path


def grown(unit: bytes, size: int, *, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """``prefix`` + ``unit`` repeated + ``suffix``, ``size`` bytes in all (or just over)."""
    count = max(1, (size - len(prefix) - len(suffix)) // len(unit))
    return prefix + unit * count + suffix


# Each sniffer path with an input that made the old code backtrack (issue 17), at any size.
# Their kind names are what the new code answers for them.
def markup(size: int) -> bytes:
    """XML prolog pieces then a bad tag: 162 bytes of it ran for over a minute."""
    return grown(b"<?a?>", size, suffix=b"<1")


def newline_flood(size: int) -> bytes:
    """One letter then newlines (the SQL pattern's `^\\s*` rescanned every line)."""
    return grown(b"\n", size, prefix=b"a")


def csv_quotes(size: int) -> bytes:
    """Two lines of `,"` (csv.Sniffer's quote patterns), then a short last line (the one a
    full head may have cut, which the sniffer drops)."""
    half = grown(b',"', size // 2 - 2)
    return half + b"\n" + half + b"\nx"


def json_flood(size: int) -> bytes:
    """A JSON-looking document that never closes, with "type" keys and spaces."""
    return grown(b'{"type" :   [', size)


def sql_flood(size: int) -> bytes:
    """Statement verbs each followed by whitespace that never reaches TABLE."""
    return grown(b"CREATE \t \n", size, prefix=b"x\n")


def zip_head(size: int) -> bytes:
    """A ZIP head of central-directory and local headers named "mimetype", none complete."""
    entry = b"PK\x03\x04" + bytes(22) + struct.pack("<HH", 8, 0) + b"mimetype"
    return grown(entry + b"PK\x01\x02" + bytes(42), size)


def image_header(size: int) -> bytes:
    """A JPEG whose segments are all tiny, so the size scan walks the whole head."""
    return grown(b"\xff\xfe\x00\x02", size, prefix=b"\xff\xd8")


def noise(size: int) -> bytes:
    """Random bytes (the signature tables, puremagic's among them)."""
    return random.Random(size).randbytes(size)


PATHS = {
    "markup (<?a?>... <1)": markup,
    "newlines after a letter": newline_flood,
    'csv lines of ,"': csv_quotes,
    "json never closed": json_flood,
    "sql verbs + whitespace": sql_flood,
    "zip headers in head": zip_head,
    "jpeg tiny segments": image_header,
    "random bytes": noise,
}


def million_entry_zip(path: Path, entries: int = 1_000_000) -> Path:
    """A ZIP of ``entries`` empty stored members (ZIP64 end records), written quickly: every
    central directory entry is the same bytes and points at one local header (about 47 MiB)."""
    name = b"a"
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0) + name
    central = (
        struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 45, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
        )
        + name
    )
    cd_offset, cd_size = len(local), len(central) * entries
    end64_at = cd_offset + cd_size
    end64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_size, cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end64_at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(local)
        block = central * 10_000
        for _ in range(entries // 10_000):
            f.write(block)
        f.write(central * (entries % 10_000))
        f.write(end64 + locator + end)
    return path


def huge_png(side: int = 7999) -> bytes:
    """A PNG of side x side pixels of one palette colour: about 62 KiB on disk; 61 MiB
    decoded, 183 MiB as RGB (the bot's memory rose by 308 MiB for it)."""
    row = bytes(1 + side)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 3, 0, 0, 0)  # 8-bit palette
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", b"\x20\x60\xa0")
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
