"""File ids and display names. Neither ever becomes part of a path from user input."""

from __future__ import annotations

import base64
import re
import secrets
import unicodedata

import regex

FILE_ID_PATTERN = r"[a-z2-7]{26}"  # what new_file_id makes, and nothing else
_FILE_ID_RE = re.compile(FILE_ID_PATTERN)
MAX_NAME_BYTES = 200
MAX_EXTENSION_CHARS = 16
# Windows cannot save these names; a user downloading the file there would be stuck.
_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{n}" for p in ("com", "lpt") for n in [*range(10), "\u00b9", "\u00b2", "\u00b3"]
}
# What no one sees, from the Unicode database (the ``regex`` module's properties; the standard
# ``unicodedata`` has no Default_Ignorable_Code_Point): controls, every format character (Cf:
# zero-width spaces and joiners, word joiner, BOM, soft hyphen, ALM U+061C, the TAG characters
# that spell text a model reads and people do not), the whole Bidi_Control set (overrides and
# isolates disguise an extension: "invoice\u202egpj.exe"), surrogates, private-use and unassigned
# code points (no agreed look), and the default-ignorables that are not Cf: Hangul fillers,
# variation selectors (they can smuggle bytes after an emoji), the grapheme joiner.
_INVISIBLE = regex.compile(
    r"[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Bidi_Control}\p{Default_Ignorable_Code_Point}]+"
)
_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# Symbols whose glyph is blank (no property says so): spaces in a name, so a run of them cannot
# push an extension out of sight ("report.pdf⠀⠀⠀⠀⠀⠀.exe").
_BLANK_GLYPHS = str.maketrans(dict.fromkeys("\u2800\U0001d159\U00016fe4", " "))


def new_file_id() -> str:
    """A fresh random id: 128 bits in lowercase base32 (26 characters), no user or time in it."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def is_file_id(value: object) -> bool:
    """True if ``value`` has the shape of an id ``new_file_id`` gives."""
    return isinstance(value, str) and _FILE_ID_RE.fullmatch(value) is not None


def visible_text(raw: str) -> str:
    """``raw`` in NFC with every invisible character removed (see ``_INVISIBLE``)."""
    # Twice NFC: removing a character can leave a new composable pair ("e<ZWSP>\u0301").
    name = _INVISIBLE.sub("", unicodedata.normalize("NFC", raw))
    # Python's own database too, in case its Unicode version knows a character regex does not.
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _UNSEEN_CATEGORIES)
    return unicodedata.normalize("NFC", name)


def clean_filename(raw: str | None) -> str:
    """A safe display name: last path part, NFC, nothing invisible, length capped.

    Letters of every script, accents, emoji and right-to-left text are kept; invisible and
    unassigned characters are removed (see ``_INVISIBLE``); an empty result becomes "file".
    """
    name = visible_text(raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1].translate(_BLANK_GLYPHS)
    name = " ".join(name.split()).strip(" .")
    if not name:
        return "file"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > MAX_EXTENSION_CHARS:
        stem, ext = name, ""
    first, dot, rest = stem.partition(".")
    if first.rstrip(" ").lower() in _RESERVED:  # Windows: "con.tar.gz" is CON, not "con.tar_"
        stem = f"{first}_{dot}{rest}"
    suffix = f".{ext}" if ext else ""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode(errors="ignore").rstrip(" .") or "file"
    return stem + suffix
