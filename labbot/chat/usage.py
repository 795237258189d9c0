"""The usage ledger: one row per model request, with tokens and cost, per user and model."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from labbot.sqlite import SqliteDatabase, to_us


def _m201_usage(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE usage (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            conversation TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_usd TEXT,
            estimated INTEGER NOT NULL,
            duration_ms REAL NOT NULL,
            created_us INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX usage_by_user ON usage (user, model)")


MIGRATIONS = [_m201_usage]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One model request."""

    user: str
    conversation: str
    model: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    estimated: bool
    duration_ms: float


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """A user's totals for one model."""

    model: str
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: Decimal
    unpriced_requests: int


class UsageLedger(Protocol):
    """Where usage is recorded."""

    async def start(self) -> None:
        """Create or migrate the schema."""

    async def record(self, entry: UsageRecord) -> None:
        """Add one request."""

    async def summary(self, user: str) -> list[ModelUsage]:
        """The user's totals per model, most expensive first."""


class SqliteUsageLedger:
    """UsageLedger on the shared SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def start(self) -> None:
        """Create or migrate the schema."""
        await self.db.migrate(MIGRATIONS)

    async def record(self, entry: UsageRecord) -> None:
        """Add one request."""
        row = (
            entry.user,
            entry.conversation,
            entry.model,
            entry.input_tokens,
            entry.cached_tokens,
            entry.output_tokens,
            None if entry.cost_usd is None else str(entry.cost_usd),
            int(entry.estimated),
            entry.duration_ms,
            to_us(datetime.now(UTC)),
        )
        await self.db.run(
            lambda db: db.execute(
                "INSERT INTO usage (user, conversation, model, input_tokens, cached_tokens,"
                " output_tokens, cost_usd, estimated, duration_ms, created_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            ),
            write=True,
        )

    async def summary(self, user: str) -> list[ModelUsage]:
        """The user's totals per model, most expensive first."""
        rows = await self.db.run(
            lambda db: db.execute(
                "SELECT model, COUNT(*), SUM(input_tokens), SUM(cached_tokens),"
                " SUM(output_tokens), SUM(cost_usd IS NULL) FROM usage WHERE user = ?"
                " GROUP BY model",
                (user,),
            ).fetchall(),
            write=False,
        )
        costs = await self.db.run(
            lambda db: db.execute(
                "SELECT model, cost_usd FROM usage WHERE user = ? AND cost_usd IS NOT NULL",
                (user,),
            ).fetchall(),
            write=False,
        )
        totals: dict[str, Decimal] = {}
        for model, cost in costs:  # summed as Decimal: SQLite would round through floats
            totals[model] = totals.get(model, Decimal(0)) + Decimal(cost)
        result = [
            ModelUsage(model, n, i or 0, c or 0, o or 0, totals.get(model, Decimal(0)), u or 0)
            for model, n, i, c, o, u in rows
        ]
        return sorted(result, key=lambda m: (-m.cost_usd, m.model))
