"""What the terminal shows while a turn or a cell runs: the model's answer streaming as raw text
(rendered as Markdown once complete), the code's output line by line, and a status line naming
the slow step with its elapsed time. Everything printed is made inert first (``printable``).

with TurnView(console) as view, progress_to(view.progress):
    view.step("waiting for the model")
    view.answer("## Res"); view.answer("ult\\n")
    view.end_answer()                    # the raw text goes, "Result" comes as a heading
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text

from labbot.frontends.escapes import PrintableStream, printable

# The receipt's inline markup (written for Discord): **bold** and `code`.
_INLINE = re.compile(r"\*\*(.+?)\*\*|`([^`\n]+)`")


def plain(text: str, style: str = "") -> Text:
    """Text from a model, a file or user code, ready to print: control sequences removed, no
    markup read (so a backslash or a bracket shows as it is)."""
    return Text(printable(text), style=style)


def from_chat_markup(text: str) -> Text:
    """A message written with chat markup (``**bold**``, ```code```), styled for a terminal."""
    out = Text()
    text = printable(text)
    position = 0
    for match in _INLINE.finditer(text):
        out.append(text[position : match.start()])
        bold, code = match.groups()
        out.append(bold, style="bold") if bold is not None else out.append(code, style="cyan")
        position = match.end()
    out.append(text[position:])
    return out


def markdown(text: str) -> Markdown:
    """The model's answer rendered (headings, tables, code); links shown with their address."""
    return Markdown(printable(text), hyperlinks=False, code_theme="ansi_dark")


class TurnView:
    """The live part of the screen for one turn or cell (a status line only on a terminal)."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self._answer = ""  # the answer so far, printable
        self._answer_stream = PrintableStream()
        self._partial: dict[str, str] = {"stdout": "", "stderr": ""}
        self._output_streams = {"stdout": PrintableStream(), "stderr": PrintableStream()}
        self._output_style = "dim"
        self._base: tuple[str, float] | None = None
        self._steps: list[tuple[str, float]] = []
        self._spinner = Spinner("dots", style="cyan")
        self._live: Live | None = None

    def __enter__(self) -> TurnView:
        if self.console.is_terminal:
            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=8,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end_answer()
        self.end_output()
        if self._live is not None:
            self._live.stop()

    # -- what is running --------------------------------------------------------------------

    def step(self, name: str) -> None:
        """The turn's current step (the status line names it, with the time since it began)."""
        self._base = (name, self.clock())
        self._refresh()

    def progress(self, name: str, *, started: bool) -> None:
        """A slow step inside the current one (a ``labbot.core.progress_to`` hook)."""
        if started:
            self._steps = [*self._steps, (name, self.clock())]
        else:
            self._steps = [s for s in self._steps if s[0] != name]
        self._refresh()

    def _refresh(self) -> None:
        """Show a new step at once (a short one would otherwise fall between two refreshes)."""
        if self._live is not None:
            self._live.refresh()

    def status(self) -> str:
        """The status line's text: the step and how long it has taken."""
        current = self._steps[-1] if self._steps else self._base
        if current is None:
            return ""
        name, since = current
        return f"{name} · {self.clock() - since:.1f}s  (Ctrl-C stops)"

    # -- the model's answer -----------------------------------------------------------------

    def answer(self, text: str) -> None:
        """A piece of the answer: shown raw while it streams."""
        self._answer += self._answer_stream.feed(text)

    def end_answer(self) -> None:
        """The answer (so far) is complete: print it rendered as Markdown."""
        self._answer += self._answer_stream.flush()
        text, self._answer = self._answer, ""
        if text.strip():
            self.print(markdown(text))

    # -- the code's output ------------------------------------------------------------------

    def output(self, text: str, stream: str = "stdout", *, style: str = "dim") -> None:
        """Output of the running code: whole lines are printed, a partial line waits on the
        status line."""
        stream = "stderr" if stream == "stderr" else "stdout"
        self._output_style = style
        pending = self._partial[stream] + self._output_streams[stream].feed(text)
        done, newline, rest = pending.rpartition("\n")
        if newline:
            self.print(Text(done, style="red" if stream == "stderr" else style))
        self._partial[stream] = rest

    def end_output(self) -> None:
        """The code ended: print what is left of its output."""
        for stream, cleaner in self._output_streams.items():
            rest = self._partial[stream] + cleaner.flush()
            self._partial[stream] = ""
            if rest:
                self.print(Text(rest, style="red" if stream == "stderr" else self._output_style))

    # -- the screen -------------------------------------------------------------------------

    def print(self, *items: RenderableType, style: str | None = None) -> None:
        """Print above the live area (it stays on the screen)."""
        self.console.print(*items, style=style)

    def _render(self) -> RenderableType:
        """The live area: the end of the raw answer, a partial output line, the status."""
        parts: list[RenderableType] = []
        width, height = self.console.size
        if self._answer:
            lines = Text(self._answer).wrap(self.console, width)
            parts.extend(lines[-max(3, height - 4) :])
        for stream, partial in self._partial.items():
            if partial:
                parts.append(Text(partial, style="red" if stream == "stderr" else "dim"))
        status = self.status()
        if status:
            self._spinner.update(text=Text(status, style="dim"))
            parts.append(self._spinner)
        return Group(*parts)
