"""`labbot chat` in a pseudo-terminal, read through a terminal emulator (pyte): tests wait for
what the screen shows, as a person would, never for a fixed time."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pexpect
import pyte

LABBOT = str(Path(sys.executable).with_name("labbot"))
PROMPT = re.compile(r"^(>>>|you>)\s*$")


class Terminal:
    """A `labbot` process on a pseudo-terminal and what its screen shows."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path, rows: int = 50, cols: int = 110):
        # The pty's size is the terminal's: a COLUMNS or LINES inherited from the shell (or set by
        # a test runner) would override it for rich and prompt_toolkit.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "LABBOT_")) and k not in ("COLUMNS", "LINES")
        }
        self.child = pexpect.spawn(
            LABBOT,
            list(args),
            env={**base, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", **env},
            cwd=str(cwd),
            dimensions=(rows, cols),
            encoding="utf-8",
            codec_errors="replace",
        )
        self.child.delaybeforesend = None
        self.screen = pyte.HistoryScreen(cols, rows, history=5000, ratio=0.001)
        self.stream = pyte.Stream(self.screen)
        self.raw = ""

    def lines(self) -> list[str]:
        """Everything shown so far, scrolled-off lines first, trailing spaces removed."""
        width = self.screen.columns
        top = ["".join(line[x].data for x in range(width)) for line in self.screen.history.top]
        return [line.rstrip() for line in (*top, *self.screen.display)]

    def text(self) -> str:
        """The screen (and its scrollback) as text."""
        return "\n".join(self.lines()).rstrip("\n")

    def prompts(self) -> int:
        """How many prompts have been shown."""
        return sum(1 for line in self.lines() if line.startswith((">>>", "you>")))

    def at_prompt(self) -> bool:
        """True when the cursor waits on an empty prompt."""
        return bool(PROMPT.match(self.screen.display[self.screen.cursor.y].rstrip()))

    def pump(self, timeout: float) -> None:
        """Feed what the program printed (waiting up to ``timeout`` for some) to the screen."""
        try:
            data = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        self.raw += data
        self.stream.feed(data)

    def wait(self, check: object, timeout: float = 60, what: str = "") -> None:
        """Wait until ``check`` (a regex on the text, or a callable) holds."""
        deadline = time.monotonic() + timeout
        while True:
            ok = check() if callable(check) else re.search(str(check), self.text(), re.M)
            if ok:
                return
            left = deadline - time.monotonic()
            if left <= 0 or not self.child.isalive() and not self._readable():
                raise AssertionError(f"never saw {what or check!r}; the screen:\n{self.text()}")
            self.pump(min(left, 1.0))

    def _readable(self) -> bool:
        try:
            self.pump(0.1)
        except pexpect.EOF:
            return False
        return True

    def send(self, keys: str) -> None:
        """Type ``keys``."""
        self.child.send(keys)

    def enter(self, line: str = "", timeout: float = 90) -> None:
        """Type a line and Enter, then wait for the next empty prompt."""
        before = self.prompts()
        self.send(line + "\r")
        self.wait(
            lambda: self.prompts() > before and self.at_prompt(), timeout, f"prompt after {line!r}"
        )

    def paste(self, text: str) -> None:
        """Paste ``text`` as a terminal does (bracketed paste)."""
        self.send(f"\x1b[200~{text}\x1b[201~")

    def close(self, keys: str = "\x04") -> int:
        """End the program (Ctrl-D unless other ``keys``), return its exit status."""
        if not self.child.closed:
            if self.child.isalive() and keys:
                self.send(keys)
            self.child.expect(pexpect.EOF, timeout=30)
            self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else -1
