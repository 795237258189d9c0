"""The terminal chat: what you type goes to the model (or, with no model configured, runs as
Python in your sandboxed session); answers stream and are rendered as Markdown, a status line
names the slow step, and Ctrl-C stops what runs without ending the session.

    chat = TerminalChat(services, user="local", conversation="terminal", output_dir=out)
    await chat.run()                     # from the keyboard (terminal_input.LineReader)
    await chat.run(lines)                # or from any async iterator of inputs
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from labbot.app import App
from labbot.chat.reports import TurnTotals
from labbot.core import (
    Event,
    ExecutionResult,
    Failed,
    FileProduced,
    Final,
    OutputFile,
    Status,
    TextDelta,
    ToolFinished,
    ToolOutput,
    ToolStarted,
    Usage,
    progress_to,
)
from labbot.errors import LabbotError
from labbot.files.receipt import format_size
from labbot.frontends.escapes import MAX_INLINE_BYTES, image_protocol, inline_image, printable
from labbot.frontends.terminal_commands import Commands
from labbot.frontends.terminal_complete import SessionCompleter, SessionQuestions
from labbot.frontends.terminal_input import LineReader
from labbot.frontends.terminal_view import TurnView, plain

T = TypeVar("T")
MODEL_STEP = "waiting for the model"
CODE_STEP = "running code"


async def save_produced(services: App, user: str, file: OutputFile, folder: Path) -> Path:
    """Copy a file the code made to a local folder; returns its path."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    target = folder / f"{file.id}-{file.name}"
    with await asyncio.to_thread(target.open, "wb") as handle:
        async for chunk in services.store.read(user, file.id):
            await asyncio.to_thread(handle.write, chunk)
    return target


