"""Who may use the bot: allow and block lists by user, role and channel, from the settings and
from admins' commands (kept in the database)."""

from __future__ import annotations

from dataclasses import dataclass, field

from labbot.chat.preferences import AdminLists
from labbot.config import Settings

KINDS = ("user", "role", "channel")
_LIST = "access"  # the admins' list that holds what they allowed and blocked


@dataclass
class Lists:
    """Allowed and blocked ids per kind; an empty allow list allows everyone."""

    allowed: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in KINDS})
    blocked: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in KINDS})


class AccessPolicy:
    """Decides whether a user, with their roles, in a channel, may use the bot."""

    def __init__(self, settings: Settings, store: AdminLists) -> None:
        self.admins = set(settings.ADMIN_IDS)
        self.store = store
        self.configured = Lists(
            allowed={
                "user": set(settings.ALLOWED_USER_IDS),
                "role": set(settings.ALLOWED_ROLE_IDS),
                "channel": set(settings.ALLOWED_CHANNEL_IDS),
            },
            blocked={
                "user": set(settings.BLOCKED_USER_IDS),
                "role": set(settings.BLOCKED_ROLE_IDS),
                "channel": set(settings.BLOCKED_CHANNEL_IDS),
            },
        )
        self.commanded = Lists()

    async def load(self) -> None:
        """Read the lists admins set by command."""
        data = await self.store.get(_LIST)
        if data:
            self.commanded = Lists(
                allowed={k: set(data["allowed"].get(k, [])) for k in KINDS},
                blocked={k: set(data["blocked"].get(k, [])) for k in KINDS},
            )

    async def change(self, action: str, kind: str, target: int) -> None:
        """allow / block / clear one id, persistently."""
        for lists in (self.commanded.allowed, self.commanded.blocked):
            lists[kind].discard(target)
        if action == "allow":
            self.commanded.allowed[kind].add(target)
        elif action == "block":
            self.commanded.blocked[kind].add(target)
        data = {
            "allowed": {k: sorted(v) for k, v in self.commanded.allowed.items()},
            "blocked": {k: sorted(v) for k, v in self.commanded.blocked.items()},
        }
        await self.store.put(_LIST, data)

    def uses_roles(self) -> bool:
        """True when some role is allowed or blocked (so a user's roles must be known)."""
        lists = (
            self.configured.allowed,
            self.configured.blocked,
            self.commanded.allowed,
            self.commanded.blocked,
        )
        return any(found["role"] for found in lists)

    def is_admin(self, user_id: int) -> bool:
        """True for ADMIN_IDS."""
        return user_id in self.admins

    def permits(self, *, user_id: int, role_ids: set[int], channel_ids: set[int]) -> bool:
        """Admins always. Otherwise nothing of theirs blocked; the user or one of their roles
        allowed when a user or role allow list exists; and the channel (or its parent, for a
        thread) allowed when a channel allow list exists. DMs pass no channel ids."""
        return bool(self.decide(user_id=user_id, role_ids=role_ids, channel_ids=channel_ids))

    def decide(
        self,
        *,
        user_id: int,
        role_ids: set[int] | None,
        channel_ids: set[int],
        channels_complete: bool = True,
    ) -> bool | None:
        """``permits`` with what may still be unknown: ``role_ids`` None (a DM's roles not
        looked up yet) or ``channels_complete`` False (a thread whose parent is not known).
        True or False when that is enough to decide; None when the unknown part matters."""
        if self.is_admin(user_id):
            return True
        c, m = self.configured, self.commanded
        blocked = {k: c.blocked[k] | m.blocked[k] for k in KINDS}
        allowed = {k: c.allowed[k] | m.allowed[k] for k in KINDS}
        if user_id in blocked["user"] or channel_ids & blocked["channel"]:
            return False
        if role_ids is not None and role_ids & blocked["role"]:
            return False
        undecided = False
        if allowed["user"] or allowed["role"]:
            if user_id in allowed["user"] or (role_ids is not None and role_ids & allowed["role"]):
                pass
            elif role_ids is None and allowed["role"]:
                undecided = True
            else:
                return False
        if allowed["channel"] and channel_ids and not channel_ids & allowed["channel"]:
            if channels_complete:
                return False
            undecided = True
        if role_ids is None and blocked["role"]:
            undecided = True
        if not channels_complete and blocked["channel"]:
            undecided = True
        return None if undecided else True

    def uses_channels(self) -> bool:
        """True when some channel is allowed or blocked (so a thread's parent must be known)."""
        lists = (
            self.configured.allowed,
            self.configured.blocked,
            self.commanded.allowed,
            self.commanded.blocked,
        )
        return any(found["channel"] for found in lists)
