"""Which conversation a Discord message or command belongs to: the one place its id is made."""

from __future__ import annotations

from typing import Any

import discord


def conversation_id(channel: Any, *, in_guild: bool, message_id: int | None = None) -> str | None:
    """A thread is one conversation, and so is a DM; in a server channel a conversation starts
    at a message (``message_id``; without one, None: a channel itself is none)."""
    if isinstance(channel, discord.Thread):
        return f"thread:{channel.id}"
    if not in_guild and channel is not None:
        return f"dm:{channel.id}"
    return None if message_id is None else f"msg:{message_id}"
