"""`labbot exec` and `labbot doctor`: run code in a user's sandbox, check the installation."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from labbot.cli.checks import (
    Check,
    core_pattern_check,
    data_dir_check,
    discord_checks,
    mask_credentials,
    memory_sharing_check,
    mode_check,
    model_checks,
    mongo_ping,
    sandbox_uid_check,
    unknown_settings,
)
from labbot.cli.group import (
    ONE_SHOT,
    cli,
    echo,
    emit_json,
    json_option,
    plural,
    process_seconds,
    run_with_store,
    user_option,
)
from labbot.cli.saving import save_file
from labbot.config import Settings
from labbot.core import ExecutionResult, progress_to
from labbot.errors import LabbotError
from labbot.files import FileStore
from labbot.files.receipt import format_size
from labbot.frontends.escapes import PrintableStream
from labbot.logs import mask_urls

log = logging.getLogger(__name__)
_SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_URI")


def _seconds(value: float) -> str:
    """ "0.1 ms", "3.72 s"."""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _print_result(result: ExecutionResult, streams: dict[str, PrintableStream]) -> None:
    """What an execution did, as text: output, value, error, notes, files."""
    for name, stream in streams.items():
        click.echo(stream.flush(), nl=False, err=name == "stderr")
    if result.value is not None:
        echo(result.value)
    error = result.error
    # A stopped execution's note already says why (the timeout sentence once, not twice).
    if error is not None and not any(error.message in note for note in result.notes):
        echo(error.traceback or f"{error.name}: {error.message}", err=True)
    for note in result.notes:
        echo(f"note: {note}", err=True)
    for s in result.skipped_files:
        echo(f"not kept: {s.name}: {s.reason}", err=True)


@cli.command(name="exec")
@click.argument("code", required=False)
@user_option
@click.option(
    "--session",
    "-s",
    default="cli",
    show_default=True,
    help="Conversation whose session runs the code.",
)
@click.option("--file", "-f", "code_file", type=click.File("r"), help="Read the code from a file.")
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Save the files the code makes into this folder (never over an existing file).",
)
@json_option
@click.pass_context
def exec_(
    ctx: click.Context,
    code: str | None,
    user: str,
    session: str,
    code_file: Any,
    output_dir: Path | None,
    json_: bool,
) -> None:
    """Run Python in the user's sandbox, with their files, and store what it writes.

    \b
    Examples:
      labbot exec --user 1234 "df = load_file('sales.csv'); df.describe()"
      labbot exec --user 1234 -f analysis.py -o out/ --json
    """
    from labbot.app import create_executor

    started = time.perf_counter()
    if (code is None) == (code_file is None):
        raise click.UsageError("give the code as an argument or with -f FILE (one of them)")
    source = code if code is not None else code_file.read()
    settings: Settings = ctx.obj["settings"]().model_copy(update=ONE_SHOT)
    streams = {"stdout": PrintableStream(), "stderr": PrintableStream()}

    async def live(name: str, text: str) -> None:
        if not json_:
            click.echo(streams[name].feed(text), nl=False, err=name == "stderr")

    def step(name: str, *, started: bool) -> None:
        # An automatic package install is said, never silent (it takes a while).
        if name.startswith("installing") and started:
            echo(f"labbot: {name} (automatic install; see SANDBOX_AUTO_INSTALL)", err=True)

    async def run(store: FileStore) -> tuple[ExecutionResult, list[dict[str, Any]]]:
        interpreter = create_executor(settings, store)
        await interpreter.start()
        try:
            with progress_to(step):
                result = await interpreter.run(user, session, source, on_output=live)
        finally:
            await interpreter.close()
        files = []
        for made in result.files:
            record = await store.get(user, made.id)
            entry = record.to_json()
            if output_dir is not None:
                path = await save_file(store, user, record, output_dir, folder=True)
                entry["path"] = str(path)
            files.append(entry)
        return result, files

    result, files = run_with_store(ctx, run)
    # From the process's start (Python and labbot's imports included), where /proc says it.
    took = process_seconds() or time.perf_counter() - started
    if json_:
        data = result.to_json()
        data.pop("duration", None)
        if files:
            data["files"] = files
        emit_json(data | {"execution_seconds": result.duration, "command_seconds": took})
    else:
        _print_result(result, streams)
        for f in files:
            where = f" saved to {f['path']}" if "path" in f else ""
            echo(f"file: {f['name']} ({f['id']}, {format_size(f['size'])}){where}")
        echo(
            f"time: execution {_seconds(result.duration)}, whole command {_seconds(took)}"
            " (start-up and starting the sandbox included)",
            err=True,
        )
    if result.status != "ok":
        ctx.exit(1)


def _probe_sandbox(ctx: click.Context, settings: Settings) -> str:
    """Start a real sandboxed interpreter and run one line in it."""
    from labbot.sandbox import CodeInterpreter

    quiet = settings.model_copy(update=ONE_SHOT)

    async def probe(store: FileStore) -> str:
        interpreter = CodeInterpreter(quiet, store)
        await interpreter.start()
        try:
            result = await interpreter.run("labbot-doctor", "probe", "6 * 7")
        finally:
            await interpreter.close()
        if result.value != "42":
            raise LabbotError(f"The sandbox ran but answered {result.to_json()}.")
        return f"{interpreter.jail.describe()}; ran code in {result.duration * 1000:.1f} ms"

    return run_with_store(ctx, probe)


async def _probe_blobs(settings: Settings) -> str:
    """Write, read back and delete a small object where file contents live."""
    from labbot.app import blob_store
    from labbot.files.names import new_file_id

    blobs = blob_store(settings)
    await blobs.start()
    probe = new_file_id()
    try:
        writer = await blobs.writer("labbot-doctor", probe, head_bytes=0)
        await writer.write(b"labbot")
        await writer.commit()
        back = b"".join([chunk async for chunk in blobs.read("labbot-doctor", probe)])
        await blobs.delete("labbot-doctor", probe)
    finally:
        await blobs.close()
    if back != b"labbot":
        raise LabbotError("what was written came back different")
    return f"{mask_urls(settings.LABBOT_BLOB_URL or '')}: write, read and delete work"


async def _probe_workers(settings: Settings) -> str:
    """Listen to the workers' heartbeats for a moment and say who is there."""
    from labbot.remote import bus, wire
    from labbot.remote.hosts import host_of_subject

    nc = await bus.connect(settings, "labbot-doctor")
    heard: dict[str, wire.Heartbeat | str] = {}  # a beat, or why it cannot be read

    async def on_beat(msg: Any) -> None:
        host = host_of_subject(msg.subject)  # who it is: the subject, never the message
        if host is None or (host not in heard and len(heard) >= 100):
            return
        try:
            heard[host] = wire.decode(wire.Heartbeat, msg.data)
        except wire.WireError as exc:
            heard[host] = f"its beats cannot be read ({exc})"

    try:
        await nc.subscribe(bus.heartbeat_subject("*"), cb=on_beat)
        await asyncio.sleep(settings.LABBOT_HEARTBEAT_S * 2)  # every worker beats once a period
    finally:
        await nc.close()
    if not heard:
        raise LabbotError(
            f"NATS at {mask_urls(settings.LABBOT_NATS_URL)} answers, but no worker is beating.",
            hint="Start `labbot worker` on the worker machines.",
        )
    return "; ".join(
        f"{host}: {_describe_beat(beat, settings)}" for host, beat in sorted(heard.items())
    )


