"""The `labbot` command: files, code, chat and health checks; scriptable with --json.

The group (``labbot.cli.group.cli``) imports each command's module only when that command is
looked up, so `labbot --version` and `labbot --help` start at once."""

from labbot.cli.group import cli, main

__all__ = ["cli", "main"]
