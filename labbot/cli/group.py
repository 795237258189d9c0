"""The `labbot` group and what its commands share: settings, one error shape, --json, output
made inert on a terminal. The command modules add their commands to ``cli``."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import click

from labbot import __version__
from labbot.app import open_store
from labbot.config import Settings, load_settings
from labbot.errors import LabbotError, StorageError
from labbot.files import FileStore
from labbot.frontends.escapes import json_text, printable
from labbot.logs import configure_logging

log = logging.getLogger(__name__)
T = TypeVar("T")


# Settings for commands that run code once (exec, ask, doctor's probe): a warm pool would only
# start interpreters nobody uses, and preloading the data stack only pays off in a kernel
# started before its first cell.
ONE_SHOT = {"SANDBOX_WARM_POOL": 0, "SANDBOX_PRELOAD": False}


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
        async with AsyncExitStack() as stack:
            try:
                store = await stack.enter_async_context(open_store(settings))
            except OSError as exc:  # the data dir is a file, read-only, full, ...
                raise unusable_data_dir(settings, exc) from exc
            return await work(store)

    return asyncio.run(main())


def unusable_data_dir(settings: Settings, exc: OSError) -> StorageError:
    """The one sentence for a data folder labbot cannot use (a file, read-only, full)."""
    return StorageError(
        f"The data folder {settings.LABBOT_DATA_DIR} cannot be used ({exc.strerror or exc}).",
        hint="Set LABBOT_DATA_DIR to a folder labbot may write (see `labbot doctor`).",
    )


def error_json(exc: BaseException) -> dict[str, Any]:
    """The one JSON shape of an error: ``{"error": {"type", "message", "hint"}}``."""
    if isinstance(exc, LabbotError):
        kind, message, hint = type(exc).__name__, exc.message, exc.hint
    elif isinstance(exc, click.UsageError):
        path = exc.ctx.command_path if exc.ctx else "labbot"
        kind, message, hint = "UsageError", exc.format_message(), f"See `{path} --help`."
    elif isinstance(exc, click.ClickException):
        kind, message, hint = "Error", exc.format_message(), None
    else:
        kind, message = "InternalError", f"unexpected failure ({type(exc).__name__})"
        hint = "Run with --debug for details."
    return {"error": {"type": kind, "message": message, "hint": hint}}


def plural(count: int, word: str) -> str:
    """ "1 file", "2 files"."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class LabbotGroup(click.Group):
    """A click group that shows labbot's errors as one line (or, with --json, as the JSON error
    object on stdout) and a non-zero exit, never a traceback (unless --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, translating errors."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if not (ctx.obj or {}).get("json"):
                raise
            click.echo(json_text(error_json(exc)))
            ctx.exit(exc.exit_code)
        except Exception as exc:
            obj = ctx.obj or {}
            if obj.get("debug"):
                raise
            if not isinstance(exc, LabbotError):
                log.exception("cli.unexpected_error kind=%s", type(exc).__name__)
            if obj.get("json"):
                click.echo(json_text(error_json(exc)))
                ctx.exit(1)
            if isinstance(exc, LabbotError):
                raise click.ClickException(str(exc)) from exc
            raise click.ClickException(
                f"unexpected failure ({type(exc).__name__}); run with --debug for details"
            ) from exc


def _quiet_logging() -> None:
    """No log lines in a command's output: a handler that drops them (not Python's last resort,
    which would print warnings)."""
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]
    root.setLevel(logging.WARNING)


@click.group(cls=LabbotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labbot")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.option("--verbose", "-v", is_flag=True, help="Show the log's warnings on stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """labbot: a sandboxed data analyst for every user."""
    if debug or verbose:
        configure_logging("DEBUG" if debug else "WARNING")
    else:
        _quiet_logging()
    ctx.obj = {"debug": debug, "settings": functools.cache(load_settings)}


@cli.group(cls=LabbotGroup, name="files")
def files_group() -> None:
    """Manage users' stored files."""


def user_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --user option every files command takes."""
    return click.option("--user", "-u", required=True, help="The user id (e.g. a Discord id).")(fn)


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value and ctx.obj is not None:
        ctx.obj["json"] = True  # errors, even usage errors, are printed as JSON too
    return value


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --json flag: machine-readable output on stdout, errors included."""
    return click.option(
        "--json",
        "json_",
        is_flag=True,
        is_eager=True,  # known before the other arguments are checked
        callback=_remember_json,
        help='Print JSON (errors too: {"error": {"type", "message", "hint"}}).',
    )(fn)


def main() -> None:
    """Entry point of the `labbot` script."""
    cli()