def _describe_beat(beat: Any, settings: Settings) -> str:
    if isinstance(beat, str):
        return beat
    text = f"{beat.free}/{beat.slots} slots free" + (" (draining)" if beat.draining else "")
    if beat.timeout > settings.CODE_EXECUTION_TIMEOUT:
        text += (
            f" (its CODE_EXECUTION_TIMEOUT, {beat.timeout:g} s, is longer than this bot's:"
            " it gets no sessions)"
        )
    return text


def _masked(name: str, value: Any) -> Any:
    # Secrets are SecretStr fields; the name check is a second net for any that are not. URLs
    # (OPENAI_BASE_URL, LABBOT_NATS_URL, AWS_ENDPOINT_URL, ...) keep where they point only.
    if value and (isinstance(value, SecretStr) or name.endswith(_SECRET_SUFFIXES)):
        return "***"
    if isinstance(value, str):
        return mask_urls(value)
    return str(value) if isinstance(value, Path) else value


_LABELS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _unknown_settings() -> Check | None:
    """Variables in the environment or .env that look like settings but are none."""
    import os

    from dotenv import dotenv_values

    from labbot.config import Settings

    env_file = Settings.model_config.get("env_file")
    dotenv = dotenv_values(str(env_file)) if isinstance(env_file, str) else {}
    return unknown_settings(Settings.model_fields, os.environ, dotenv)


