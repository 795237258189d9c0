"""The terminal chat: the engine's events rendered with rich, plus a few slash commands.

With no model configured it is a sandboxed data console: what you type runs as Python in your
session, with load_file and uploads working as in the bot.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from labbot.app import App
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
)
from labbot.errors import LabbotError
from labbot.files import file_chunks, kind_by_name
from labbot.files.receipt import format_expiry, format_size, render_upload_confirmation
from labbot.frontends.escapes import PrintableStream, printable

HELP = """Commands:
  /upload PATH...   store files (then ask about them)
  /files            list your files          /rm ID   delete one
  /reset            forget this conversation's history and variables (files stay)
  /usage            tokens and cost per model
  /model [NAME]     show or choose the model (one the operator allows; --force adds one)
  /help             this text                /quit    leave (Ctrl-D works too)"""


def shown(text: str) -> str:
    """Text from a model, a file or user code made safe to print with rich: control sequences
    removed, markup escaped."""
    return escape(printable(text))


def _local_path(arg: str) -> Path:
    return Path(arg).expanduser()


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
    ) -> None:
        self.services = services
        self.user = user
        self.conversation = conversation
        self.output_dir = output_dir
        self.console = console or Console()
        self.pending: list[str] = []  # uploads to mention in the next message
        self.pending_images: list[str] = []
        # Model text and code output arrive in pieces: one cleaner each, so a sequence cut
        # between two pieces is removed whole.
        self._answer, self._output = PrintableStream(), PrintableStream()

    async def run(self, lines: AsyncIterator[str] | None = None) -> None:
        """Read lines (from the keyboard unless given) until /quit or end of input."""
        engine = self.services.engine
        if engine is None:
            self.console.print(
                "[yellow]No model configured:[/] this is a sandboxed Python console (your code"
                " runs in your session; load_file works). Set OPENAI_API_KEY, or OPENAI_BASE_URL"
                " for a local server, to chat with a model."
            )
        else:
            model = await engine.model_for(self.user)
            self.console.print(f"labbot chat with [bold]{model.name}[/]. /help for commands.")
        source = lines if lines is not None else self._keyboard()
        async for line in source:
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not await self._command(line):
                        return
                elif engine is None:
                    await self._run_code(line)
                else:
                    await self._ask(line)
            except LabbotError as exc:
                self.console.print(f"[red]{shown(str(exc))}[/]")

    async def _keyboard(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await asyncio.to_thread(self.console.input, "[bold green]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                return

    async def _command(self, line: str) -> bool:
        name, *args = shlex.split(line)
        services, user = self.services, self.user
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.console.print(HELP)
        elif name == "/upload":
            for arg in args:
                path = _local_path(arg)
                result = await services.store.save(user, path.name, file_chunks(path))
                receipt = render_upload_confirmation(result, now=services.store.clock())
                self.console.print(shown(receipt))
                self.pending.append(result.record.id)
                if result.record.kind == "image":
                    self.pending_images.append(result.record.id)
        elif name == "/files":
            await self._files()
        elif name == "/rm" and args:
            record = await services.store.delete(user, args[0])
            self.console.print(f"Deleted {shown(record.name)}.")
        elif name == "/reset":
            if services.engine is not None:
                await services.engine.reset(user, self.conversation)
            else:
                await services.interpreter.reset(user, self.conversation)
            self.console.print("Conversation reset: history and variables are gone; files stay.")
        elif name == "/usage":
            await self._usage()
        elif name == "/model" and services.engine is not None:
            names = [a for a in args if a != "--force"]
            model = (
                await services.engine.set_model(user, names[0], force="--force" in args)
                if names
                else (await services.engine.model_for(user))
            )
            allowed = (await services.engine.models()).names()
            self.console.print(f"Model: {model.name} (allowed: {escape(', '.join(allowed))})")
        else:
            self.console.print(f"Unknown command {shown(name)}. /help lists them.")
        return True

    async def _files(self) -> None:
        records = await self.services.store.list(self.user)
        if not records:
            self.console.print("No files.")
            return
        table = Table("id", "name", "type", "size", "expires")
        now = self.services.store.clock()
        for r in records:
            table.add_row(
                r.id,
                shown(r.name),
                kind_by_name(r.kind).label,
                format_size(r.size),
                format_expiry(r.expires_at, now),
            )
        self.console.print(table)

    async def _usage(self) -> None:
        rows = await self.services.ledger.summary(self.user)
        table = Table("model", "requests", "input", "cached", "output", "cost (USD)")
        for row in rows:
            table.add_row(
                row.model,
                str(row.requests),
                f"{row.input_tokens:,}",
                f"{row.cached_tokens:,}",
                f"{row.output_tokens:,}",
                f"{row.cost_usd:.4f}",
            )
        self.console.print(table if rows else "No model requests yet.")

    async def _run_code(self, code: str) -> None:
        async def live(stream: str, text: str) -> None:
            style = "red" if stream == "stderr" else None
            self.console.print(escape(self._output.feed(text)), end="", style=style)

        result = await self.services.interpreter.run(
            self.user, self.conversation, code, on_output=live
        )
        self.console.print(escape(self._output.flush()), end="")
        await self._show_result(result)
        for file in result.files:
            await self._show_file(file)

    async def _ask(self, text: str) -> None:
        assert self.services.engine is not None
        files, images = self.pending, self.pending_images
        self.pending, self.pending_images = [], []
        async for event in self.services.engine.turn(
            self.user, self.conversation, text, file_ids=files, image_ids=images
        ):
            await self.render(event)
        self.console.print(escape(self._output.flush() + self._answer.flush()))

    async def render(self, event: Event) -> None:
        """Show one engine event."""
        match event:
            case TextDelta(text=text):
                self.console.print(escape(self._answer.feed(text)), end="")
            case ToolStarted(code=code):
                self.console.print(escape(self._answer.flush()))
                shown_code = printable(code)
                self.console.print(
                    Syntax(shown_code, "python", theme="ansi_dark", line_numbers=False)
                )
            case ToolOutput(text=text):
                self.console.print(escape(self._output.feed(text)), end="", style="dim")
            case Status(text=text):
                self.console.print(f"\n[yellow]{shown(text)}[/]")
            case ToolFinished(result=result):
                self.console.print(escape(self._output.flush()), end="", style="dim")
                await self._show_result(result, brief=True)
            case FileProduced(file=file):
                await self._show_file(file)
            case Failed(text=text):
                self.console.print(f"\n[red]{shown(text)}[/]")
            case Usage() | Final():
                pass

    async def _show_result(self, result: ExecutionResult, *, brief: bool = False) -> None:
        if result.value and not brief:
            self.console.print(shown(result.value))
        if result.error is not None:
            error = result.error
            self.console.print(
                shown(error.traceback or f"{error.name}: {error.message}"), style="red"
            )
        for note in result.notes:
            self.console.print(f"[yellow]note:[/] {shown(note)}")

    async def _show_file(self, file: OutputFile) -> None:
        path = await save_produced(self.services, self.user, file, self.output_dir)
        self.console.print(
            f"[cyan]file:[/] {shown(file.name)} ({shown(file.id)},"
            f" {format_size(file.size)}) -> {shown(str(path))}"
        )
