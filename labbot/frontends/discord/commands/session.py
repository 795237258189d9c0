"""/new, /reset, /stop, /usage, /model, /code and /help."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import escape_markdown

from labbot.chat.budgets import Payer, amount_text
from labbot.chat.reports import Grouping, report, report_table
from labbot.frontends.discord.conversations import conversation_id
from labbot.frontends.discord.posting import respond, send

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot

MAX_CHOICES = 25
MAX_REPORT_LINES = 20  # lines of /usage all (a message holds 2,000 characters)
LIMIT_LABELS = {
    "user_daily_usd": "Daily budget",
    "user_monthly_usd": "Monthly budget",
    "guild_monthly_usd": "This server's monthly budget",
    "user_daily_tokens": "Daily tokens (models without a price)",
}

HELP = """**labbot** analyses your data with Python in a private sandbox.
• Mention me (or reply to me, or DM me) with a question; attach files (CSV, Excel, JSON, \
Parquet, SPSS, images, PDFs and 80+ more) to the same message.
• Replies to my answers continue that conversation; `/new` starts a thread for a fresh one \
(in it I answer without being mentioned).
• Files I make (plots, tables) are attached to my answer and kept with your uploads.
Commands: `/files` your files · `/reset` forget this conversation · `/stop` stop what I'm doing \
· `/export` this conversation as a notebook · `/usage` tokens, cost and what is left of your \
limits · `/model` pick a model \
· `/code` show or hide the code I run."""


def conversation_for(interaction: discord.Interaction) -> str:
    """The conversation a command in this channel refers to (threads and DMs; else none)."""
    channel, in_guild = interaction.channel, interaction.guild is not None
    return conversation_id(channel, in_guild=in_guild) or ""


def thread_refusal(interaction: discord.Interaction) -> str | None:
    """Why /new may not start a thread here (the caller's or the bot's permissions), or None."""
    if not interaction.permissions.create_public_threads:
        return "You need the Create Public Threads permission in this channel to start a thread."
    needed = discord.Permissions(create_public_threads=True, send_messages_in_threads=True)
    if not needed <= interaction.app_permissions:
        return (
            "I may not create threads or write in them in this channel; a server admin can"
            " give me Create Public Threads and Send Messages in Threads."
        )
    return None


