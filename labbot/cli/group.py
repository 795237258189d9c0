"""The `labbot` group and what its commands share: settings, one error shape, --json, output
made inert on a terminal. The command modules add their commands to ``cli``.

This module stays light (click and the standard library): `labbot --version` and `--help` import
nothing else, and a command's module (with what it needs: the file store, the model client, the
sandbox) is imported only when that command runs (``LabbotGroup.lazy``)."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

import click

from labbot import __version__
from labbot.frontends.escapes import json_text, printable

if TYPE_CHECKING:
    from labbot.config import Settings
    from labbot.errors import StorageError
    from labbot.files import FileStore

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCAL_USER = "local"  # the terminal chat's user, and the files commands' default


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
    import asyncio

    from labbot.app import open_store

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
    from labbot.errors import StorageError

    return StorageError(
        f"The data folder {settings.LABBOT_DATA_DIR} cannot be used ({exc.strerror or exc}).",
        hint="Set LABBOT_DATA_DIR to a folder labbot may write (see `labbot doctor`).",
    )


def error_json(exc: BaseException) -> dict[str, Any]:
    """The one JSON shape of an error: ``{"error": {"type", "message", "hint"}}``."""
    from labbot.errors import LabbotError

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


def process_seconds() -> float | None:
    """Seconds since this process started (Python's own start-up and imports included), from
    /proc; None where that cannot be read, or when the command is not its own process (called
    in another program, as the tests do)."""
    import os
    import time

    if not _RUN["as_process"]:
        return None
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return None


def plural(count: int, word: str) -> str:
    """ "1 file", "2 files"."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class LabbotGroup(click.Group):
    """A click group that shows labbot's errors as one line (or, with --json, as the JSON error
    object on stdout) and a non-zero exit, never a traceback (unless --debug).

    ``lazy`` names the commands whose module is imported only when the command is looked up
    (click's lazy-loading pattern): name -> (module, the command's one-line help, for --help).
    The module adds the command to this group when imported."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, loaded or not."""
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, its module imported on first use."""
        if cmd_name not in self.commands and cmd_name in self.lazy:
            importlib.import_module(self.lazy[cmd_name][0])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """--help's command list, from the lazy table (no command module imported)."""
        names = [
            n for n in self.list_commands(ctx) if n in self.lazy or not self.commands[n].hidden
        ]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                rows.append((name, loaded.get_short_help_str(limit)))
            else:
                stand_in = click.Command(name, help=self.lazy[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, translating errors."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`labbot files list | head`): stop quietly, as git does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except click.ClickException as exc:
            if not (ctx.obj or {}).get("json"):
                raise
            click.echo(json_text(error_json(exc)))
            ctx.exit(exc.exit_code)
        except Exception as exc:
            from labbot.errors import LabbotError

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


def _load_settings() -> Settings:
    from labbot.config import load_settings

    return load_settings()


# Each command's module and one-line help; tests/test_cli.py checks both against the command.
COMMANDS = {
    "ask": ("labbot.cli.chat", "Ask one question (one turn) and print the answer; scriptable."),
    "bot": ("labbot.cli.chat", "Run the Discord bot (needs DISCORD_TOKEN) until interrupted."),
    "chat": (
        "labbot.cli.chat",
        "Chat in the terminal (a sandboxed Python console when no model is configured).",
    ),
    "doctor": (
        "labbot.cli.system",
        "Check the settings, what `labbot run` starts, storage, the sandbox, the model and"
        " Discord, and say what is wrong and how to fix it (every check prints its line).",
    ),
    "export": (
        "labbot.cli.export",
        "Export a conversation as a Jupyter notebook: questions and answers as Markdown, each"
        " execution as a code cell with its outputs, and a first cell defining load_file and"
        ' FILES over a folder "files" beside the notebook (--bundle puts both in one zip).',
    ),
    "exec": (
        "labbot.cli.system",
        "Run Python in the user's sandbox, with their files, and store what it writes.",
    ),
    "nats-config": (
        "labbot.cli.worker",
        "Print a nats-server config with a user per role and fresh passwords: the bot may call"
        " every worker; each worker may use only its own subjects.",
    ),
    "packages": (
        "labbot.cli.packages",
        "The sandbox runtime's packages (shared by every user).",
    ),
    "run": (
        "labbot.cli.chat",
        "Start labbot as `labbot doctor` reports it: the Discord bot when DISCORD_TOKEN is set;"
        " else, in a terminal, the chat with the model, or a Python console when none is set.",
    ),
    "status": (
        "labbot.cli.status",
        "What the running bot holds: live sessions (user, conversation, age, idle time, memory,"
        " CPU), the warm pool, executions waiting for a slot, and workers when scaled out.",
    ),
    "usage": ("labbot.cli.usage", "Tokens, requests, cost and executions, with totals."),
    "worker": (
        "labbot.cli.worker",
        "Serve code execution for labbot bots over NATS until stopped (SIGTERM or Ctrl-C).",
    ),
}
FILES_COMMANDS = {
    name: ("labbot.cli.files", text)
    for name, text in {
        "add": "Store local files for a user and print the upload confirmation (each file is"
        " tried; --json prints one entry per file: its record, or its error).",
        "get": "Write a file's contents out; never over an existing file unless --force.",
        "list": "List a user's files, newest first.",
        "rm": "Delete files (each is tried; --json prints one entry per id: its record, or its"
        " error).",
        "show": "Show one file's details.",
        "sweep": "Delete expired files and repair disk/database disagreements left by a crash.",
    }.items()
}


@click.group(
    cls=LabbotGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="labbot")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.option("--verbose", "-v", is_flag=True, help="Show the log's warnings on stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """labbot: a sandboxed data analyst for every user."""
    if debug or verbose:
        from labbot.logs import configure_logging

        configure_logging("DEBUG" if debug else "WARNING")
    else:
        _quiet_logging()
    ctx.obj = {"debug": debug, "settings": functools.cache(_load_settings)}


@cli.group(cls=LabbotGroup, name="files", lazy=FILES_COMMANDS)
def files_group() -> None:
    """Manage users' stored files."""


def user_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --user option of the files, exec and ask commands: ``local`` by default, the terminal
    chat's user, so the files the chat sees are the ones `labbot files list` lists."""
    return click.option(
        "--user",
        "-u",
        default=LOCAL_USER,
        show_default=True,
        help="The user id (a Discord user's id; the terminal chat's user is local).",
    )(fn)


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


_RUN = {"as_process": False}  # True when the `labbot` script runs: the process is the command


def main() -> None:
    """Entry point of the `labbot` script."""
    _RUN["as_process"] = True
    cli()
