"""`labbot usage`: a report per user, guild, model or day, with totals, as a table, JSON, or
CSV a spreadsheet reads as it is. The ledger is filled at fixed dates (never today's)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from labbot.chat.usage import ExecutionRecord, SqliteUsageLedger, UsageRecord
from labbot.cli import cli
from labbot.cli.usage import parse_since
from labbot.sqlite import SqliteDatabase

DAY1 = datetime(2031, 3, 1, 10, tzinfo=UTC)
DAY2 = datetime(2031, 3, 2, 23, 30, tzinfo=UTC)


def fill(data: Path) -> None:
    """Three requests (one unpriced, one by another user in a guild) and two executions."""

    def entry(user: str, model: str, cost: str | None, guild: str | None) -> UsageRecord:
        price = None if cost is None else Decimal(cost)
        return UsageRecord(user, "c", model, 1000, 0, 100, price, False, 5.0, guild)

    async def work() -> None:
        db = SqliteDatabase(data / "labbot.sqlite3")
        ledger = SqliteUsageLedger(db)
        await ledger.start()
        await ledger.record(entry("42", "gpt-4o-mini", "0.00021", "g1"), at=DAY1)
        await ledger.record(entry("42", "llama-local", None, None), at=DAY2)
        await ledger.record(entry("7", "=HYPERLINK(1)", "0.0000001", "g1"), at=DAY2)
        await ledger.record_execution(ExecutionRecord("42", "c", "ok", 3.0, "g1"), at=DAY1)
        await ledger.record_execution(ExecutionRecord("42", "c", "timeout", 9.0, "g1"), at=DAY2)
        await db.close()

    data.mkdir()
    asyncio.run(work())


def run(data: Path, *args: str) -> str:
    env = {"LABBOT_DATA_DIR": str(data), "TIMEZONE": "Europe/Paris"}
    result = CliRunner().invoke(cli, ["usage", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_csv_by_day_opens_in_a_spreadsheet(tmp_path: Path) -> None:
    """A header, one row per day (ISO dates, in TIMEZONE: 23:30 UTC is the next day in Paris),
    plain numbers, and the totals last."""
    fill(tmp_path / "d")
    out = run(tmp_path / "d", "--since", "2031-03-01", "--by", "day", "--csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows == [
        [
            "day",
            "requests",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "unpriced_requests",
            "executions",
        ],
        ["2031-03-01", "1", "1000", "100", "0.00021", "0", "1"],
        ["2031-03-03", "2", "2000", "200", "0.0000001", "1", "1"],
        ["total", "3", "3000", "300", "0.0002101", "1", "2"],
    ]


def test_by_model_json_and_no_formula_in_csv(tmp_path: Path) -> None:
    """--json: rows and totals with the same fields; a model name starting with "=" is not
    a formula in the CSV."""
    fill(tmp_path / "d")
    data = json.loads(run(tmp_path / "d", "--since", "2031-02-20", "--by", "model", "--json"))
    assert [r["model"] for r in data["rows"]] == ["=HYPERLINK(1)", "gpt-4o-mini", "llama-local"]
    assert data["total"]["requests"] == 3 and data["total"]["executions"] == 2
    assert data["since"] == "2031-02-20T00:00:00+00:00"
    out = run(tmp_path / "d", "--since", "2031-02-20", "--by", "model", "--csv")
    assert "\n'=HYPERLINK(1)," in out
    table = run(tmp_path / "d", "--since", "2031-02-20", "--by", "guild")
    assert "g1" in table and "(none)" in table and "total" in table


def test_since_forms() -> None:
    """Durations count back from now; dates are UTC unless they say; anything else is
    refused with the forms."""
    now = datetime(2031, 3, 14, 12, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2031, 3, 7, 12, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2031, 3, 14, 0, tzinfo=UTC)
    assert parse_since("2w", now) == datetime(2031, 2, 28, 12, tzinfo=UTC)
    assert parse_since("2031-03-01", now) == datetime(2031, 3, 1, tzinfo=UTC)
    with pytest.raises(click.BadParameter, match="7d, 12h, 2w"):
        parse_since("last tuesday", now)
