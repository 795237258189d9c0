"""Buttons, menus and modals: each passes the gate first, then its own rule, and a failure in
one is answered by the one error path (errors.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import discord

from labbot.frontends.discord.errors import error_text
from labbot.frontends.discord.gate import gate_of
from labbot.frontends.discord.posting import respond, update

VIEW_TIMEOUT = 300


async def _failed(interaction: discord.Interaction, error: Exception, where: str) -> None:
    """Tell the presser what went wrong (privately)."""
    await respond(interaction, error_text(error, where=where))


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

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        """Say what went wrong (a file that expired meanwhile, ...) instead of failing mutely."""
        await _failed(interaction, error, f"view {type(self).__name__}")


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

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, /, *item: Any
    ) -> None:
        """Say what went wrong."""
        await _failed(interaction, error, f"modal {type(self).__name__}")


class OwnerView(GatedView):
    """A view only its owner may use; it expires after VIEW_TIMEOUT seconds."""

    refusal = "These are not yours."

    def __init__(self, owner_id: int, *, timeout: float | None = VIEW_TIMEOUT) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id

    async def allows(self, interaction: discord.Interaction) -> bool:
        """Anyone else gets a private refusal."""
        if interaction.user.id != self.owner_id:
            await respond(interaction, self.refusal)
            return False
        return True


class StopView(OwnerView):
    """A Stop button under a running answer; only the asker can press it."""

    refusal = "This is not your question."

    def __init__(self, owner_id: int, task: asyncio.Task[Any] | None) -> None:
        super().__init__(owner_id, timeout=None)
        self.task = task

    @discord.ui.button(label="Stop", style=discord.ButtonStyle.danger, emoji="⏹️")
    async def stop_turn(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Cancel this answer's turn and its code (not the user's other questions)."""
        if self.task is not None:
            self.task.cancel()
        self.stop()
        await update(interaction, view=None)
