"""The Discord front end."""

from labbot.frontends.discord.bot import LabBot, create_bot

__all__ = ["LabBot", "create_bot"]
