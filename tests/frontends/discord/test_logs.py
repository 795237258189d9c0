"""discord.py's loggers log whole messages at DEBUG: they stay at INFO unless LOG_DISCORD_DEBUG
asks (issue 12, finding 9)."""

from __future__ import annotations

import logging

import pytest

from labbot.logs import configure_logging
from tests.conftest import Keep
from tests.fakes.openai_server import Reply
from tests.frontends.discord.world import World

# The real openai SDK against the loopback API: its client's request lines are checked too.
REAL_MODEL_API = {"OPENAI_BASE_URL": lambda api: api.base_url}


@pytest.mark.parametrize("world", [REAL_MODEL_API], indirect=True)
@pytest.mark.parametrize("discord_debug", [False, True])
async def test_debug_logs_hold_no_message_bodies(
    world: World, restore_logging: None, discord_debug: bool
) -> None:
    """At LOG_LEVEL=DEBUG a user's message and the answer are in no log line, unless
    LOG_DISCORD_DEBUG asks for discord.py's own debug logs (which do hold them)."""
    configure_logging("DEBUG", discord_debug=discord_debug)
    kept = Keep()
    logging.getLogger().addHandler(kept)
    world.api.enqueue(Reply.text("the answer is SECRET-ANSWER-42"))
    await world.fake.user_message("what about SECRET-QUESTION-17?", mention_bot=True)
    await world.fake.wait_for(lambda s: "SECRET-ANSWER-42" in (s.content or ""))
    await world.bot.wait_idle()
    logged = "\n".join(kept.lines)
    assert "labbot" in logged  # labbot's own debug logs are on
    leaked = "SECRET-QUESTION-17" in logged or "SECRET-ANSWER-42" in logged
    assert leaked is discord_debug
    assert logging.getLogger("discord.http").isEnabledFor(logging.DEBUG) is discord_debug
    assert logging.getLogger("discord.gateway").isEnabledFor(logging.INFO)


def test_quiet_levels_stay_quiet(restore_logging: None) -> None:
    """At LOG_LEVEL=WARNING discord.py's INFO lines stay out too."""
    configure_logging("WARNING")
    assert not logging.getLogger("discord.client").isEnabledFor(logging.INFO)
    assert logging.getLogger("discord.client").isEnabledFor(logging.WARNING)