def _guarded(name: str, probe: Callable[[], Check | str | list[Check]]) -> list[Check]:
    """Run one check; whatever it raises becomes its failed line (doctor never crashes)."""
    try:
        found = probe()
    except LabbotError as exc:
        return [Check(name, "fail", str(exc))]
    except OSError as exc:
        log.warning("doctor.check_failed check=%s kind=%s", name, type(exc).__name__)
        return [Check(name, "fail", f"{type(exc).__name__}: {exc.strerror or 'failed'}")]
    except Exception as exc:
        log.exception("doctor.check_failed check=%s", name)
        why = f"unexpected failure ({type(exc).__name__}); run with --debug for details"
        return [Check(name, "fail", why)]  # its message may hold what must not be shown
    if isinstance(found, str):
        return [Check(name, "ok", found)]
    return found if isinstance(found, list) else [found]


def _database(ctx: click.Context, settings: Settings) -> str:
    from labbot.app import database_name

    if settings.MONGODB_URI is not None:  # one ping, bounded: not the bot's three tries
        mongo_ping(settings)
    ids = run_with_store(ctx, lambda store: store.meta.file_ids())
    return f"{database_name(settings)} ({plural(len(ids), 'file')})"


def _doctor_checks(ctx: click.Context, settings: Settings, report: Callable[..., None]) -> None:
    """Every check after the settings, each reported as soon as it is done."""
    report(*_guarded("labbot run", lambda: mode_check(settings, terminal=sys.stdin.isatty())))
    data_dir = _guarded("data dir", lambda: data_dir_check(settings.LABBOT_DATA_DIR))
    report(*data_dir)
    unusable = data_dir[0].status == "fail"
    skipped = "not checked: the data folder cannot be used (see data dir)"
    if unusable and settings.MONGODB_URI is None:
        report(Check("database", "skip", skipped))
    else:
        database = _guarded("database", lambda: _database(ctx, settings))
        report(*database)
        if not unusable and database[0].status == "fail":  # the sandbox's probe opens it too
            unusable, skipped = True, "not checked: the database cannot be opened (see database)"
    if settings.LABBOT_BLOB_URL:
        report(*_guarded("blob storage", lambda: asyncio.run(_probe_blobs(settings))))
    if settings.LABBOT_EXECUTOR == "nats":
        report(*_guarded("workers", lambda: asyncio.run(_probe_workers(settings))))
    elif unusable:
        report(Check("sandbox", "skip", skipped))
    else:
        report(*_guarded("sandbox", lambda: _probe_sandbox(ctx, settings)))
    if settings.LABBOT_EXECUTOR != "nats":
        report(*_guarded("sandbox uids", lambda: sandbox_uid_check(settings)))
        report(*_guarded("memory sharing", lambda: memory_sharing_check(settings)))
    report(*_guarded("core dumps", core_pattern_check))
    report(*_guarded("model", lambda: asyncio.run(model_checks(settings))))
    token = settings.DISCORD_TOKEN.get_secret_value() if settings.DISCORD_TOKEN else None
    report(*_guarded("discord", lambda: asyncio.run(discord_checks(token))))


@cli.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, json_: bool) -> None:
    """Check the settings, what `labbot run` starts, storage, the sandbox, the model and
    Discord, and say what is wrong and how to fix it (every check prints its line)."""
    checks: list[Check] = []

    def report(*lines: Check) -> None:
        for line in lines:
            # Any URL's credentials in a detail (a setting, an error naming an endpoint) are
            # masked; an invite URL's public parameters are kept, to be opened.
            line = Check(line.name, line.status, mask_credentials(line.detail))
            checks.append(line)
            if not json_:  # a detail of several lines: its first, then the rest indented
                first, *rest = line.detail.split("\n")
                echo(f"{_LABELS[line.status]} {line.name}: {first}")
                for more in rest:
                    echo(f"       {more}")

    def check(name: str, ok: bool, detail: str) -> None:
        report(Check(name, "ok" if ok else "fail", detail))

    try:
        settings: Settings = ctx.obj["settings"]()
        values = settings.model_dump()
        shown = [f"{k}={_masked(k, v)}" for k, v in values.items()]
        check("settings", True, "\n".join([f"{len(values)} settings (secrets masked):", *shown]))
    except LabbotError as exc:
        check("settings", False, str(exc))
        settings = None  # type: ignore[assignment]
    typos = _guarded("unknown settings", lambda: _unknown_settings() or [])
    report(*typos)
    if settings is not None:
        _doctor_checks(ctx, settings, report)
    if json_:
        emit_json([c.to_json() for c in checks])
    if not all(c.to_json()["ok"] for c in checks):
        ctx.exit(1)
