"""File ids and display names. Neither ever becomes part of a path from user input."""

from __future__ import annotations

import base64
import re
import secrets
import unicodedata

FILE_ID_PATTERN = r"[a-z2-7]{26}"  # what new_file_id makes, and nothing else
_FILE_ID_RE = re.compile(FILE_ID_PATTERN)
MAX_NAME_BYTES = 200
MAX_EXTENSION_CHARS = 16
# Windows cannot save these names; a user downloading the file there would be stuck.
_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(10)}
# Bidi overrides and isolates can disguise an extension ("invoice\u202egpj.exe").
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def new_file_id() -> str:
    """A fresh random id: 128 bits in lowercase base32 (26 characters), no user or time in it."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def is_file_id(value: object) -> bool:
    """True if ``value`` has the shape of an id ``new_file_id`` gives."""
    return isinstance(value, str) and _FILE_ID_RE.fullmatch(value) is not None


def clean_filename(raw: str | None) -> str:
    """A safe display name: last path part, NFC, no control or bidi characters, length capped.

    Letters of every script, emoji and right-to-left text are kept; an empty result becomes
    "file".
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        ch
        for ch in name
        if unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Cn") and ch not in _BIDI_CONTROLS
    )
    name = " ".join(name.split()).strip(" .")
    if not name:
        return "file"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > MAX_EXTENSION_CHARS:
        stem, ext = name, ""
    if stem.split(".")[0].lower() in _RESERVED:
        stem += "_"
    suffix = f".{ext}" if ext else ""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode(errors="ignore").rstrip(" .") or "file"
    return stem + suffix
