"""What the terminal chat reads, driven through prompt_toolkit's pipe input (keys as a terminal
sends them, no pseudo-terminal needed): Python blocks read whole, history kept in a file across
runs, Ctrl-C that clears the line and twice leaves, plain lines from a pipe."""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from labbot.frontends.terminal_input import LineReader, python_input_complete

UP = "\x1b[A"
CTRL_C = "\x03"
ENTER = "\r"


def paste(text: str) -> str:
    """``text`` as a terminal sends a paste (bracketed paste)."""
    return f"\x1b[200~{text}\x1b[201~"


@contextmanager
def keyboard(history: Path | None = None, *, python: bool = True) -> Iterator[tuple]:
    """A LineReader on a pipe that ``send`` types into."""
    with create_pipe_input() as pipe:
        reader = LineReader(history=history, python=python, terminal=(pipe, DummyOutput()))
        yield reader, pipe.send_text


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("x = 1", True),
        ("def f(x):", False),
        ("def f(x):\n    return x", False),  # a block ends with a blank line
        ("def f(x):\n    return x\n", True),
        ("for i in range(2):\n    print(i)\n    ", True),
        ("print((1,\n", False),  # an open bracket
        ("if x:\n    y = 1\nz = 2", True),  # past the block
        ("x = = 1", True),  # run it: the SyntaxError is the answer
        ("", True),
    ],
)
def test_python_input_complete(text: str, complete: bool) -> None:
    """A cell is complete as IPython decides: it compiles and does not end inside a block."""
    assert python_input_complete(text) is complete


async def test_a_pasted_function_is_one_input_and_a_typed_loop_waits_for_the_blank_line() -> None:
    """A pasted `def` block and Enter give one input (not one per line); a typed `for` gets its
    body indented and runs when a blank line ends it."""
    with keyboard() as (reader, send):
        send(paste("def double(x):\n    y = x * 2\n    return y\n") + ENTER)
        assert await reader.read() == "def double(x):\n    y = x * 2\n    return y\n"
        send("for i in range(2):" + ENTER + "print('row', i)" + ENTER + ENTER)
        assert (await reader.read() or "").rstrip() == "for i in range(2):\n    print('row', i)"
        send("/upload it's.csv" + ENTER)  # a command is never held for more lines
        assert await reader.read() == "/upload it's.csv"


async def test_up_recalls_inputs_across_runs_from_a_private_file(tmp_path: Path) -> None:
    """Up brings back the last input in this run and in the next; the file is 0600."""
    history = tmp_path / "data" / "chat-history"
    with keyboard(history) as (reader, send):
        send("print(6 * 7)" + ENTER)
        assert await reader.read() == "print(6 * 7)"
        send(UP + ENTER)
        assert await reader.read() == "print(6 * 7)"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    with keyboard(history) as (reader, send):
        send(UP + ENTER)
        assert await reader.read() == "print(6 * 7)"


async def test_ctrl_c_clears_the_line_and_twice_leaves() -> None:
    """Ctrl-C drops what was typed (the next Enter reads only what follows); two in a row
    leave (None), as does Ctrl-D on an empty line."""
    with keyboard(python=False) as (reader, send):
        send("half typed" + CTRL_C + "hello" + ENTER)
        assert await reader.read() == "hello"
        send("more" + CTRL_C + CTRL_C)
        assert await reader.read() is None
    with keyboard(python=False) as (reader, send):
        send("\x04")
        assert await reader.read() is None


async def test_piped_lines_are_plain_and_python_blocks_end_at_a_blank_line() -> None:
    """Without a terminal each line is an input; a Python block is read until complete."""
    piped = io.StringIO("x = 1\ndef f():\n    return x\n\nprint(f())\n")
    reader = LineReader(history=None, python=True, stdin=piped)
    assert not reader.interactive
    got = [await reader.read() for _ in range(4)]
    assert got == ["x = 1", "def f():\n    return x", "print(f())", None]


BACKSPACE = "\x7f"
TAB = "\t"


async def test_typed_indentation_replaces_the_automatic_one() -> None:
    """A block typed with its own indentation (as from a book) is not indented twice, and a
    Tab at the line's start is one level."""
    with keyboard() as (reader, send):
        send("for i in range(2):" + ENTER + "    print(i)" + ENTER + ENTER)
        assert (await reader.read() or "").rstrip() == "for i in range(2):\n    print(i)"
        send("if True:" + ENTER + TAB + "x = 1" + ENTER + ENTER)
        assert (await reader.read() or "").rstrip() == "if True:\n    x = 1"
        send("def f():" + ENTER + "if 1:" + ENTER + "        y = 2" + ENTER + ENTER)
        assert (await reader.read() or "").rstrip() == "def f():\n    if 1:\n        y = 2"


async def test_backspace_in_the_indentation_removes_one_level() -> None:
    """Backspace in a line's leading blanks goes back to the previous level (not one space);
    elsewhere it removes one character."""
    with keyboard() as (reader, send):
        send("def f():" + ENTER + "if 1:" + ENTER + "a = 1" + ENTER + BACKSPACE + "return a")
        send(ENTER + BACKSPACE + "g = f" + ENTER)
        got = await reader.read()
        assert got == "def f():\n    if 1:\n        a = 1\n    return a\ng = f"
        send("abcd" + BACKSPACE + ENTER)
        assert await reader.read() == "abc"
