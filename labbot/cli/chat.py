"""`labbot ask`, `labbot chat` and `labbot run`: the conversation engine from the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from labbot.cli.checks import check_base_url, run_mode
from labbot.cli.group import (
    LOCAL_USER,
    ONE_SHOT,
    cli,
    echo,
    error_json,
    json_option,
    unusable_data_dir,
    user_option,
)
from labbot.config import Settings
from labbot.core import Failed, FileProduced, Status, TextDelta, ToolOutput, ToolStarted, Usage
from labbot.errors import ConfigError, FileError, FileNotFound, LabbotError
from labbot.logs import configure_logging

if TYPE_CHECKING:
    from labbot.chat.attachments import Taken


class TurnFailed(LabbotError):
    """The turn could not go on (the engine's Failed event), as the JSON error's type."""


def _not_asked(taken: Taken) -> FileError:
    """Why `ask` stopped before the model: the attachments refused, and what became of the
    others."""
    names = ", ".join(r.name for r in taken.refused)
    attached = len(taken.refused) + len(taken.saved)
    which = "the attached file" if attached == 1 else f"{len(taken.refused)} of the {attached}"
    which += " attached files" if attached > 1 else ""
    kept = "; the rest were stored (`labbot files list` shows them)" if taken.saved else ""
    return FileError(
        f"The question was not asked: {which} could not be stored ({names}){kept}.",
        hint="Fix or leave out the files named above, then ask again.",
    )


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]().model_copy(update=ONE_SHOT)


output_dir_option = click.option(
    "--output-dir",
    "-o",
    default="labbot-output",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where files the code makes are saved.",
)


@cli.command()
@click.argument("question")
@user_option
@click.option(
    "--attach",
    "-a",
    multiple=True,
    help="A file to upload with the question.",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--conversation",
    "-c",
    default="cli",
    show_default=True,
    help="Conversation name: history and variables carry over within it.",
)
@output_dir_option
@click.option(
    "--model",
    "-m",
    default=None,
    help="Choose this user's model first (remembered, like /model); one the operator allows.",
)
@click.option(
    "--force-model", is_flag=True, help="Add the --model name to the allowed models first."
)
@json_option
@click.pass_context
def ask(
    ctx: click.Context,
    question: str,
    user: str,
    attach: tuple[Path, ...],
    conversation: str,
    output_dir: Path,
    model: str | None,
    force_model: bool,
    json_: bool,
) -> None:
    """Ask one question (one turn) and print the answer; scriptable.

    \b
    Examples:
      labbot ask "Which region sold most?" --user 1234 --attach sales.csv
      labbot ask "Plot it by month" --user 1234 --json     # JSON lines of events
      labbot ask "Summarise it" --user 1234 --model gpt-4o
    """
    from labbot.app import open_app
    from labbot.chat.attachments import Upload
    from labbot.chat.reports import TurnTotals
    from labbot.files import file_chunks
    from labbot.files.receipt import render_upload_confirmation
    from labbot.frontends.escapes import PrintableStream, json_text
    from labbot.frontends.terminal import save_produced
    from labbot.frontends.terminal_view import from_chat_markup

    settings = _settings(ctx)
    if not settings.llm_configured:
        raise ConfigError(
            "No model is configured.",
            hint="Set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible"
            " endpoint such as Ollama or vLLM).",
        )
    check_base_url(settings)

    def out(data: dict[str, Any]) -> None:
        click.echo(json_text(data))

    async def file_json(services: Any, produced: FileProduced) -> dict[str, Any]:
        """The file's record (the one JSON shape of a file), and where it was saved."""
        path = await save_produced(services, user, produced.file, output_dir)
        try:
            record = (await services.store.get(user, produced.file.id)).to_json()
        except FileNotFound:  # already gone again (evicted): what the execution reported
            record = produced.file.to_json()
        return {
            "type": produced.kind,
            "call_id": produced.call_id,
            "file": record,
            "path": str(path),
        }

    async def main() -> bool:
        failed = False
        answer, output = PrintableStream(), PrintableStream()  # stdout, stderr
        async with open_app(settings) as services:
            assert services.engine is not None
            if model is not None:  # an unknown name stops here, before any upload or request
                await services.engine.set_model(user, model, force=force_model)
            uploads = [Upload(path.name, file_chunks(path)) for path in attach]
            taken = await services.attachments.take(user, uploads)
            for saved in taken.saved:
                if json_:
                    out(
                        {
                            "type": "upload",
                            "file": saved.record.to_json(),
                            "evicted": [r.to_json() for r in saved.evicted],
                        }
                    )
                else:
                    receipt = render_upload_confirmation(saved, now=services.store.clock())
                    echo(from_chat_markup(receipt).plain, err=True)  # no **markup** shown
            for refused in taken.refused:  # each named, with why and the fix
                error = error_json(refused.error)
                error["error"]["message"] = f"{refused.name}: {error['error']['message']}"
                if json_:
                    out({"type": "error"} | error)
                else:
                    echo(f"Error: {refused.name}: {refused.error}", err=True)
            if taken.refused:  # the question is about the files: not asked without them
                raise _not_asked(taken)
            totals = TurnTotals()
            async for event in services.engine.turn(
                user, conversation, question, file_ids=taken.file_ids, image_ids=taken.image_ids
            ):
                if isinstance(event, Usage):
                    totals.add(event)
                data = event.to_json()
                if isinstance(event, FileProduced):
                    data = await file_json(services, event)
                elif isinstance(event, Failed):  # the one JSON shape of an error
                    data = {"type": "error"} | error_json(TurnFailed(event.text))
                failed = failed or isinstance(event, Failed)
                if json_:
                    out(data)
                    continue
                match event:
                    case TextDelta(text=text):
                        click.echo(answer.feed(text), nl=False)
                    case ToolStarted(code=code):
                        echo(f"\n--- running code ---\n{code}\n---", err=True)
                    case ToolOutput(text=text):
                        click.echo(output.feed(text), nl=False, err=True)
                    case Status(text=text):
                        echo(f"\n[{text}]", err=True)
                    case FileProduced():
                        echo(f"\nfile: {data['path']}")
                    case Failed(text=text):
                        echo(f"\nError: {text}", err=True)
                    case _:
                        pass  # usage, results and the final text are in the stream above
            if json_ and totals.requests:
                out({"type": "turn_usage", "usage": totals.to_json()})
            if not json_:
                click.echo(output.flush(), nl=False, err=True)
                click.echo(answer.flush())
                if totals.requests:  # one quiet line, on stderr: stdout stays the answer
                    echo(totals.line(), err=True)
        return failed

    if asyncio.run(main()):
        ctx.exit(1)


@cli.command()
@click.option("--user", "-u", default=LOCAL_USER, show_default=True, help="Your user id.")
@click.option("--conversation", "-c", default="terminal", show_default=True)
@output_dir_option
@click.pass_context
def chat(ctx: click.Context, user: str, conversation: str, output_dir: Path) -> None:
    """Chat in the terminal (a sandboxed Python console when no model is configured)."""
    from labbot.app import open_app
    from labbot.frontends.terminal import TerminalChat

    settings: Settings = ctx.obj["settings"]()
    data_dir = Path(settings.LABBOT_DATA_DIR)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                services = await stack.enter_async_context(open_app(settings))
            except OSError as exc:  # the data dir is a file, read-only, full, ...
                raise unusable_data_dir(settings, exc) from exc
            await TerminalChat(
                services,
                user=user,
                conversation=conversation,
                output_dir=output_dir,
                history=data_dir / "chat-history",
            ).run()

    try:
        with _log_to_file(settings, data_dir / "chat.log"):  # never mixed into the chat
            asyncio.run(main())
    except LabbotError:
        raise
    except KeyboardInterrupt:
        sys.exit(130)


@contextlib.contextmanager
def _log_to_file(settings: Settings, path: Path) -> Iterator[None]:
    """Send log lines to ``path`` while the chat runs (the screen is the conversation's)."""
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    root = logging.getLogger()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        root.setLevel(logging.ERROR)  # no log file: only what stops the chat reaches stderr
        yield
        return
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


@cli.command()
@click.pass_context
def bot(ctx: click.Context) -> None:
    """Run the Discord bot (needs DISCORD_TOKEN) until interrupted."""
    from labbot.app import open_app
    from labbot.frontends.discord import create_bot
    from labbot.frontends.discord.setup_check import login, login_error
    from labbot.frontends.metrics import watching

    settings: Settings = ctx.obj["settings"]()
    if settings.DISCORD_TOKEN is None:
        raise ConfigError("DISCORD_TOKEN is not set.", hint="Put the bot token in .env.")
    token = settings.DISCORD_TOKEN.get_secret_value()
    # A malformed or refused token, or no network: one sentence, before any log line.
    asyncio.run(login(token))
    configure_logging(
        settings.LOG_LEVEL, settings.LOG_FORMAT, discord_debug=settings.LOG_DISCORD_DEBUG
    )

    async def serve() -> None:
        # discord.py's "advanced start-up": the App outlives the bot that runs on it.
        async with open_app(settings) as app, watching(app), create_bot(app) as client:
            await client.start(token)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except Exception as exc:
        if (error := login_error(exc)) is None:
            raise
        raise error from exc


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Start labbot as `labbot doctor` reports it: the Discord bot when DISCORD_TOKEN is set;
    else, in a terminal, the chat with the model, or a Python console when none is set."""
    settings: Settings = ctx.obj["settings"]()
    mode, sentence = run_mode(settings, terminal=sys.stdin.isatty())
    if mode is None:
        raise ConfigError(sentence)
    echo(f"labbot: starting {sentence}.", err=True)
    ctx.invoke(bot if mode == "bot" else chat)
