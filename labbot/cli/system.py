"""`labbot exec` and `labbot doctor`: run code in a user's sandbox, check the installation."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from labbot.app import database_name
from labbot.cli import cli, echo, emit_json, json_option, run_with_store, user_option
from labbot.config import Settings
from labbot.errors import LabbotError
from labbot.files import FileStore
from labbot.files.receipt import format_size
from labbot.frontends.escapes import PrintableStream
from labbot.logs import mask_urls

_SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_URI")


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
@json_option
@click.pass_context
def exec_(
    ctx: click.Context, code: str | None, user: str, session: str, code_file: Any, json_: bool
) -> None:
    """Run Python in the user's sandbox, with their files, and store what it writes.

    \b
    Examples:
      labbot exec --user 1234 "df = load_file('sales.csv'); df.describe()"
      labbot exec --user 1234 -f analysis.py --json
    """
    from labbot.app import create_executor

    if (code is None) == (code_file is None):
        raise click.UsageError("give the code as an argument or with -f FILE (one of them)")
    source = code if code is not None else code_file.read()
    settings: Settings = ctx.obj["settings"]().model_copy(update={"SANDBOX_WARM_POOL": 0})
    streams = {"stdout": PrintableStream(), "stderr": PrintableStream()}

    async def live(name: str, text: str) -> None:
        if not json_:
            click.echo(streams[name].feed(text), nl=False, err=name == "stderr")

    async def run(store: FileStore) -> Any:
        interpreter = create_executor(settings, store)
        await interpreter.start()
        try:
            return await interpreter.run(user, session, source, on_output=live)
        finally:
            await interpreter.close()

    result = run_with_store(ctx, run)
    if json_:
        emit_json(result.to_json())
    else:
        for name, stream in streams.items():
            click.echo(stream.flush(), nl=False, err=name == "stderr")
        if result.value is not None:
            echo(result.value)
        if result.error is not None:
            error = result.error
            echo(error.traceback or f"{error.name}: {error.message}", err=True)
        for note in result.notes:
            echo(f"note: {note}", err=True)
        for f in result.files:
            echo(f"file: {f.name} ({f.id}, {format_size(f.size)})")
        for s in result.skipped_files:
            echo(f"not kept: {s.name}: {s.reason}", err=True)
    if result.status != "ok":
        ctx.exit(1)


def _probe_sandbox(ctx: click.Context, settings: Settings) -> str:
    """Start a real sandboxed interpreter and run one line in it."""
    from labbot.sandbox import CodeInterpreter

    quiet = settings.model_copy(update={"SANDBOX_WARM_POOL": 0})

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


@cli.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, json_: bool) -> None:
    """Check the settings and storage, and say what is wrong and how to fix it."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        # Any URL in a detail (a setting, an error naming an endpoint) is masked.
        checks.append({"check": name, "ok": ok, "detail": mask_urls(detail)})

    try:
        settings: Settings = ctx.obj["settings"]()
        check(
            "settings",
            True,
            ", ".join(f"{k}={_masked(k, v)}" for k, v in settings.model_dump().items()),
        )
    except LabbotError as exc:
        check("settings", False, str(exc))
        settings = None  # type: ignore[assignment]
    if settings is not None:
        data_dir = settings.LABBOT_DATA_DIR
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            writable = os.access(data_dir, os.W_OK)
            free = shutil.disk_usage(data_dir).free
            check(
                "data dir",
                writable,
                f"{data_dir} ({format_size(free)} free)"
                + ("" if writable else ": not writable; fix its owner or LABBOT_DATA_DIR"),
            )
        except OSError as exc:
            check("data dir", False, f"{data_dir}: {exc.strerror}; set LABBOT_DATA_DIR")
        try:
            ids = run_with_store(ctx, lambda store: store.meta.file_ids())
            check("database", True, f"{database_name(settings)} ({len(ids)} files)")
        except LabbotError as exc:
            check("database", False, str(exc))
        if settings.LABBOT_BLOB_URL:
            try:
                check("blob storage", True, asyncio.run(_probe_blobs(settings)))
            except (LabbotError, OSError) as exc:
                check("blob storage", False, f"{mask_urls(settings.LABBOT_BLOB_URL)}: {exc}")
        if settings.LABBOT_EXECUTOR == "nats":
            try:
                check("workers", True, asyncio.run(_probe_workers(settings)))
            except LabbotError as exc:
                check("workers", False, str(exc))
        else:
            try:
                check("sandbox", True, _probe_sandbox(ctx, settings))
            except LabbotError as exc:
                check("sandbox", False, str(exc))
        from labbot.frontends.discord.setup_check import checks as discord_checks

        token = settings.DISCORD_TOKEN.get_secret_value() if settings.DISCORD_TOKEN else None
        for name, ok, detail in discord_checks(token):
            check(name, ok, detail)
    if json_:
        emit_json(checks)
    else:
        for c in checks:
            click.echo(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
    if not all(c["ok"] for c in checks):
        ctx.exit(1)
