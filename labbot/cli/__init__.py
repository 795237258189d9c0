"""The `labbot` command: files, code, chat and health checks; scriptable with --json."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from labbot import __version__
from labbot.app import open_store
from labbot.config import Settings, load_settings
from labbot.errors import LabbotError
from labbot.files import FileStore
from labbot.frontends.escapes import json_text, printable
from labbot.logs import configure_logging

log = logging.getLogger(__name__)
T = TypeVar("T")


def emit_json(data: Any) -> None:
    """Print data as indented JSON (escaped: inert on a terminal)."""
    click.echo(json_text(data, indent=2))


def echo(text: Any = "", *, nl: bool = True, err: bool = False) -> None:
    """Print text with terminal control sequences removed (it may come from a model or a file)."""
    click.echo(printable(str(text)), nl=nl, err=err)


def run_with_store(ctx: click.Context, work: Callable[[FileStore], Coroutine[Any, Any, T]]) -> T:
    """Open the file store, run ``work`` on it, close it; LabbotError becomes one clean line."""
    settings: Settings = ctx.obj["settings"]()

    async def main() -> T:
        async with open_store(settings) as store:
            return await work(store)

    return asyncio.run(main())


class LabbotGroup(click.Group):
    """A click group that shows labbot's errors as one line and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, translating errors."""
        try:
            return super().invoke(ctx)
        except LabbotError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(exc)) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            log.exception("cli.unexpected_error")
            raise click.ClickException(
                f"unexpected failure ({type(exc).__name__}); run with --debug for details"
            ) from exc


@click.group(cls=LabbotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labbot")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """labbot: a sandboxed data analyst for every user."""
    configure_logging("DEBUG" if debug else "WARNING")
    ctx.obj = {"debug": debug, "settings": functools.cache(load_settings)}


@cli.group(cls=LabbotGroup, name="files")
def files_group() -> None:
    """Manage users' stored files."""


def user_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --user option every files command takes."""
    return click.option("--user", "-u", required=True, help="The user id (e.g. a Discord id).")(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --json flag: machine-readable output on stdout."""
    return click.option("--json", "json_", is_flag=True, help="Print JSON.")(fn)


def main() -> None:
    """Entry point of the `labbot` script."""
    cli()


# Commands register themselves on import.
from labbot.cli import chat, files, packages, system, worker  # noqa: E402, F401
