"""Terminal control sequences: what labbot never sends to a terminal on behalf of a model, a
file or user code (OSC 52 writes the clipboard, ``ESC c`` resets the terminal, CSI moves the
cursor and clears the screen, a bare carriage return overwrites what is shown)."""

from __future__ import annotations

import json
import re
from typing import Any

# ECMA-48: CSI and the string controls (OSC, DCS, SOS, PM, APC) up to their terminator, in
# their 7-bit (ESC x) and 8-bit (C1) forms; then any other escape; then every remaining C0
# control but tab and newline, DEL and C1.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A sequence (or a CR that may start CR LF) still open at the end of a piece of a stream.
_OPEN_TAIL = re.compile(
    r"(?:(?:\x1b\[|\x9b)[0-?]*[ -/]*"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])(?:(?!\x07|\x1b\\|\x9c).)*"
    r"|\x1b[ -/]*|\r)\Z",
    re.DOTALL,
)
MAX_PENDING = 4096  # characters of an open sequence held back; longer ones are dropped
_C1_OR_DEL = re.compile(r"[\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control sequences removed; tabs and newlines kept, a lone carriage return
    made a newline (so it cannot overwrite a line)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


def json_text(data: Any, **options: Any) -> str:
    """``data`` as JSON with DEL and C1 characters escaped too (json escapes only C0), so the
    text is inert on a terminal while the value is unchanged."""
    text = json.dumps(data, ensure_ascii=False, **options)
    return _C1_OR_DEL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class PrintableStream:
    """``printable`` for text that arrives in pieces: a sequence cut between two pieces is
    held back and removed whole, never shown half (one per output stream).

    stdout = PrintableStream()
    for piece in pieces: print(stdout.feed(piece), end="")
    print(stdout.flush())
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> str:
        """The printable part of ``pending + text``; an open sequence at its end waits."""
        text = self._pending + text
        tail = _OPEN_TAIL.search(text)
        cut = tail.start() if tail else len(text)
        self._pending = text[cut:] if len(text) - cut <= MAX_PENDING else ""
        return printable(text[:cut])

    def flush(self) -> str:
        """What is held back, made printable (an unfinished sequence is dropped)."""
        text, self._pending = self._pending, ""
        return printable(text)


# Terminals that show images, by what they say of themselves in the environment.
KITTY_TERMS = ("xterm-kitty", "xterm-ghostty")
ITERM_PROGRAMS = ("iTerm.app", "WezTerm")
MAX_INLINE_BYTES = 8 * 1024 * 1024


def image_protocol(env: dict[str, str]) -> str | None:
    """How this terminal shows an image ("kitty" or "iterm"), or None (then the path is
    printed): from TERM, TERM_PROGRAM, LC_TERMINAL and KITTY_WINDOW_ID."""
    if env.get("TERM") in KITTY_TERMS or "KITTY_WINDOW_ID" in env:
        return "kitty"
    if env.get("TERM_PROGRAM") in ITERM_PROGRAMS or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    return None


def inline_image(png: bytes, protocol: str) -> str:
    """The escape sequence that shows a PNG image in the terminal (kitty's graphics protocol
    in 4096-byte pieces, or iTerm2's inline file), followed by a new line."""
    import base64

    data = base64.b64encode(png).decode("ascii")
    if protocol == "iterm":
        return f"\x1b]1337;File=inline=1;size={len(png)};preserveAspectRatio=1:{data}\x07\n"
    pieces = [data[i : i + 4096] for i in range(0, len(data), 4096)] or [""]
    out = []
    for n, piece in enumerate(pieces):
        more = int(n < len(pieces) - 1)
        keys = f"f=100,a=T,m={more}" if n == 0 else f"m={more}"
        out.append(f"\x1b_G{keys};{piece}\x1b\\")
    return "".join(out) + "\n"
