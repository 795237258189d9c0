"""What every loader module shares: LoadError and a file's raw bytes and decoded text.

Part of the sandbox loaders (see ``loaders``); standard library only, never labbot.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import importlib
import lzma
from pathlib import Path, PurePosixPath
from typing import Any


class LoadError(Exception):
    """A file could not be loaded; the message says why and what to try, in one or two sentences."""


MAX_DECOMPRESSED_BYTES = 1 << 30  # gzip/bz2/xz text files


def lazy_import(module: str) -> Any:
    """Import a library only when a loader needs it (module import stays cheap)."""
    return importlib.import_module(module)


def extension(name: str) -> str:
    return PurePosixPath(name.lower()).suffix.lstrip(".")


def read_head(path: str, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def read_bytes(path: str) -> bytes:
    """The file's bytes, transparently decompressed when it is gzip, bz2 or xz."""
    head = read_head(path, 6)
    opener = None
    if head.startswith(b"\x1f\x8b"):
        opener = gzip.open
    elif head.startswith(b"BZh"):
        opener = bz2.open
    elif head.startswith(b"\xfd7zXZ\x00"):
        opener = lzma.open
    if opener is None:
        return Path(path).read_bytes()
    with opener(path, "rb") as fh:
        data = fh.read(MAX_DECOMPRESSED_BYTES + 1)
    if len(data) > MAX_DECOMPRESSED_BYTES:
        raise LoadError("the file decompresses to more than 1 GiB; refusing to load it.")
    return data


def decode(raw: bytes, encoding: str | None = None) -> str:
    """Decode text: explicit encoding, else BOM, else UTF-8, else charset-normalizer's guess."""
    if encoding:
        return raw.decode(encoding)
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if raw.startswith(bom):
            return raw.decode(enc)
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16")):
        if raw.startswith(bom) or (enc == "utf-16" and raw.startswith(codecs.BOM_UTF16_BE)):
            return raw.decode(enc)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw[: 1 << 20]).best()
    enc = best.encoding if best is not None else "cp1252"
    return raw.decode(enc, errors="replace")


def read_text(path: str, encoding: str | None = None) -> str:
    return decode(read_bytes(path), encoding)
