"""One gate for every way into the bot. Messages, slash commands, autocomplete, buttons, select
menus and modals all pass the same access decision and draw on the same per-user rate limit.

discord.py's own hooks call it: ``LabbotTree.interaction_check`` for slash commands and
autocomplete, ``GatedView``/``GatedModal.interaction_check`` for components, and the Messages
cog for messages. Edits of messages are not answered at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import discord
from discord.ext import commands

from labbot.frontends.discord.access import AccessPolicy

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot

log = logging.getLogger(__name__)

REFUSED = "You cannot use labbot here."
SLOW_DOWN = "Slow down a little: try again in {retry:.0f} s."

User = discord.User | discord.Member


class Gate:
    """Who may come in (AccessPolicy) and how often (a per-user rate limit).

    Past the rate limit a user is told once per window when to come back; everything else
    they send in that window is ignored without an answer.
    """

    def __init__(
        self,
        bot: LabBot,
        access: AccessPolicy,
        *,
        rate: int,
        per: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot, self.access, self.clock = bot, access, clock
        self.per = per
        self.cooldown: commands.CooldownMapping[int] = commands.CooldownMapping.from_cooldown(
            rate, per, lambda user_id: user_id
        )
        self._told_until: dict[int, float] = {}  # user → end of the window they were told of

    # The decision ----------------------------------------------------------------------------
    async def roles(self, user: User) -> set[int] | None:
        """The user's role ids: a member's own; for a DM (no member), those they hold in every
        guild they share with the bot. None when they cannot be looked up (refuse then)."""
        if isinstance(user, discord.Member):
            return {role.id for role in user.roles}
        if not self.access.uses_roles():
            return set()
        found: set[int] = set()
        for guild in self.bot.guilds:
            member = guild.get_member(user.id)
            if member is None:
                try:  # REST: without the members intent the cache does not hold them
                    member = await guild.fetch_member(user.id)
                except discord.NotFound:
                    continue
                except discord.HTTPException as exc:
                    log.warning(
                        "gate.roles_unknown user=%s guild=%s status=%s",
                        user.id,
                        guild.id,
                        exc.status,
                    )
                    return None
            found |= {role.id for role in member.roles}
        return found

    async def permitted(self, user: User, channel: Any, in_guild: bool) -> bool:
        """The access decision for this user in this channel (a thread counts as its parent
        too; a DM has no channel rules)."""
        roles = await self.roles(user)
        if roles is None:
            return False
        channels: set[int] = set()
        if in_guild and channel is not None:
            channels.add(channel.id)
            parent = getattr(channel, "parent_id", None)
            if parent:
                channels.add(parent)
        return self.access.permits(user_id=user.id, role_ids=roles, channel_ids=channels)

    def retry_after(self, user_id: int, *, count: bool = True) -> float:
        """Seconds until the user may come back (0: now); ``count`` takes one from their
        allowance."""
        now = self.clock()
        bucket = self.cooldown.get_bucket(user_id, now)
        assert bucket is not None
        if count:
            return bucket.update_rate_limit(now) or 0.0
        return bucket.get_retry_after(now)

    def first_notice(self, user_id: int, retry: float) -> bool:
        """True the first time in a window that this user is over the limit."""
        now = self.clock()
        if self._told_until.get(user_id, 0.0) > now:
            return False
        if len(self._told_until) > 10_000:  # forget windows that are over
            self._told_until = {u: t for u, t in self._told_until.items() if t > now}
        self._told_until[user_id] = now + retry
        return True

    # The ways in -----------------------------------------------------------------------------
    async def admit_message(self, message: discord.Message) -> bool:
        """A message for the bot: refused silently; over the limit, told once per window."""
        user = message.author
        if not await self.permitted(user, message.channel, message.guild is not None):
            log.info("gate.refused way=message user=%s", user.id)
            return False
        retry = self.retry_after(user.id)
        if retry:
            log.info("gate.limited way=message user=%s", user.id)
            if self.first_notice(user.id, retry):
                await message.reply(SLOW_DOWN.format(retry=retry), mention_author=False)
            return False
        return True

    async def admit_interaction(self, interaction: discord.Interaction) -> bool:
        """A slash command, autocomplete, button, select or modal. Refusals are private;
        autocomplete is not counted (Discord sends one per keystroke) but offers nothing to
        whoever is refused or over the limit."""
        user, way = interaction.user, interaction.type.name
        autocomplete = interaction.type is discord.InteractionType.autocomplete
        permitted = await self.permitted(
            user, interaction.channel, interaction.guild_id is not None
        )
        retry = self.retry_after(user.id, count=not autocomplete)
        if permitted and not retry:
            return True
        log.info("gate.%s way=%s user=%s", "limited" if retry else "refused", way, user.id)
        with contextlib.suppress(discord.HTTPException):  # expired, or answered meanwhile
            if autocomplete:
                await interaction.response.autocomplete([])
            elif retry and self.first_notice(user.id, retry):
                await interaction.response.send_message(
                    SLOW_DOWN.format(retry=retry), ephemeral=True
                )
            elif not retry:
                await interaction.response.send_message(REFUSED, ephemeral=True)
        return False


def gate_of(interaction: discord.Interaction) -> Gate:
    """The bot's gate, from an interaction."""
    return cast("LabBot", interaction.client).gate


class GatedView(discord.ui.View):
    """A view whose every button and menu passes the gate first, then ``allows`` (the view's
    own rule, e.g. only its owner). Subclasses override ``allows``, never
    ``interaction_check``."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """The gate, then the view's own rule."""
        return await gate_of(interaction).admit_interaction(interaction) and await self.allows(
            interaction
        )

    async def allows(self, interaction: discord.Interaction) -> bool:
        """The view's own rule (everyone who passed the gate, unless overridden)."""
        return True


class GatedModal(discord.ui.Modal):
    """A modal whose submission passes the gate first, then ``allows``."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """The gate, then the modal's own rule."""
        return await gate_of(interaction).admit_interaction(interaction) and await self.allows(
            interaction
        )

    async def allows(self, interaction: discord.Interaction) -> bool:
        """The modal's own rule (everyone who passed the gate, unless overridden)."""
        return True
