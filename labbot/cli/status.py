"""`labbot status`: what the running bot holds now (its sessions, warm pool, waiting executions
and workers), read from the snapshot the bot writes into the data dir every few seconds."""

from __future__ import annotations

from typing import Any

import click

from labbot.cli.group import cli, echo, emit_json, json_option
from labbot.config import Settings
from labbot.errors import LabbotError


class NotRunning(LabbotError):
    """No bot writes its status into this data dir."""


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 1048576:.0f} MiB"


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@cli.command(name="status")
@json_option
@click.pass_context
def status(ctx: click.Context, json_: bool) -> None:
    """What the running bot holds: live sessions (user, conversation, age, idle time, memory,
    CPU), the warm pool, executions waiting for a slot, and workers when scaled out.

    The bot writes this every 5 seconds into status.json in its data dir; run this command
    with the bot's LABBOT_DATA_DIR.
    """
    from labbot.frontends.status import STALE_AFTER, read_status, status_path

    settings: Settings = ctx.obj["settings"]()
    path = status_path(settings.LABBOT_DATA_DIR)
    data = read_status(path)
    if data is None:
        raise NotRunning(
            f"No running bot writes its status in {settings.LABBOT_DATA_DIR}.",
            hint="Start it with `labbot bot`, or set LABBOT_DATA_DIR to the bot's data dir.",
        )
    data["stale"] = data["age_seconds"] > STALE_AFTER
    if json_:
        emit_json(data)
        return
    _print(data)


def _print(data: dict[str, Any]) -> None:
    when = f"{data['age_seconds']:.0f} s ago"
    if data["stale"]:
        when += " (stale: the bot may have stopped)"
    echo(f"Bot pid {data['pid']} on {data['host']} ({data['executor']} executor), status {when}.")
    if "kernels" in data:
        echo(
            f"Sessions: {len(data['sessions'])} of {data['max_sessions']} · warm pool:"
            f" {data['warm_pool']} · kernels: {data['kernels']} · executions waiting for a"
            f" slot: {data['waiting_executions']}"
        )
    if data["sessions"]:
        echo(f"{'user':<21}{'conversation':<26}{'age':>8}{'idle':>8}{'memory':>10}{'CPU s':>8}")
    for s in data["sessions"]:
        cpu = "?" if s["cpu_seconds"] is None else s["cpu_seconds"]
        echo(
            f"{s['user'][:20]:<21}{s['conversation'][:25]:<26}{_seconds(s['age_seconds']):>8}"
            f"{'running' if s['running'] else _seconds(s['idle_seconds']):>8}"
            f"{_mib(s['memory_bytes']):>10}{cpu:>8}"
        )
    for w in data.get("workers", []):
        state = "draining" if w["draining"] else f"heard {w['seconds_since_heard']} s ago"
        echo(
            f"worker {w['host']}: {w['sessions']} sessions, {w['free']} of {w['slots']} slots"
            f" free, {w['warm']} warm, {state}"
        )
    if "files" in data:
        echo(f"File store: {data['files']['files']} files, {_mib(data['files']['bytes'])}")
