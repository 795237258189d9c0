"""The `labbot` command: file store management and health checks, scriptable with --json."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from labbot import __version__
from labbot.config import Settings, load_settings
from labbot.errors import LabbotError
from labbot.files import FileStore, create_file_store, file_chunks, kind_by_name
from labbot.files.receipt import format_expiry, format_size, render_upload_confirmation
from labbot.logs import configure_logging

log = logging.getLogger(__name__)
T = TypeVar("T")

_SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "URI")


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _run(ctx: click.Context, work: Callable[[FileStore], Coroutine[Any, Any, T]]) -> T:
    """Open the file store, run ``work`` on it, close it; LabbotError becomes one clean line."""
    settings: Settings = ctx.obj["settings"]()

    async def main() -> T:
        store = create_file_store(settings)
        await store.start()
        try:
            return await work(store)
        finally:
            await store.close()

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


@cli.group(cls=LabbotGroup)
def files() -> None:
    """Manage users' stored files."""


def user_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --user option every files command takes."""
    return click.option("--user", "-u", required=True, help="The user id (e.g. a Discord id).")(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --json flag: machine-readable output on stdout."""
    return click.option("--json", "json_", is_flag=True, help="Print JSON.")(fn)


@files.command(name="add")
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@user_option
@json_option
@click.pass_context
def files_add(ctx: click.Context, paths: tuple[Path, ...], user: str, json_: bool) -> None:
    """Store local files for a user and print the upload confirmation.

    \b
    Example:
      labbot files add sales.csv notes.pdf --user 1234
    """

    async def add(store: FileStore) -> tuple[list[dict[str, Any]], list[str]]:
        rows: list[dict[str, Any]] = []
        failures: list[str] = []
        for path in paths:
            try:
                result = await store.save(user, path.name, file_chunks(path))
            except LabbotError as exc:
                failures.append(f"{path.name}: {exc}")
                continue
            if json_:
                rows.append(
                    {
                        "file": result.record.to_json(),
                        "evicted": [r.to_json() for r in result.evicted],
                        "file_count": result.file_count,
                        "total_bytes": result.total_bytes,
                    }
                )
            else:
                click.echo(render_upload_confirmation(result, now=datetime.now(UTC)))
                click.echo()
        return rows, failures

    rows, failures = _run(ctx, add)
    if json_:
        _emit_json(rows)
    if failures:
        raise click.ClickException("; ".join(failures))


@files.command(name="list")
@user_option
@json_option
@click.pass_context
def files_list(ctx: click.Context, user: str, json_: bool) -> None:
    """List a user's files, newest first."""
    records = _run(ctx, lambda store: store.list(user))
    if json_:
        _emit_json([r.to_json() for r in records])
        return
    if not records:
        click.echo("No files.")
        return
    now = datetime.now(UTC)
    for r in records:
        kind = kind_by_name(r.kind)
        click.echo(
            f"{r.id}  {kind.emoji} {r.name}  {kind.label}  {format_size(r.size)}"
            f"  expires {format_expiry(r.expires_at, now)}"
        )


