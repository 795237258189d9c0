"""The one way a failure reaches a Discord user: a LabbotError shows its sentence; anything
else is logged with a short incident reference, and the user sees the reference. The command
tree, the message handler and every view use it."""

from __future__ import annotations

import logging
import secrets

from discord.utils import escape_markdown

from labbot.errors import LabbotError

log = logging.getLogger(__name__)


def incident() -> str:
    """A short reference a user can quote and an operator can find in the logs."""
    return secrets.token_hex(2)


def error_text(error: BaseException, *, where: str) -> str:
    """What the user is told about ``error``; the unexpected is logged (``where`` says in
    what) with the reference the text gives."""
    if isinstance(error, LabbotError):
        return escape_markdown(str(error))
    ref = incident()
    log.error("discord.failed ref=%s where=%s", ref, where, exc_info=error)
    return f"Something went wrong on our side (ref {ref})."
