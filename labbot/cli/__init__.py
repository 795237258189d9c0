"""The `labbot` command: files, code, chat and health checks; scriptable with --json.

Each command module adds its commands to the group (``labbot.cli.group.cli``) when imported;
importing them here makes the command whole."""

from labbot.cli import chat, export, files, packages, status, system, usage, worker
from labbot.cli.group import cli, main

__all__ = [
    "chat",
    "cli",
    "export",
    "files",
    "main",
    "packages",
    "status",
    "system",
    "usage",
    "worker",
]
