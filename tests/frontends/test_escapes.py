"""Control sequences never reach a terminal, also when a stream cuts them in two."""

from __future__ import annotations

import json

from labbot.frontends.escapes import PrintableStream, json_text, printable

EVIL = "A\x1b]52;c;ZXZpbA==\x07B\x1bcC\x1b[2JD\x9b31mE\x07F\rG\tH\x1bP1$r\x1b\\I\x00\x7fJ\r\n"
CLEAN = "ABCDEF\nG\tHIJ\n"


def test_printable_removes_sequences_and_controls_keeps_tabs_and_newlines() -> None:
    """OSC 52, ESC c, CSI (7- and 8-bit), DCS, bell, NUL and DEL go; a lone CR becomes a
    newline; tab and newline stay."""
    assert printable(EVIL) == CLEAN
    assert printable("plain text, ünïcode 📊\tand\nlines") == "plain text, ünïcode 📊\tand\nlines"


def test_a_sequence_cut_between_pieces_is_removed_whole() -> None:
    """Whatever the split, the pieces print the same as the whole."""
    for cut in range(len(EVIL) + 1):
        stream = PrintableStream()
        assert stream.feed(EVIL[:cut]) + stream.feed(EVIL[cut:]) + stream.flush() == CLEAN, cut


def test_json_text_escapes_c1_and_del_and_keeps_the_value() -> None:
    """JSON output is inert on a terminal and parses back to the same value."""
    text = json_text({"t": EVIL})
    assert not any(c in text for c in "\x1b\x9b\x07\x7f\x00")
    assert json.loads(text) == {"t": EVIL}
