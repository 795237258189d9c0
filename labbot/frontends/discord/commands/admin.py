"""/access: admins allow or block users, roles and channels; /budget: admins give one user,
role or server other spending limits, and choose whether limits apply to themselves (both kept
in the database)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from labbot.chat.budgets import LIMITS, Budgets, LimitName, amount_text, parse_amount
from labbot.frontends.discord.access import KINDS
from labbot.frontends.discord.posting import respond

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot

# The limits as admins name them in /budget.
LIMIT_CHOICES: dict[str, LimitName] = {
    "daily": "user_daily_usd",
    "monthly": "user_monthly_usd",
    "server_monthly": "guild_monthly_usd",
    "daily_tokens": "user_daily_tokens",
}


class Admin(commands.Cog):
    """Access lists and budgets, for ADMIN_IDS only."""

    budget = app_commands.Group(name="budget", description="Spending limits (admins only)")

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

    async def _budgets(self, interaction: discord.Interaction) -> Budgets | None:
        """The budgets, when the caller is an admin and a model is configured (else says why)."""
        if not self.bot.access.is_admin(interaction.user.id):
            await respond(interaction, "Only the bot's admins can do that.")
            return None
        engine = self.bot.services.engine
        if engine is None:
            await respond(interaction, "No model is configured, so nothing is spent.")
            return None
        return engine.budgets

    @budget.command(name="set")
    @app_commands.describe(
        kind="Whom the limit is for: a user, a role, or a server",
        target="Their numeric id",
        limit="daily / monthly (USD per user), server_monthly (USD), daily_tokens",
        amount='US dollars (or tokens), "none" for no limit, "default" for the setting',
    )
    async def budget_set(
        self,
        interaction: discord.Interaction,
        kind: Literal["user", "role", "guild"],
        target: str,
        limit: Literal["daily", "monthly", "server_monthly", "daily_tokens"],
        amount: str,
    ) -> None:
        """Give one user, role or server another limit (admins only)."""
        budgets = await self._budgets(interaction)
        if budgets is None:
            return
        if not target.strip().isdigit():
            await respond(interaction, "Give a numeric id.")
            return
        name = LIMIT_CHOICES[limit]
        if (name == "guild_monthly_usd") != (kind == "guild"):
            await respond(
                interaction, "server_monthly is set for a server; the others for a user or role."
            )
            return
        if amount.strip().lower() == "default":
            await budgets.set_override(kind, target.strip(), name, "default")
            shown = "the setting's"
        else:
            value = parse_amount(amount)
            await budgets.set_override(kind, target.strip(), name, value)
            shown = "no limit" if value is None else amount_text(name, value)
        await respond(interaction, f"{limit} limit for {kind} {target.strip()}: {shown}.")

    @budget.command(name="show")
    async def budget_show(self, interaction: discord.Interaction) -> None:
        """The limits set by command, and the admins who opted in (admins only)."""
        budgets = await self._budgets(interaction)
        if budgets is None:
            return
        found = await budgets.overrides()
        lines = ["**Limits (settings)**"]
        for name in LIMITS:
            default = budgets.defaults[name]
            lines.append(f"{name}: {'none' if default is None else amount_text(name, default)}")
        lines.append("**Set by command**")
        for kind in ("user", "role", "guild"):
            for target, limits in getattr(found, kind).items():
                for name, value in limits.items():
                    shown = "none" if value is None else amount_text(name, Decimal(value))
                    lines.append(f"{kind} {target}: {name} {shown}")
        lines.append(f"Admins held to limits: {', '.join(sorted(found.opted_in)) or 'none'}")
        await respond(interaction, "\n".join(lines)[:2000])

    @budget.command(name="me")
    @app_commands.describe(apply="Hold me to the limits like everyone else")
    async def budget_me(self, interaction: discord.Interaction, apply: bool) -> None:
        """Admins are exempt from limits unless they opt in (admins only)."""
        budgets = await self._budgets(interaction)
        if budgets is None:
            return
        await budgets.opt_in(str(interaction.user.id), on=apply)
        await respond(
            interaction,
            "The limits now apply to you." if apply else "You are exempt from the limits again.",
        )


async def setup(bot: LabBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Admin(bot))
