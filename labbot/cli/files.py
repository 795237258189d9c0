"""`labbot files ...`: manage users' stored files."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from labbot.cli.group import (
    echo,
    emit_json,
    error_json,
    files_group,
    json_option,
    plural,
    run_with_store,
    user_option,
)
from labbot.cli.saving import save_file
from labbot.errors import FileError, LabbotError
from labbot.files import FileStore, SaveResult, kind_by_name
from labbot.files.blobs import open_local_file
from labbot.files.names import clean_filename
from labbot.files.receipt import format_expiry, format_size, render_upload_confirmation


def _add_error(path: Path, exc: BaseException) -> dict[str, Any]:
    """The JSON error of one file that was not added, its message naming the file."""
    data = error_json(exc)
    data["error"]["message"] = f"{path.name}: {data['error']['message']}"
    return data


async def _save_local(
    store: FileStore, user: str, path: Path, *, follow_symlinks: bool = False
) -> tuple[SaveResult, Path | None]:
    """Store one local file; a path that is no readable file is a FileError naming it. With
    the real path of the file stored when ``path`` was a link that was followed."""
    if not await asyncio.to_thread(os.path.lexists, path):
        raise FileError("No such file.", hint="Check the path.")
    if await asyncio.to_thread(path.is_dir):
        raise FileError("This is a folder, not a file.", hint="Add the files inside it.")
    try:
        local = await open_local_file(path, follow_symlinks=follow_symlinks)
        result = await store.save(user, path.name, local.chunks())
    except OSError as exc:
        raise FileError(f"The file cannot be read ({exc.strerror or exc}).") from exc
    return result, local.real_path if local.linked else None


@files_group.command(name="add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_option
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Store what a symbolic link points to (refused otherwise); the real path is shown.",
)
@json_option
@click.pass_context
def files_add(
    ctx: click.Context, paths: tuple[Path, ...], user: str, follow_symlinks: bool, json_: bool
) -> None:
    """Store local files for a user and print the upload confirmation (each file is tried;
    --json prints one entry per file: its record, or its error). A symbolic link is refused
    unless --follow-symlinks is given.

    \b
    Example:
      labbot files add sales.csv notes.pdf --user 1234
    """
    from labbot.frontends.terminal_view import from_chat_markup  # rich's Markdown: slow to import

    async def add(store: FileStore) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for path in paths:
            try:
                result, real = await _save_local(store, user, path, follow_symlinks=follow_symlinks)
            except LabbotError as exc:
                entries.append(_add_error(path, exc))
                if not json_:
                    echo(f"Error: {path.name}: {exc}", err=True)
                continue
            entry = result.record.to_json() | {"evicted": [r.to_json() for r in result.evicted]}
            entries.append(entry | ({"real_path": str(real)} if real else {}))
            if not json_:
                if real is not None:
                    echo(f"{path} is a symbolic link: stored the file it points to, {real}")
                receipt = render_upload_confirmation(result, now=datetime.now(UTC))
                echo(from_chat_markup(receipt).plain)  # the words, not Discord's **markup**
                echo()
        return entries

    entries = run_with_store(ctx, add)
    if json_:
        emit_json(entries)
    if any("error" in e for e in entries):
        ctx.exit(1)


@files_group.command(name="list")
@user_option
@json_option
@click.pass_context
def files_list(ctx: click.Context, user: str, json_: bool) -> None:
    """List a user's files, newest first."""
    records = run_with_store(ctx, lambda store: store.list(user))
    if json_:
        emit_json([r.to_json() for r in records])
        return
    if not records:
        echo("No files.")
        return
    now = datetime.now(UTC)
    for r in records:
        kind = kind_by_name(r.kind)
        echo(
            f"{r.id}  {kind.emoji} {clean_filename(r.name)}  {kind.label}  {format_size(r.size)}"
            f"  expires {format_expiry(r.expires_at, now)}"
        )


@files_group.command(name="show")
@click.argument("file_id")
@user_option
@json_option
@click.pass_context
def files_show(ctx: click.Context, file_id: str, user: str, json_: bool) -> None:
    """Show one file's details."""
    r = run_with_store(ctx, lambda store: store.get(user, file_id))
    if json_:
        emit_json(r.to_json())
        return
    kind = kind_by_name(r.kind)
    for label, value in [
        ("id", r.id),
        ("name", clean_filename(r.name)),
        ("type", f"{kind.emoji} {kind.label}"),
        ("size", f"{format_size(r.size)} ({r.size} bytes)"),
        ("sha256", r.sha256),
        ("source", r.source),
        ("created", r.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("expires", format_expiry(r.expires_at, datetime.now(UTC))),
    ]:
        echo(f"{label:8} {value}")


@files_group.command(name="get")
@click.argument("file_id")
@user_option
@click.option(
    "--output",
    "-o",
    default=None,
    help="A folder (default: the current one; the file keeps its name, numbered if taken),"
    " a file path, or '-' for stdout.",
)
@click.option("--force", is_flag=True, help="Overwrite the -o file if it exists.")
@json_option
@click.pass_context
def files_get(
    ctx: click.Context, file_id: str, user: str, output: str | None, force: bool, json_: bool
) -> None:
    """Write a file's contents out; never over an existing file unless --force."""
    if output == "-" and json_:
        raise click.UsageError("--json prints the record: give -o a folder or a path, not '-'")

    async def get(store: FileStore) -> dict[str, Any] | None:
        record = await store.get(user, file_id)
        if output == "-":
            async for chunk in store.read(user, file_id):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return None
        target = Path(output or ".")
        folder = output is None or output.endswith(("/", os.sep))
        folder = folder or await asyncio.to_thread(target.is_dir)
        path = await save_file(store, user, record, target, folder=folder, overwrite=force)
        return record.to_json() | {"path": str(path)}

    written = run_with_store(ctx, get)
    if written is None:
        return
    if json_:
        emit_json(written)
    else:
        echo(written["path"])


@files_group.command(name="rm")
@click.argument("file_ids", nargs=-1, required=True)
@user_option
@json_option
@click.pass_context
def files_rm(ctx: click.Context, file_ids: tuple[str, ...], user: str, json_: bool) -> None:
    """Delete files (each is tried; --json prints one entry per id: its record, or its error)."""

    async def rm(store: FileStore) -> list[dict[str, Any]]:
        entries = []
        for file_id in file_ids:
            try:
                record = (await store.delete(user, file_id)).to_json()
            except LabbotError as exc:
                entries.append(error_json(exc))
                if not json_:
                    echo(f"Error: {exc}", err=True)
                continue
            entries.append(record)
            if not json_:
                echo(f"Deleted {record['name']} ({record['id']}).")
        return entries

    entries = run_with_store(ctx, rm)
    if json_:
        emit_json(entries)
    if any("error" in e for e in entries):
        ctx.exit(1)


@files_group.command(name="sweep")
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

    summary = run_with_store(ctx, sweep)
    if json_:
        emit_json(summary)
    else:
        stray = summary["orphan_blobs"] + summary["partial_files"]
        echo(
            f"Removed {plural(summary['expired_files'], 'expired file')}"
            f" ({format_size(summary['expired_bytes'])}); repaired"
            f" {plural(stray, 'stray blob')} and"
            f" {plural(summary['missing_blobs'], 'record')} without contents."
        )
