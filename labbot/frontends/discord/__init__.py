"""The Discord front end."""

from labbot.frontends.discord.bot import LabBot, create_bot, run_bot

__all__ = ["LabBot", "create_bot", "run_bot"]
