"""The terminal chat's slash commands. Each one answers bad input with one line and keeps the
session: a missing file, a folder, an unmatched quote, an unknown id or model.

    commands = Commands(services, user, conversation, console)
    if not await commands.run("/upload sales.csv"):   # False: the user leaves
        ...
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

from rich.console import Console
from rich.table import Column, Table

from labbot.app import App
from labbot.chat.attachments import Upload
from labbot.errors import LabbotError
from labbot.files import kind_by_name
from labbot.files.blobs import open_local_file
from labbot.files.receipt import format_expiry, format_size, render_upload_confirmation
from labbot.frontends.terminal_view import from_chat_markup, plain

HELP = """Commands:
  /upload PATH...   store files (then ask about them); links need --follow-symlinks
  /files            list your files          /rm ID...  delete files
  /vars             the console's variables: type, shape, memory
  /reset            forget this conversation's history and variables (files stay)
  /usage            tokens and cost per model
  /model [NAME]     show or choose the model (one the operator allows; --force adds one)
  /help             this text                /quit    leave (Ctrl-D works too)
Keys: Tab completes names, attributes and (in quotes) file names; Backspace in the
indentation removes one level; Up/Down recall earlier inputs (kept across runs);
Esc then Enter adds a line;
Ctrl-C stops a running cell or answer, clears the line at the prompt, and twice leaves."""


def _is_path(text: str) -> bool:
    """True if ``text`` names something on disk (checked in a thread by the caller)."""
    return Path(text).expanduser().exists()


def split_command(line: str) -> list[str]:
    """The command and its arguments, shell-quoted (``/upload 'a b.csv'``); a line with an
    unmatched quote (``/upload it's.csv``) is split at spaces instead."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


class Commands:
    """The slash commands of one terminal session."""

    def __init__(self, services: App, user: str, conversation: str, console: Console) -> None:
        self.services, self.user, self.conversation = services, user, conversation
        self.console = console
        self.pending: list[str] = []  # uploads to mention in the next message
        self.pending_images: list[str] = []

    def take_pending(self) -> tuple[list[str], list[str]]:
        """The files and images uploaded since the last message (and forget them)."""
        taken = self.pending, self.pending_images
        self.pending, self.pending_images = [], []
        return taken

    async def run(self, line: str) -> bool:
        """Run one command line; False when the user leaves. Errors are one line each."""
        name, *args = split_command(line) or ["/"]
        if name in ("/quit", "/exit"):
            return False
        whole = line.strip().removeprefix(name).strip()
        if name == "/upload" and len(args) > 1 and await asyncio.to_thread(_is_path, whole):
            args = [whole]  # one name with spaces or quotes, typed as it is
        try:
            await self._dispatch(name, args)
        except LabbotError as exc:
            self.console.print(plain(str(exc), "red"))
        except OSError as exc:
            self.console.print(plain(f"{name}: {exc.strerror or exc}", "red"))
        return True

    async def _dispatch(self, name: str, args: list[str]) -> None:
        services, user = self.services, self.user
        if name == "/help":
            self.console.print(plain(HELP))
        elif name == "/upload":
            follow = "--follow-symlinks" in args
            args = [a for a in args if a != "--follow-symlinks"]
            if not args:
                self.console.print(
                    plain("Usage: /upload [--follow-symlinks] PATH... (quote a name with spaces)")
                )
            for arg in args:
                path = await asyncio.to_thread(Path(arg).expanduser)
                await self._upload(path, follow_symlinks=follow)
        elif name == "/files":
            await self._files()
        elif name == "/rm":
            if not args:
                self.console.print(plain("Usage: /rm ID... (/files lists the ids)"))
            for file_id in args:
                try:
                    record = await services.store.delete(user, file_id)
                except LabbotError as exc:
                    self.console.print(plain(str(exc), "red"))
                else:
                    self.console.print(plain(f"Deleted {record.name} ({record.id})."))
        elif name == "/reset":
            if services.engine is not None:
                await services.engine.reset(user, self.conversation)
            else:
                await services.executor.reset(user, self.conversation)
            self.console.print("Conversation reset: history and variables are gone; files stay.")
        elif name == "/usage":
            await self._usage()
        elif name == "/model" and services.engine is not None:
            await self._model(args)
        elif name == "/model":
            self.console.print("No model is configured: this is the Python console.")
        else:
            self.console.print(plain(f"Unknown command {name}. /help lists them.", "red"))

    async def _upload(self, path: Path, *, follow_symlinks: bool = False) -> None:
        """Store one local file; a missing file, a folder or a symbolic link (unless followed
        on request) is one line and nothing else."""
        shown = str(path)
        if not await asyncio.to_thread(os.path.lexists, path):
            self.console.print(plain(f"Not uploaded: {shown} does not exist.", "red"))
            return
        if await asyncio.to_thread(path.is_dir):
            self.console.print(
                plain(f"Not uploaded: {shown} is a folder (upload the files in it).", "red")
            )
            return
        try:
            local = await open_local_file(path, follow_symlinks=follow_symlinks)
        except (LabbotError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.console.print(plain(f"Not uploaded: {shown}: {reason}", "red"))
            return
        taken = await self.services.attachments.take(self.user, [Upload(path.name, local.chunks())])
        for refused in taken.refused:
            self.console.print(plain(f"Not uploaded: {shown}: {refused.reason}", "red"))
        if not taken.saved:
            return
        if local.linked:
            real = local.real_path
            self.console.print(
                plain(f"{shown} is a symbolic link: uploaded the file it points to, {real}")
            )
        for result in taken.saved:
            receipt = render_upload_confirmation(result, now=self.services.store.clock())
            self.console.print(from_chat_markup(receipt))
        gone = taken.evicted  # its receipt said so
        self.pending = [i for i in self.pending if i not in gone] + taken.file_ids
        self.pending_images = [i for i in self.pending_images if i not in gone] + taken.image_ids

    async def _model(self, args: list[str]) -> None:
        engine = self.services.engine
        assert engine is not None
        names = [a for a in args if a != "--force"]
        if names:
            model = await engine.set_model(self.user, names[0], force="--force" in args)
        else:
            model = await engine.model_for(self.user)
        allowed = ", ".join((await engine.models()).names())
        self.console.print(plain(f"Model: {model.name} (allowed: {allowed})"))

    async def _files(self) -> None:
        records = await self.services.store.list(self.user)
        if not records:
            self.console.print("No files.")
            return
        whole_id = Column("id", no_wrap=True, min_width=len(records[0].id))  # /rm needs it all
        table = Table(whole_id, "name", "type", "size", "expires")
        now = self.services.store.clock()
        for r in records:
            table.add_row(
                plain(r.id),
                plain(r.name),
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
                plain(row.model),
                str(row.requests),
                f"{row.input_tokens:,}",
                f"{row.cached_tokens:,}",
                f"{row.output_tokens:,}",
                f"{row.cost_usd:.4f}",
            )
        self.console.print(table if rows else "No model requests yet.")