class TerminalChat:
    """One user's chat session in the terminal."""

    def __init__(
        self,
        services: App,
        *,
        user: str,
        conversation: str,
        output_dir: Path,
        console: Console | None = None,
        history: Path | None = None,
    ) -> None:
        self.services = services
        self.user = user
        self.conversation = conversation
        self.output_dir = output_dir
        self.console = console or Console()
        self.history = history
        self.commands = Commands(services, user, conversation, self.console)
        self.questions = SessionQuestions(services.executor, user, conversation)
        self._interrupt: Callable[[], None] | None = None  # stops what runs now

    @property
    def console_mode(self) -> bool:
        """True when there is no model: inputs are Python cells."""
        return self.services.engine is None

    async def run(self, inputs: AsyncIterator[str] | None = None) -> None:
        """Handle inputs (from the keyboard unless given) until /quit or the end of input."""
        engine = self.services.engine
        if engine is None:
            self.console.print(
                "[yellow]No model configured:[/] this is a sandboxed Python console (your code"
                " runs in your session; load_file works; a block ends with a blank line)."
                " Set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server, to chat with a"
                " model. /help lists the commands."
            )
        else:
            model = await engine.model_for(self.user)
            self.console.print(
                f"labbot chat with [bold]{printable(model.name)}[/]. /help for commands;"
                " Ctrl-C stops an answer, twice at the prompt leaves."
            )
        source = inputs if inputs is not None else self._keyboard()
        async for text in source:
            if not await self.handle(text):
                return

    async def _keyboard(self) -> AsyncIterator[str]:
        completer = None
        if self.console_mode:  # the model's chat is text, not Python
            completer = SessionCompleter(self.questions, self._file_names)
        reader = LineReader(history=self.history, python=self.console_mode, completer=completer)
        while (text := await reader.read()) is not None:
            yield text

    async def handle(self, text: str) -> bool:
        """One input: a slash command, a cell or a message. False when the user leaves."""
        if not text.strip():
            return True
        try:
            if text.strip() == "/vars":
                await self._stoppable(self._vars(), cell=False)
                return True
            if text.lstrip().startswith("/"):
                go_on = await self._stoppable(self.commands.run(text.strip()), cell=False)
                return go_on is not False
            if self.console_mode:
                await self._stoppable(self._run_code(textwrap.dedent(text).strip("\n")))
            else:
                await self._stoppable(self._ask(text.strip()))
        except LabbotError as exc:
            self.console.print(plain(str(exc), "red"))
        return True

    # -- Ctrl-C while something runs ---------------------------------------------------------

    def interrupt(self) -> None:
        """Stop what runs now (what Ctrl-C does while a cell or an answer runs)."""
        if self._interrupt is not None:
            self._interrupt()

    async def _stoppable(self, work: Awaitable[T], *, cell: bool = True) -> T | None:
        """Run ``work``; Ctrl-C (or ``interrupt``) stops it (None then). A cell is interrupted
        in the sandbox first (variables kept); a second Ctrl-C, or one during an answer or a
        command, cancels."""
        task = asyncio.ensure_future(work)
        presses = 0
        stopping: list[asyncio.Future[None]] = []  # held until done

        def stop() -> None:
            nonlocal presses
            presses += 1
            if cell and self.console_mode and presses == 1:
                stopping.append(asyncio.ensure_future(self._stop_cell(task)))
            else:
                task.cancel()

        self._interrupt = stop
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, stop)  # main thread, Unix only
        try:
            await asyncio.wait({task})
        finally:
            self._interrupt = None
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)
        if task.cancelled():
            self.console.print("[yellow]Stopped.[/] (the session and its variables are kept)")
            return None
        return task.result()  # or its error

    async def _stop_cell(self, task: asyncio.Future[Any]) -> None:
        if not await self.services.executor.stop(self.user, self.conversation):
            task.cancel()  # not running yet (a sandbox starting): nothing to lose

    # -- a cell (console mode) ---------------------------------------------------------------

    async def _file_names(self) -> list[str]:
        """The user's stored file names (what load_file takes), for Tab in a string."""
        return [r.name for r in await self.services.store.list(self.user)]

    async def _vars(self) -> None:
        """/vars: the session's variables with their type, shape and memory."""
        rows = await self.questions.variables()
        if not rows:
            self.console.print("No variables (or the session did not answer).")
            return
        table = Table("name", "type", "shape", "memory", box=None, pad_edge=False)
        for row in rows:
            size = format_size(row.bytes) if row.bytes >= 0 else "?"
            table.add_row(*(printable(x) for x in (row.name, row.type, row.shape)), size)
        self.console.print(table)

    async def _run_code(self, code: str) -> None:
        with TurnView(self.console) as view, progress_to(view.progress):
            view.step(CODE_STEP)
            await self.questions.show_width(self.console.width)  # DataFrames fill the terminal

            async def live(stream: str, text: str) -> None:
                view.output(text, stream, style="")

            result = await self.services.executor.run(
                self.user, self.conversation, code, on_output=live
            )
            view.end_output()
            self._show_result(view, result)
            shown = [await self._show_file(view, file) for file in result.files]
        figures = [p for f, p in zip(result.files, shown, strict=True) if f.name.endswith(".png")]
        if figures:
            await self._show_inline(figures[-1])  # the last figure, after the status line

    async def _show_inline(self, path: Path) -> None:
        """Show a PNG in the terminal when it can show images (kitty, iTerm2, WezTerm,
        Ghostty); elsewhere its path, printed above, is what there is."""
        protocol = image_protocol(dict(os.environ))
        if protocol is None or not self.console.is_terminal:
            return
        png = await asyncio.to_thread(path.read_bytes)
        if len(png) <= MAX_INLINE_BYTES and png.startswith(b"\x89PNG"):
            self.console.file.write(inline_image(png, protocol))
            self.console.file.flush()

    # -- a turn (chat mode) ------------------------------------------------------------------

    async def _ask(self, text: str) -> None:
        assert self.services.engine is not None
        files, images = self.commands.take_pending()
        with TurnView(self.console) as view, progress_to(view.progress):
            view.step(MODEL_STEP)
            totals = TurnTotals()
            async for event in self.services.engine.turn(
                self.user, self.conversation, text, file_ids=files, image_ids=images
            ):
                if isinstance(event, Usage):
                    totals.add(event)
                await self.render(view, event)
            if totals.requests:  # one quiet line: what the answer cost
                view.print(plain(totals.line(), "dim"))

    async def render(self, view: TurnView, event: Event) -> None:
        """Show one engine event."""
        match event:
            case TextDelta(text=text):
                view.answer(text)
            case ToolStarted(code=code):
                view.end_answer()
                view.print(Syntax(printable(code), "python", theme="ansi_dark"))
                view.step(CODE_STEP)
            case ToolOutput(text=text, stream=stream):
                view.output(text, stream)
            case ToolFinished(result=result):
                view.end_output()
                self._show_result(view, result, brief=True)
                view.step(MODEL_STEP)
            case FileProduced(file=file):
                await self._show_file(view, file)
            case Status(text=text):
                view.print(plain(text, "yellow"))
            case Failed(text=text):
                view.end_answer()
                view.print(plain(text, "red"))
            case Final():
                view.end_answer()
            case Usage():
                pass

    def _show_result(self, view: TurnView, result: ExecutionResult, *, brief: bool = False) -> None:
        if result.value and not brief:
            view.print(plain(result.value))
        error = result.error
        # A stopped cell's note already says why (out of memory, a timeout): said once.
        if error is not None and not any(error.message in note for note in result.notes):
            view.print(plain(error.traceback or f"{error.name}: {error.message}", "red"))
        for note in (*self.questions.notes, *result.notes):
            view.print(plain(f"note: {note}", "yellow"))
        self.questions.notes.clear()
        for skipped in result.skipped_files:
            view.print(plain(f"not kept: {skipped.name}: {skipped.reason}", "yellow"))

    async def _show_file(self, view: TurnView, file: OutputFile) -> Path:
        path = await save_produced(self.services, self.user, file, self.output_dir)
        line = f"file: {file.name} ({file.id}, {format_size(file.size)}) -> {path}"
        view.print(plain(line, "cyan"))
        return path
