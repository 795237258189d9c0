"""`labbot usage`: tokens, requests, cost and executions per user, guild, model or day, with
totals; as a table, JSON, or CSV a spreadsheet opens as it is."""

from __future__ import annotations

import asyncio
import csv
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import click

from labbot.cli.group import cli, echo, emit_json, json_option, unusable_data_dir
from labbot.config import Settings

if TYPE_CHECKING:
    from labbot.chat.reports import Grouping, ReportRow

_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``2w`` before ``now``, or an ISO date or time (UTC unless it says).

    :raises click.BadParameter: anything else, with the forms it takes.
    """
    found = re.fullmatch(r"\s*(\d{1,5})\s*([hdw])\s*", text.lower())
    if found:
        return now - timedelta(**{_UNITS[found[2]]: int(found[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (7d, 12h, 2w) nor a date (2026-12-01)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plain(amount: Decimal) -> str:
    """A cost as a plain number (no exponent, no currency sign): what a spreadsheet reads."""
    return format(amount, "f")


def _cell(text: str) -> str:
    """A key as a spreadsheet shows it, never as a formula (a model name may start with =)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _row(by: str, row: ReportRow, *, spreadsheet: bool = False) -> dict[str, Any]:
    return {
        by: _cell(row.key) if spreadsheet else row.key,
        "requests": row.requests,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": _plain(row.cost_usd),
        "unpriced_requests": row.unpriced_requests,
        "executions": row.executions,
    }


@cli.command(name="usage")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="How far back: 12h, 7d, 2w, or a date (2026-12-01).",
)
@click.option(
    "--by",
    type=click.Choice(["user", "guild", "model", "day"]),
    default="user",
    show_default=True,
    help="One line per user, Discord server, model or day (days in TIMEZONE).",
)
@click.option("--csv", "csv_", is_flag=True, help="Print CSV with a header (for spreadsheets).")
@json_option
@click.pass_context
def usage(ctx: click.Context, since: str, by: str, csv_: bool, json_: bool) -> None:
    """Tokens, requests, cost and executions, with totals.

    \b
    Examples:
      labbot usage                          # the last 7 days, per user
      labbot usage --since 30d --by model
      labbot usage --since 2026-12-01 --by day --csv > december.csv
    """
    from contextlib import AsyncExitStack

    from labbot.app import open_database
    from labbot.chat.reports import report, report_table

    if csv_ and json_:
        raise click.UsageError("Choose --csv or --json, not both.")
    settings: Settings = ctx.obj["settings"]()
    start = parse_since(since, datetime.now(UTC))
    grouping = cast("Grouping", by)

    async def load() -> tuple[list[ReportRow], ReportRow]:
        async with AsyncExitStack() as stack:
            try:
                _, _, ledger, _ = await open_database(settings, stack)
                await ledger.start()
            except OSError as exc:
                raise unusable_data_dir(settings, exc) from exc
            requests, executions = await ledger.requests(start), await ledger.executions(start)
        return report(requests, executions, by=grouping, timezone=settings.TIMEZONE)

    rows, total = asyncio.run(load())
    if json_:
        emit_json(
            {
                "since": start.isoformat(),
                "by": by,
                "rows": [_row(by, r) for r in rows],
                "total": _row(by, total),
            }
        )
    elif csv_:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(_row(by, total)), lineterminator="\n")
        writer.writeheader()
        for row in [*rows, total]:
            writer.writerow(_row(by, row, spreadsheet=True))
    else:
        echo(f"Usage since {start:%Y-%m-%d %H:%M} UTC, by {by}:")
        for line in report_table(rows, total, grouping):
            echo(line)
