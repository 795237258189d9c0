"""One gate for every way into the bot. Messages, slash commands, autocomplete, buttons, select
menus and modals all pass the same access decision and draw on the same per-user rate limit.

discord.py's own hooks call it: ``LabbotTree.interaction_check`` for slash commands and
autocomplete, ``GatedView``/``GatedModal.interaction_check`` (views.py) for components, and the
Messages cog for messages. Edits of messages are not answered at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import discord
from discord.ext import commands

from labbot.frontends.discord.access import AccessPolicy
from labbot.frontends.discord.posting import links_of, reply, respond

log = logging.getLogger(__name__)

REFUSED = "You cannot use labbot here."
SLOW_DOWN = "Slow down a little: try again in {retry:.0f} s."
ROLE_CACHE_SECONDS = 300.0  # how long a DM author's roles are trusted before asking again
CACHE_ENTRIES = 10_000  # users whose roles, and threads whose parents, are remembered

User = discord.User | discord.Member


class Gate:
    """Who may come in (AccessPolicy) and how often (a per-user rate limit).

    Past the rate limit a user is told once per window when to come back; everything else
    they send in that window is ignored without an answer.
    """

    def __init__(
        self,
        client: discord.Client,
        access: AccessPolicy,
        *,
        rate: int,
        per: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.access, self.clock = client, access, clock
        self.per = per
        self.cooldown: commands.CooldownMapping[int] = commands.CooldownMapping.from_cooldown(
            rate, per, lambda user_id: user_id
        )
        self._told_until: dict[int, float] = {}  # user → end of the window they were told of
        self._roles: OrderedDict[int, tuple[float, frozenset[int]]] = OrderedDict()  # DMs
        self._parents: OrderedDict[int, int] = OrderedDict()  # uncached thread → parent (0)
        self._looking: dict[tuple[str, int], asyncio.Future[Any]] = {}  # lookups running

    # The decision: what is known for free first, the rate limit, then Discord's API ---------
    async def decide(
        self, user: User, channel: Any, *, in_guild: bool, count: bool = True
    ) -> tuple[bool, float]:
        """(permitted, seconds until the user may come back). The lists are checked first on
        what is known without asking Discord; then the rate limit (``count`` takes one from
        the allowance); only then, for who is within it, are a DM's roles or an uncached
        thread's parent looked up. Whatever cannot be looked up refuses."""
        roles = self.known_roles(user)
        channels, complete = self.known_channels(channel, in_guild=in_guild)
        verdict = self.access.decide(
            user_id=user.id, role_ids=roles, channel_ids=channels, channels_complete=complete
        )
        if verdict is False:
            return False, 0.0
        retry = self.retry_after(user.id, count=count)
        if retry or verdict:
            return bool(verdict), retry
        if roles is None:
            roles = await self.lookup_roles(user)
            if roles is None:
                return False, 0.0
        if not complete:
            parent = await self.parent_of(channel)
            if parent is None:
                return False, 0.0
            channels |= {parent} if parent else set()
        return self.access.permits(user_id=user.id, role_ids=roles, channel_ids=channels), 0.0

    def known_roles(self, user: User) -> set[int] | None:
        """The user's role ids when known without asking Discord: a member's own; none when
        no list names a role; a DM author's from the cache. None: to be looked up."""
        if isinstance(user, discord.Member):
            return {role.id for role in user.roles}
        if not self.access.uses_roles():
            return set()
        cached = self._roles.get(user.id)
        if cached is not None and cached[0] > self.clock():
            return set(cached[1])
        return None

    async def lookup_roles(self, user: User) -> set[int] | None:
        """A DM author's roles: those they hold in every guild they share with the bot, kept
        for ROLE_CACHE_SECONDS; events arriving meanwhile share one lookup. None when Discord
        cannot tell (refuse then)."""
        return await self._shared(("roles", user.id), lambda: self._fetch_roles(user))

    async def _shared(self, key: tuple[str, int], lookup: Callable[[], Awaitable[Any]]) -> Any:
        """One lookup per key at a time: events arriving while it runs wait for its answer."""
        pending = self._looking.get(key)
        if pending is None:
            pending = self._looking[key] = asyncio.ensure_future(lookup())
            pending.add_done_callback(lambda _: self._looking.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch_roles(self, user: User) -> set[int] | None:
        found: set[int] = set()
        for guild in self.client.guilds:
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
        _remember(self._roles, user.id, (self.clock() + ROLE_CACHE_SECONDS, frozenset(found)))
        return found

    def known_channels(self, channel: Any, *, in_guild: bool) -> tuple[set[int], bool]:
        """The ids the channel rules apply to (the channel, and a thread's parent) and whether
        they are complete. A thread discord.py has not cached comes as a PartialMessageable
        without its parent: incomplete, when channel rules exist, until it is looked up."""
        if not in_guild or channel is None:
            return set(), True
        ids = {channel.id}
        parent = getattr(channel, "parent_id", None)
        if parent:
            return ids | {parent}, True
        if not isinstance(channel, discord.PartialMessageable):
            return ids, True
        known = self._parents.get(channel.id)
        if known is not None:
            return ids | ({known} if known else set()), True
        return ids, not self.access.uses_channels()

    async def parent_of(self, channel: Any) -> int | None:
        """The parent id of a channel discord.py has not cached (0: it has none), asked of
        Discord once and remembered; None when Discord cannot tell (refuse then)."""
        return await self._shared(("parent", channel.id), lambda: self._fetch_parent(channel))

    async def _fetch_parent(self, channel: Any) -> int | None:
        try:
            fetched = await self.client.fetch_channel(channel.id)
        except discord.HTTPException as exc:
            log.warning("gate.channel_unknown channel=%s status=%s", channel.id, exc.status)
            return None
        parent = getattr(fetched, "parent_id", None) or 0
        _remember(self._parents, channel.id, parent)  # a thread never changes its parent
        return parent

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
        permitted, retry = await self.decide(
            user, message.channel, in_guild=message.guild is not None
        )
        if retry:
            log.info("gate.limited way=message user=%s", user.id)
            if self.first_notice(user.id, retry):
                text = SLOW_DOWN.format(retry=retry)
                await reply(message, text, links=links_of(self.client))
            return False
        if not permitted:
            log.info("gate.refused way=message user=%s", user.id)
            return False
        return True

    async def admit_interaction(self, interaction: discord.Interaction) -> bool:
        """A slash command, autocomplete, button, select or modal. Refusals are private;
        autocomplete is not counted (Discord sends one per keystroke) but offers nothing to
        whoever is refused or over the limit."""
        user, way = interaction.user, interaction.type.name
        autocomplete = interaction.type is discord.InteractionType.autocomplete
        permitted, retry = await self.decide(
            user,
            interaction.channel,
            in_guild=interaction.guild_id is not None,
            count=not autocomplete,
        )
        if permitted and not retry:
            return True
        log.info("gate.%s way=%s user=%s", "limited" if retry else "refused", way, user.id)
        with contextlib.suppress(discord.HTTPException):  # expired, or answered meanwhile
            if autocomplete:
                await interaction.response.autocomplete([])
            elif retry and self.first_notice(user.id, retry):
                await respond(interaction, SLOW_DOWN.format(retry=retry))
            elif not retry:
                await respond(interaction, REFUSED)
        return False


def _remember(cache: OrderedDict[int, Any], key: int, value: Any) -> None:
    """Keep ``value`` as the newest entry; the oldest go past CACHE_ENTRIES."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_ENTRIES:
        cache.popitem(last=False)


class _Gated(Protocol):
    gate: Gate


def gate_of(interaction: discord.Interaction) -> Gate:
    """The gate of the client this interaction came to."""
    return cast(_Gated, interaction.client).gate
