"""The Discord bot: a discord.py client wired to an open App's engine, its cogs, and the file
sweeper. The caller opens the App and closes it after the bot (discord.py's "advanced start-up"):

    async with open_app(settings) as app:
        async with create_bot(app) as bot:
            await bot.start(token)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from labbot.app import App
from labbot.errors import LabbotError
from labbot.frontends.discord.access import AccessPolicy
from labbot.frontends.discord.errors import error_text
from labbot.frontends.discord.gate import Gate, gate_of
from labbot.frontends.discord.posting import LinkPolicy, respond
from labbot.frontends.web import DownloadLinks, open_downloads

log = logging.getLogger(__name__)

EXTENSIONS = (
    "labbot.frontends.discord.messages",
    "labbot.frontends.discord.commands.files",
    "labbot.frontends.discord.commands.session",
    "labbot.frontends.discord.commands.admin",
    "labbot.frontends.discord.commands.export",
)


class LabbotTree(app_commands.CommandTree):
    """Lets slash commands and autocomplete in through the gate; answers failing commands in
    plain words and logs the unexpected with a reference."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Every command and autocomplete passes the same gate as messages."""
        return await gate_of(interaction).admit_interaction(interaction)

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """The one error path (errors.py), answered privately."""
        original = getattr(error, "original", error)
        name = interaction.command.name if interaction.command else "?"
        await respond(interaction, error_text(original, where=f"command {name}"))


class LabBot(commands.Bot):
    """labbot on Discord, on an ``App`` its caller opened (and closes after it). Build it with
    ``create_bot``; start it with ``start(token)``."""

    def __init__(self, app: App, **client_options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the Developer Portal
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=LabbotTree,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **client_options,
        )
        self.settings = app.settings
        self.services = app
        self.downloads = DownloadLinks(app.store)  # links to large files (none until set up)
        # Which links in what it posts may be previewed: the users' own, and its signed links.
        self.links = LinkPolicy(allow=lambda url: self.downloads.allow(url))
        self.access: AccessPolicy
        self.gate: Gate
        self.http_session: aiohttp.ClientSession
        self._stack = AsyncExitStack()
        self._sweepers: list[asyncio.Task[None]] = []
        self.turns: dict[int, dict[asyncio.Task[None], str]] = {}  # user → turn → conversation
        self.questions: dict[int, asyncio.Task[None]] = {}  # message id → the turn answering it
        self._handling: set[asyncio.Task[Any]] = set()  # messages being handled right now
        self._idle = asyncio.Event()
        self._idle.set()

    async def setup_hook(self) -> None:
        """Load the cogs, start the sweeper, sync commands."""
        self.http_session = aiohttp.ClientSession()
        self._stack.push_async_callback(self.http_session.close)
        self.downloads = await self._stack.enter_async_context(
            open_downloads(self.settings, self.services.store)
        )
        self.access = AccessPolicy(self.settings, self.services.preferences.admin)
        await self.access.load()
        self.gate = Gate(
            self,
            self.access,
            rate=self.settings.RATE_LIMIT_MESSAGES,
            per=self.settings.RATE_LIMIT_SECONDS,
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        interval = self.settings.FILE_SWEEP_INTERVAL_MINUTES * 60
        self._sweepers = [
            asyncio.create_task(self.services.store.run_sweeper(interval)),
            asyncio.create_task(self._sweep_reply_links(interval)),
        ]
        if self.settings.DEV_GUILD_ID:
            guild = discord.Object(self.settings.DEV_GUILD_ID)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info("bot.ready_to_connect extensions=%d", len(EXTENSIONS))

    async def _sweep_reply_links(self, interval: float) -> None:
        """Forget which conversation old answers belonged to (REPLY_LINK_DAYS), now and then."""
        while True:
            try:
                swept = await self.services.preferences.sweep(now=datetime.now(UTC))
                log.info("reply_links.swept count=%d", swept)
            except LabbotError as exc:  # the database is busy or failed: next time
                log.warning("reply_links.sweep_failed kind=%s", type(exc).__name__)
            await asyncio.sleep(interval)

    def handling(self, task: asyncio.Task[Any]) -> None:
        """Track a message being handled, so close() and wait_idle() know about it."""
        self._handling.add(task)
        self._idle.clear()

        def done(finished: asyncio.Task[Any]) -> None:
            self._handling.discard(finished)
            if not self._handling:
                self._idle.set()

        task.add_done_callback(done)

    async def wait_idle(self) -> None:
        """Return once no message is being handled."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop turns and message handlers, then the sweeper, then close what this bot opened
        (not the App: its caller closes it)."""
        for turns in self.turns.values():
            for task in turns:
                task.cancel()
        for task in list(self._handling):
            task.cancel()
        if self._handling:
            await asyncio.wait(self._handling, timeout=10)
        for sweeper in self._sweepers:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await super().close()
        await self._stack.aclose()

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: messages are handled by the Messages cog, commands by slash."""

    def conversation_tasks(self, user_id: int) -> dict[asyncio.Task[None], str]:
        """The user's running turns, each with its conversation."""
        return self.turns.setdefault(user_id, {})

    async def stop_user(self, user_id: int) -> int:
        """Cancel every running turn of a user (their code is stopped too); how many."""
        tasks = list(self.conversation_tasks(user_id).items())
        for task, _ in tasks:
            task.cancel()
        for task, conversation in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await self.services.executor.stop(str(user_id), conversation)
        return len(tasks)


def create_bot(app: App, **client_options: Any) -> LabBot:
    """An unstarted labbot client on an open App; ``await bot.start(token)`` runs it."""
    # labbot uses no voice: no "PyNaCl is not installed" warning at every start.
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
    return LabBot(app, **client_options)
