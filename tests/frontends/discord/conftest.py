"""Fixtures of the Discord front end's tests (see world.py)."""

from tests.frontends.discord.world import world

__all__ = ["world"]