@files.command(name="show")
@click.argument("file_id")
@user_option
@json_option
@click.pass_context
def files_show(ctx: click.Context, file_id: str, user: str, json_: bool) -> None:
    """Show one file's details."""
    r = _run(ctx, lambda store: store.get(user, file_id))
    if json_:
        _emit_json(r.to_json())
        return
    kind = kind_by_name(r.kind)
    for label, value in [
        ("id", r.id),
        ("name", r.name),
        ("type", f"{kind.emoji} {kind.label}"),
        ("size", f"{format_size(r.size)} ({r.size} bytes)"),
        ("sha256", r.sha256),
        ("source", r.source),
        ("created", r.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("expires", format_expiry(r.expires_at, datetime.now(UTC))),
    ]:
        click.echo(f"{label:8} {value}")


@files.command(name="get")
@click.argument("file_id")
@user_option
@click.option("--output", "-o", required=True, help="Where to write the file ('-' = stdout).")
@click.pass_context
def files_get(ctx: click.Context, file_id: str, user: str, output: str) -> None:
    """Write a file's contents to a path or stdout."""

    async def get(store: FileStore) -> None:
        chunks = store.read(user, file_id)
        if output == "-":
            async for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        target = Path(output)
        if await asyncio.to_thread(target.is_dir):
            target = target / (await store.get(user, file_id)).name
        partial = target.with_name(f".{target.name}.part")
        try:
            with partial.open("wb") as handle:
                async for chunk in chunks:
                    await asyncio.to_thread(handle.write, chunk)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        click.echo(str(target), err=True)

    _run(ctx, get)


@files.command(name="rm")
@click.argument("file_ids", nargs=-1, required=True)
@user_option
@json_option
@click.pass_context
def files_rm(ctx: click.Context, file_ids: tuple[str, ...], user: str, json_: bool) -> None:
    """Delete files."""

    async def rm(store: FileStore) -> list[dict[str, Any]]:
        return [(await store.delete(user, file_id)).to_json() for file_id in file_ids]

    removed = _run(ctx, rm)
    if json_:
        _emit_json(removed)
    else:
        for r in removed:
            click.echo(f"Deleted {r['name']} ({r['id']}).")


@files.command(name="sweep")
@json_option
@click.pass_context
def files_sweep(ctx: click.Context, json_: bool) -> None:
    """Delete expired files and repair disk/database disagreements left by a crash."""

    async def sweep(store: FileStore) -> dict[str, int]:
        swept = await store.sweep()
        fixed = await store.reconcile()
        return {
            "expired_files": swept.files,
            "expired_bytes": swept.bytes,
            "orphan_blobs": fixed.orphan_blobs,
            "partial_files": fixed.partial_files,
            "missing_blobs": fixed.missing_blobs,
        }

    summary = _run(ctx, sweep)
    if json_:
        _emit_json(summary)
    else:
        click.echo(
            f"Removed {summary['expired_files']} expired files"
            f" ({format_size(summary['expired_bytes'])}); repaired"
            f" {summary['orphan_blobs'] + summary['partial_files']} stray blobs and"
            f" {summary['missing_blobs']} records without contents."
        )


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
    from labbot.sandbox import CodeInterpreter

    if (code is None) == (code_file is None):
        raise click.UsageError("give the code as an argument or with -f FILE (one of them)")
    source = code if code is not None else code_file.read()
    settings: Settings = ctx.obj["settings"]().model_copy(update={"SANDBOX_WARM_POOL": 0})

    async def live(name: str, text: str) -> None:
        if not json_:
            click.echo(text, nl=False, err=name == "stderr")

    async def run(store: FileStore) -> Any:
        interpreter = CodeInterpreter(settings, store)
        await interpreter.start()
        try:
            return await interpreter.run(user, session, source, on_output=live)
        finally:
            await interpreter.close()

    result = _run(ctx, run)
    if json_:
        _emit_json(result.to_json())
    else:
        if result.value is not None:
            click.echo(result.value)
        if result.error:
            click.echo(
                result.error.get("traceback")
                or f"{result.error['name']}: {result.error['message']}",
                err=True,
            )
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        for f in result.files:
            click.echo(f"file: {f['name']} ({f['id']}, {format_size(f['size'])})")
        for f in result.skipped_files:
            click.echo(f"not kept: {f['name']}: {f['reason']}", err=True)
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
        return f"{interpreter.jail.describe()}; ran code in {result.duration * 1000:.0f} ms"

    return _run(ctx, probe)


def _masked(name: str, value: Any) -> Any:
    if value and any(word in name for word in _SECRET_WORDS):
        return "***"
    return str(value) if isinstance(value, Path) else value


@cli.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, json_: bool) -> None:
    """Check the settings and storage, and say what is wrong and how to fix it."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

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
            ids = _run(ctx, lambda store: store.meta.file_ids())
            check("database", True, f"{settings.database_path} ({len(ids)} files)")
        except LabbotError as exc:
            check("database", False, str(exc))
        try:
            check("sandbox", True, _probe_sandbox(ctx, settings))
        except LabbotError as exc:
            check("sandbox", False, str(exc))
    if json_:
        _emit_json(checks)
    else:
        for c in checks:
            click.echo(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
    if not all(c["ok"] for c in checks):
        ctx.exit(1)


def main() -> None:
    """Entry point of the `labbot` script."""
    cli()
