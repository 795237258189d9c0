"""What a budget check costs per model request: reserve + settle against the SQLite ledger, with
a day's and a month's history already in the windows (one user; one busy guild).

    .venv/bin/python bench/budgets.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from labbot.chat.usage import Hold, SqliteUsageLedger, UsageRecord, Window
from labbot.sqlite import SqliteDatabase

NOW = datetime(2031, 3, 28, 12, tzinfo=UTC)
MONTH = NOW.replace(day=1, hour=0)


def entry(user: str, guild: str) -> UsageRecord:
    return UsageRecord(
        user, "c", "gpt-4o-mini", 1500, 0, 300, Decimal("0.000405"), False, 900.0, guild
    )


async def case(rows: int, rounds: int = 200) -> tuple[float, float]:
    """p50 and p90 (ms) of reserve + settle with ``rows`` requests of the guild this month."""
    with tempfile.TemporaryDirectory() as folder:
        db = SqliteDatabase(Path(folder) / "b.sqlite3")
        ledger = SqliteUsageLedger(db)
        await ledger.start()
        step = (NOW - MONTH) / max(rows, 1)

        def fill(conn) -> None:  # noqa: ANN001 - sqlite3.Connection
            from labbot.chat.usage import _insert

            for n in range(rows):
                _insert(conn, entry(f"u{n % 50}", "g"), MONTH + step * n)

        await db.run(fill, write=True)
        windows = [
            Window("user", "u1", NOW.replace(hour=0), "usd", Decimal(100)),
            Window("user", "u1", MONTH, "usd", Decimal(1000)),
            Window("guild", "g", MONTH, "usd", Decimal(10**6)),
        ]
        times = []
        for n in range(rounds):
            hold = Hold(f"h{n}", "u1", "g", True, Decimal("0.0002"), Decimal("0.003"))
            start = time.perf_counter()
            await ledger.reserve(hold, windows, now=NOW)
            await ledger.settle(hold.id, entry("u1", "g"), windows, now=NOW + timedelta(seconds=1))
            times.append((time.perf_counter() - start) * 1000)
        await db.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


async def main() -> None:
    print("| guild requests this month | reserve + settle p50 | p90 |")
    print("|---|---|---|")
    for rows in (0, 10_000, 100_000):
        p50, p90 = await case(rows)
        print(f"| {rows:,} | {p50:.2f} ms | {p90:.2f} ms |")


asyncio.run(main())