class Session(commands.Cog):
    """Conversation and preference commands."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="help")
    async def help(self, interaction: discord.Interaction) -> None:
        """How to use labbot."""
        await respond(interaction, HELP)

    @app_commands.command(name="new")
    @app_commands.describe(title="A title for the thread")
    async def new(self, interaction: discord.Interaction, title: str = "Analysis") -> None:
        """Start a fresh conversation in a new thread."""
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            await respond(
                interaction, "Start threads from a server text channel. In DMs, use /reset."
            )
            return
        refusal = thread_refusal(interaction)
        if refusal:
            await respond(interaction, refusal)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        thread = await channel.create_thread(
            name=title[:100], type=discord.ChannelType.public_thread
        )
        await send(
            thread,
            f"{interaction.user.mention}, ask away: I answer every message here.",
            links=self.bot.links,
            allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
        )
        await respond(interaction, f"Started {thread.mention}.")

    @app_commands.command(name="reset")
    @app_commands.describe(delete_files="Also delete all your files")
    async def reset(self, interaction: discord.Interaction, delete_files: bool = False) -> None:
        """Forget this conversation's history and variables (files stay unless asked)."""
        # Resetting waits for a running answer of this conversation: answer Discord first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = str(interaction.user.id)
        services = self.bot.services
        conversation = conversation_for(interaction)
        if conversation and services.engine is not None:
            await services.engine.reset(user, conversation)
        elif conversation:
            await services.executor.reset(user, conversation)
        removed = 0
        if delete_files:
            for record in await services.store.list(user):
                await services.store.delete(user, record.id)
                removed += 1
        where = (
            "This conversation was reset"
            if conversation
            else (
                "Nothing to reset here: conversations live in threads, DMs and reply chains"
                " (reply to me to continue one; /new starts a fresh one)"
            )
        )
        extra = f"; {removed} files deleted" if delete_files else "; your files are kept"
        await respond(interaction, f"{where}{extra}.")

    @app_commands.command(name="stop")
    async def stop(self, interaction: discord.Interaction) -> None:
        """Stop what I'm working on for you, including running code."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        stopped = await self.bot.stop_user(interaction.user.id)
        await respond(
            interaction,
            f"Stopped {stopped} running answer{'s' if stopped != 1 else ''}."
            if stopped
            else "Nothing of yours is running.",
        )

    @app_commands.command(name="usage")
    @app_commands.describe(
        everyone="Admins only: everyone's usage (tokens, requests, cost, executions)",
        days="With all: how many days back",
        by="With all: one line per user, server, model or day",
    )
    @app_commands.rename(everyone="all")
    async def usage(
        self,
        interaction: discord.Interaction,
        everyone: bool = False,
        days: app_commands.Range[int, 1, 366] = 7,
        by: Literal["user", "guild", "model", "day"] = "user",
    ) -> None:
        """Your tokens and cost per model, and what is left of your limits."""
        if everyone:
            await self._usage_all(interaction, days, by)
            return
        user = str(interaction.user.id)
        rows = await self.bot.services.ledger.summary(user)
        lines = ["**Your usage**"] if rows else ["No model requests yet."]
        if rows:
            lines += [
                "```",
                f"{'model':<22}{'requests':>9}{'input':>12}{'cached':>10}{'output':>10}{'USD':>10}",
            ]
            for r in rows:
                lines.append(
                    f"{r.model[:21]:<22}{r.requests:>9}{r.input_tokens:>12,}"
                    f"{r.cached_tokens:>10,}{r.output_tokens:>10,}{r.cost_usd:>10.4f}"
                )
            lines.append("```")
        engine = self.bot.services.engine
        if engine is not None:
            states = await engine.budgets.states(self._payer(interaction))
            if states:
                lines.append("**Your limits**")
            for state in states:
                lines.append(
                    f"{LIMIT_LABELS[state.name]}: {amount_text(state.name, state.spent)} spent,"
                    f" {amount_text(state.name, state.left)} left of"
                    f" {amount_text(state.name, state.limit)}; resets"
                    f" {engine.budgets.when(state.resets)}."
                )
        await respond(interaction, "\n".join(lines)[:2000])

    def _payer(self, interaction: discord.Interaction) -> Payer:
        roles = getattr(interaction.user, "roles", [])
        return Payer(
            str(interaction.user.id),
            guild=str(interaction.guild_id) if interaction.guild_id else None,
            roles=frozenset(str(role.id) for role in roles),
            admin=self.bot.access.is_admin(interaction.user.id),
        )

    async def _usage_all(self, interaction: discord.Interaction, days: int, by: Grouping) -> None:
        """Everyone's usage, for admins: a table with totals."""
        if not self.bot.access.is_admin(interaction.user.id):
            await respond(interaction, "Only the bot's admins can see everyone's usage.")
            return
        ledger, since = self.bot.services.ledger, datetime.now(UTC) - timedelta(days=days)
        rows, total = report(
            await ledger.requests(since),
            await ledger.executions(since),
            by=by,
            timezone=self.bot.settings.TIMEZONE,
        )
        table = report_table(rows, total, by)
        shown, cut = table[:1] + table[1:-1][:MAX_REPORT_LINES] + table[-1:], len(table) - 2
        more = (
            f"\n{cut - MAX_REPORT_LINES} more lines: `labbot usage --csv` has them all."
            if cut > MAX_REPORT_LINES
            else ""
        )
        body = "\n".join(line.replace("`", "'") for line in shown)  # stays in the block
        await respond(interaction, f"**Usage, last {days} days, by {by}**\n```\n{body}\n```{more}")

    @app_commands.command(name="model")
    @app_commands.describe(
        name="The model to use (empty: show the current one and the choices)",
        add="Admins only: add this model to the allowed ones first",
    )
    async def model(
        self, interaction: discord.Interaction, name: str | None = None, add: bool = False
    ) -> None:
        """Show or choose your model, among those the operator allows."""
        engine = self.bot.services.engine
        if engine is None:
            await respond(interaction, "No model is configured.")
            return
        if add and not self.bot.access.is_admin(interaction.user.id):
            await respond(interaction, "Only the bot's admins can add models.")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # may ask the API
        user = str(interaction.user.id)
        if name:
            info = await engine.set_model(user, name, force=add)
        else:
            info = await engine.model_for(user)
        allowed = ", ".join((await engine.models()).names()[:MAX_CHOICES])
        await respond(
            interaction,
            f"Model: **{escape_markdown(info.name)}** (context {info.context_window:,} tokens,"
            f" images {'yes' if info.vision else 'no'}). Allowed: {escape_markdown(allowed)}.",
        )

    @model.autocomplete("name")
    async def model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Allowed models matching what is typed."""
        engine = self.bot.services.engine
        allowed = (await engine.models()).names() if engine is not None else []
        names = [n for n in allowed if current.lower() in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:MAX_CHOICES]]

    @app_commands.command(name="code")
    @app_commands.describe(show="Show the code I run in my answers")
    async def code(self, interaction: discord.Interaction, show: bool) -> None:
        """Show or hide the code I run."""
        users, user = self.bot.services.preferences.users, str(interaction.user.id)
        await users.put(user, replace(await users.get(user), show_code=show))
        await respond(interaction, f"I will {'show' if show else 'hide'} the code I run.")


async def setup(bot: LabBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Session(bot))
