"""What the terminal chat reads: lines edited with prompt_toolkit (history kept in a file,
Python blocks that know when they are complete, Ctrl-C that clears the line and twice leaves), or
plain lines when the input is not a terminal.

reader = LineReader(history=Path("chat-history"), python=True)
while (text := await reader.read()) is not None:
    ...
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tokenize
import warnings
from codeop import compile_command
from pathlib import Path
from typing import Any, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import Output

LEAVE_HINT = "(Ctrl-C again or Ctrl-D to leave)"
INDENT = "    "


def python_input_complete(text: str) -> bool:
    """True when ``text`` is ready to run as one cell (as IPython decides): it compiles (or has
    an error to show) and does not end inside an indented block (a blank line ends one)."""
    if not text.strip():
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "invalid escape sequence" and the like
            code = compile_command(text, "<input>", "exec")
    except (SyntaxError, ValueError, OverflowError):
        return True  # run it: the error is the answer
    if code is None:
        return False
    lines = text.split("\n")
    if len(lines) > 1 and not lines[-1].strip():
        return True
    return not _ends_inside_block(text)


def _ends_inside_block(text: str) -> bool:
    """True when the last statement is indented in a block (``def``, ``for``...)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for token in reversed(tokens[:-1]):  # the last is ENDMARKER
        if token.type == tokenize.DEDENT:
            return True
        if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT):
            return False
    return False


def _indent_after(line: str) -> str:
    """The indentation of the line after ``line`` (one level more after a colon)."""
    indent = line[: len(line) - len(line.lstrip())]
    return indent + "    " if line.rstrip().endswith(":") else indent


def private_history(path: Path) -> FileHistory:
    """The history file (created readable by its owner only: it holds what was typed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    return FileHistory(str(path))


class LineReader:
    """Reads one input at a time (a chat message, a Python cell, a slash command)."""

    def __init__(
        self,
        *,
        history: Path | None,
        python: bool,
        stdin: TextIO | None = None,
        terminal: tuple[Input, Output] | None = None,
        completer: Completer | None = None,
    ) -> None:
        self.python = python
        self._auto_indent: tuple[int, str] | None = None  # (cursor, indent) Enter inserted
        self.stdin = stdin or sys.stdin
        self.interactive = terminal is not None or (self.stdin.isatty() and sys.stdout.isatty())
        self._session: PromptSession[str] | None = None
        self._hint = ""  # shown in the empty prompt line after a first Ctrl-C
        if self.interactive:
            store = InMemoryHistory() if history is None else private_history(history)
            self._session = PromptSession(
                input=terminal[0] if terminal else None,
                output=terminal[1] if terminal else None,
                history=store,
                multiline=True,
                key_bindings=self._bindings(),
                lexer=PygmentsLexer.from_filename("cell.py") if python else None,
                prompt_continuation=lambda width, *_: "." * (width - 1) + " ",
                enable_history_search=False,
                completer=completer,
                complete_while_typing=False,  # Tab asks (the session answers)
                # In the prompt line, not printed above it: printing leaves the terminal's raw
                # mode for a moment, and a second Ctrl-C then would be a SIGINT, not a key.
                placeholder=lambda: [("fg:ansibrightblack", self._hint)],
            )

    @property
    def prompt(self) -> str:
        """What the prompt says."""
        return ">>> " if self.python else "you> "

    async def read(self) -> str | None:
        """The next input; None when the user leaves (Ctrl-D, Ctrl-C twice, end of input)."""
        if self._session is None:
            return await self._read_plain()
        self._hint = ""
        try:
            return await self._session.prompt_async(self.prompt, handle_sigint=False)
        except EOFError:
            return None

    def _submit_ready(self, text: str) -> bool:
        return not self.python or text.lstrip().startswith("/") or python_input_complete(text)

    def _bindings(self) -> KeyBindings:
        bindings = KeyBindings()

        @bindings.add("enter")
        def _enter(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if self._submit_ready(buffer.text):
                buffer.validate_and_handle()
            else:
                indent = _indent_after(buffer.document.current_line_before_cursor)
                buffer.insert_text("\n" + indent)
                self._auto_indent = (buffer.cursor_position, indent) if indent else None

        at_indent = Condition(lambda: self._line_start(empty=False))
        at_start = Condition(lambda: self._line_start(empty=True))

        @bindings.add(" ", filter=at_indent)
        def _space(event: KeyPressEvent) -> None:
            # Indentation typed by hand replaces the one Enter put there (no double indent).
            self._drop_auto_indent(event.current_buffer)
            event.current_buffer.insert_text(" ")

        @bindings.add("tab", filter=at_start)
        def _tab(event: KeyPressEvent) -> None:
            self._drop_auto_indent(event.current_buffer)
            event.current_buffer.insert_text(INDENT)

        @bindings.add("backspace", filter=at_indent)
        def _dedent(event: KeyPressEvent) -> None:
            # In the indentation Backspace removes one level (to the previous multiple of 4).
            self._auto_indent = None
            buffer = event.current_buffer
            width = len(buffer.document.current_line_before_cursor)
            buffer.delete_before_cursor((width - 1) % len(INDENT) + 1)

        @bindings.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @bindings.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            if event.is_repeat:
                event.app.exit(exception=EOFError())
                return
            event.current_buffer.reset()
            self._hint = LEAVE_HINT

        @bindings.add("c-d")
        def _leave(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if buffer.text:
                buffer.delete()
            else:
                event.app.exit(exception=EOFError())

        return bindings

    def _line_start(self, *, empty: bool) -> bool:
        """True when only blanks precede the cursor on a Python line (``empty``: or nothing)."""
        if not self.python or self._session is None:
            return False
        before = self._session.default_buffer.document.current_line_before_cursor
        return not before.strip() and (empty or bool(before))

    def _drop_auto_indent(self, buffer: Any) -> None:
        """Remove the indentation Enter inserted, if the cursor is still just after it."""
        if self._auto_indent is not None:
            cursor, indent = self._auto_indent
            self._auto_indent = None
            if (
                buffer.cursor_position == cursor
                and buffer.document.current_line_before_cursor == indent
            ):
                buffer.delete_before_cursor(len(indent))

    async def _read_plain(self) -> str | None:
        """Lines from a pipe or file; a Python block is read until complete."""
        text = ""
        while True:
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                return text or None
            text += line
            if self._submit_ready(text.removesuffix("\n")):  # a blank line ends a block
                return text.rstrip("\n")
