"""/access: admins allow or block users, roles and channels (kept in the database)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from labbot.frontends.discord.access import KINDS
from labbot.frontends.discord.posting import respond

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot


class Admin(commands.Cog):
    """Access lists, for ADMIN_IDS only."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="access")
    @app_commands.describe(
        action="allow, block, or clear (remove from both lists)",
        kind="user, role or channel",
        target="The id to change",
    )
    async def access(
        self,
        interaction: discord.Interaction,
        action: Literal["allow", "block", "clear"],
        kind: Literal["user", "role", "channel"],
        target: str,
    ) -> None:
        """Allow or block a user, role or channel (admins only)."""
        policy = self.bot.access
        if not policy.is_admin(interaction.user.id):
            await respond(interaction, "Only the bot's admins can do that.")
            return
        if not target.strip().isdigit() or kind not in KINDS:
            await respond(interaction, "Give a numeric id.")
            return
        await policy.change(action, kind, int(target))
        await respond(interaction, f"{action}: {kind} {target}.")


async def setup(bot: LabBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Admin(bot))
