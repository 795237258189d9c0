"""/export: this conversation as a Jupyter notebook (or a zip with the files it loads), sent
privately; linked when over the upload limit here."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from labbot.export import export_conversation, write_bundle
from labbot.files import file_chunks
from labbot.files.receipt import format_size
from labbot.frontends.discord.commands.session import conversation_for
from labbot.frontends.discord.posting import respond
from labbot.frontends.web import ENABLE_HINT

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot


class Export(commands.Cog):
    """/export."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="export")
    @app_commands.describe(bundle="A zip: the notebook and the files it loads")
    async def export(self, interaction: discord.Interaction, bundle: bool = False) -> None:
        """This conversation as a Jupyter notebook (its code, outputs and plots)."""
        conversation = conversation_for(interaction)
        if not conversation:
            await respond(
                interaction,
                "Run /export in the thread or DM of the conversation to export (conversations"
                " live in threads, DMs and reply chains; /new starts a thread).",
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        services, user = self.bot.services, str(interaction.user.id)
        done = await export_conversation(services.conversations, services.store, user, conversation)
        stem = "labbot-" + re.sub(r"[^A-Za-z0-9_-]", "-", conversation)
        name = f"{stem}.zip" if bundle else f"{stem}.ipynb"
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="labbot-export-"))
        try:
            path = folder / name
            if bundle:
                await write_bundle(done, services.store, user, path, f"{stem}.ipynb")
            else:
                await asyncio.to_thread(path.write_text, done.text(), encoding="utf-8")
            size = (await asyncio.to_thread(path.stat)).st_size
            note = ""
            if done.missing:
                note = f" Not exported (no longer stored): {', '.join(done.missing)}."
            if size <= interaction.filesize_limit:
                await respond(
                    interaction,
                    f"This conversation as a notebook ({format_size(size)}).{note}",
                    file=discord.File(path, filename=name),
                )
                return
            await respond(interaction, await self._linked(user, path, name, size) + note)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    async def _linked(self, user: str, path: Path, name: str, size: int) -> str:
        """An export over the upload limit, kept as one of the user's files and linked; or
        how the operator can allow that."""
        store, links = self.bot.services.store, self.bot.downloads
        if not links.available:
            return f"The export is {format_size(size)}, too large to send here. {ENABLE_HINT}"
        kept = await store.list(user)
        limits = store.limits
        if len(kept) >= limits.max_files or sum(r.size for r in kept) + size > (
            limits.max_total_bytes
        ):  # keeping it would push out the user's oldest files, perhaps the very ones it holds
            return (
                f"The export is {format_size(size)}, too large to send here, and keeping it with"
                " your files for a link would remove older ones. Delete some with /files, or"
                " export the notebook alone (without bundle)."
            )
        saved = await store.save(user, name, file_chunks(path), source="generated")
        url = await links.link(user, saved.record.id)
        return (
            f"The export is {format_size(size)}, too large to send here; it is kept with your"
            f" files (`{saved.record.id}`): {url}"
        )


async def setup(bot: LabBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Export(bot))
