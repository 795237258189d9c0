"""`labbot export`: a conversation as a Jupyter notebook, or a zip with the files it loads."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import click

from labbot.cli.group import cli, echo, emit_json, json_option, unusable_data_dir, user_option
from labbot.config import Settings


@cli.command(name="export")
@user_option
@click.option("--conversation", "-c", required=True, help="The conversation's name (its id).")
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write (default: the conversation's name, .ipynb or .zip); '-' for stdout.",
)
@click.option("--bundle", is_flag=True, help="Write a zip: the notebook and the files it loads.")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@json_option
@click.pass_context
def export(
    ctx: click.Context,
    user: str,
    conversation: str,
    output: Path | None,
    bundle: bool,
    force: bool,
    json_: bool,
) -> None:
    """Export a conversation as a Jupyter notebook: questions and answers as Markdown, each
    execution as a code cell with its outputs, and a first cell defining load_file and FILES
    over a folder "files" beside the notebook (--bundle puts both in one zip).

    \b
    Examples:
      labbot export --user 1234 --conversation thread:987 -o analysis.ipynb
      labbot export --user 1234 --conversation cli --bundle    # cli.zip
    """
    from labbot.app import open_records
    from labbot.export import export_conversation, write_bundle

    settings: Settings = ctx.obj["settings"]()
    if output is not None and str(output) == "-" and bundle:
        raise click.UsageError("--bundle writes a zip: give -o a file name, not '-'")
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in conversation).strip(".")
    target = output or Path(f"{stem or 'conversation'}{'.zip' if bundle else '.ipynb'}")
    to_stdout = str(target) == "-"
    if not to_stdout and target.exists() and not force:
        raise click.UsageError(f"{target} exists; use --force to overwrite it")

    async def main() -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                store, conversations = await stack.enter_async_context(open_records(settings))
            except OSError as exc:  # the data dir is a file, read-only, full, ...
                raise unusable_data_dir(settings, exc) from exc
            done = await export_conversation(conversations, store, user, conversation)
            size: int | None = None
            if to_stdout:
                click.echo(done.text(), nl=False)
            elif bundle:
                name = target.with_suffix(".ipynb").name
                size = await write_bundle(done, store, user, target, name)
            else:
                text = done.text().encode()
                await asyncio.to_thread(target.write_bytes, text)
                size = len(text)
            return {
                "path": None if to_stdout else str(target),
                "size": size,
                "cells": len(done.notebook.cells),
                "files": [f.path for f in done.files],
                "missing": list(done.missing),
            }

    summary = asyncio.run(main())
    if to_stdout:
        return
    if json_:
        emit_json(summary)
        return
    files = f", {len(summary['files'])} files" if bundle else ""
    echo(f"{summary['path']}: {summary['cells']} cells{files}.")
    if summary["missing"]:
        echo(f"Not exported (no longer stored): {', '.join(summary['missing'])}.", err=True)
