"""`labbot files ...`: manage users' stored files."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from labbot.cli import echo, emit_json, files_group, json_option, run_with_store, user_option
from labbot.errors import LabbotError
from labbot.files import FileStore, file_chunks, kind_by_name
from labbot.files.receipt import format_expiry, format_size, render_upload_confirmation


@files_group.command(name="add")
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
                echo(render_upload_confirmation(result, now=datetime.now(UTC)))
                echo()
        return rows, failures

    rows, failures = run_with_store(ctx, add)
    if json_:
        emit_json(rows)
    if failures:
        raise click.ClickException("; ".join(failures))


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
            f"{r.id}  {kind.emoji} {r.name}  {kind.label}  {format_size(r.size)}"
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
        ("name", r.name),
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
        echo(str(target), err=True)

    run_with_store(ctx, get)


@files_group.command(name="rm")
@click.argument("file_ids", nargs=-1, required=True)
@user_option
@json_option
@click.pass_context
def files_rm(ctx: click.Context, file_ids: tuple[str, ...], user: str, json_: bool) -> None:
    """Delete files."""

    async def rm(store: FileStore) -> list[dict[str, Any]]:
        return [(await store.delete(user, file_id)).to_json() for file_id in file_ids]

    removed = run_with_store(ctx, rm)
    if json_:
        emit_json(removed)
    else:
        for r in removed:
            echo(f"Deleted {r['name']} ({r['id']}).")


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
        echo(
            f"Removed {summary['expired_files']} expired files"
            f" ({format_size(summary['expired_bytes'])}); repaired"
            f" {summary['orphan_blobs'] + summary['partial_files']} stray blobs and"
            f" {summary['missing_blobs']} records without contents."
        )
