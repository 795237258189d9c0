"""/files: list your files with their expiry; pick one to download or delete (delete asks)."""

from __future__ import annotations

import io
from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from labbot.files import FileRecord, kind_by_name
from labbot.files.names import clean_filename
from labbot.files.receipt import format_expiry, format_size
from labbot.frontends.discord.downloads import too_large
from labbot.frontends.discord.posting import respond, update
from labbot.frontends.discord.render import shown_name
from labbot.frontends.discord.views import OwnerView

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot

MAX_CHOICES = 25  # Discord's limit for a select menu


class FileView(OwnerView):
    """A view of one user's files (only they may use it)."""

    refusal = "These are not your files."


class FileActions(FileView):
    """Download or delete one chosen file."""

    def __init__(self, bot: LabBot, owner_id: int, record: FileRecord) -> None:
        super().__init__(owner_id)
        self.bot, self.record = bot, record

    @discord.ui.button(label="Download", style=discord.ButtonStyle.primary, emoji="⬇️")
    async def download(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Send the file privately, within the upload limit of this interaction."""
        store, record = self.bot.services.store, self.record
        await store.get(str(self.owner_id), record.id)  # still there, still theirs
        if record.size > interaction.filesize_limit:
            user, limit = str(self.owner_id), interaction.filesize_limit
            text = await too_large(self.bot.downloads, user, [record], limit)
            await respond(interaction, text or f"{shown_name(record.name)} is no longer stored.")
            return
        data = await store.read_bytes(str(self.owner_id), record.id)
        await respond(interaction, file=discord.File(io.BytesIO(data), filename=record.name))

    @discord.ui.button(label="Delete", style=discord.ButtonStyle.danger, emoji="🗑️")
    async def delete(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Ask to confirm before deleting."""
        await update(
            interaction,
            content=f"Delete {shown_name(self.record.name)} (`{self.record.id}`)?"
            " This cannot be undone.",
            view=ConfirmDelete(self.bot, self.owner_id, self.record),
        )


class ConfirmDelete(FileView):
    """The second step of a delete."""

    def __init__(self, bot: LabBot, owner_id: int, record: FileRecord) -> None:
        super().__init__(owner_id)
        self.bot, self.record = bot, record

    @discord.ui.button(label="Yes, delete it", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Delete (disk and database)."""
        await self.bot.services.store.delete(str(self.owner_id), self.record.id)
        await update(interaction, content=f"Deleted {shown_name(self.record.name)}.", view=None)

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Change nothing."""
        await update(interaction, content="Kept.", view=None)


class FilePicker(FileView):
    """A select menu of the user's files."""

    def __init__(self, bot: LabBot, owner_id: int, records: list[FileRecord]) -> None:
        super().__init__(owner_id)
        self.bot = bot
        self.records = {r.id: r for r in records}
        options = [
            discord.SelectOption(
                label=clean_filename(r.name)[:100],
                value=r.id,
                description=f"{format_size(r.size)} · {r.id}"[:100],
                emoji=kind_by_name(r.kind).emoji,
            )
            for r in records[:MAX_CHOICES]
        ]
        self.choose.options = options  # type: ignore[assignment]  # typed Select[Never]

    @discord.ui.select(placeholder="Pick a file to download or delete")
    async def choose(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        """Show the actions for the chosen file."""
        record = self.records[select.values[0]]
        await respond(
            interaction,
            f"{kind_by_name(record.kind).emoji} {shown_name(record.name)} (`{record.id}`)",
            view=FileActions(self.bot, self.owner_id, record),
        )


def file_list(records: list[FileRecord], *, now: datetime, max_files: int) -> str:
    """The /files text: one line per file with its expiry."""
    lines = [f"**Your files ({len(records)}/{max_files})**"]
    for r in records:
        lines.append(
            f"{kind_by_name(r.kind).emoji} {shown_name(r.name)} · {format_size(r.size)} · `{r.id}`"
            f" · expires {format_expiry(r.expires_at, now)}"
        )
    return "\n".join(lines)


class Files(commands.Cog):
    """/files."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="files")
    async def files(self, interaction: discord.Interaction) -> None:
        """List your files; pick one to download or delete."""
        store = self.bot.services.store
        records = await store.list(str(interaction.user.id))
        if not records:
            await respond(interaction, "You have no files. Attach one to a message to me.")
            return
        text = file_list(records, now=store.clock(), max_files=store.limits.max_files)
        await respond(
            interaction, text[:2000], view=FilePicker(self.bot, interaction.user.id, records)
        )


async def setup(bot: LabBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Files(bot))
