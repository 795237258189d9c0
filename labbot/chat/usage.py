"""The usage ledger: one row per model request (tokens, cost, user, guild, model) and one per
execution, plus the holds that keep budgets exact when several requests of one user run at once.

A budget is checked by ``reserve``: in one transaction the ledger measures what each limit's
window has spent (settled rows and the holds of requests still in flight) and, when the request
fits, keeps a hold of its upper-bound cost. ``settle`` replaces the hold by the request's real
row in one transaction; ``release`` drops it (the request failed). A hold a crash left behind
stops counting after HOLD_SECONDS.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, Protocol

from labbot.sqlite import SqliteDatabase, from_us, to_us

HOLD_SECONDS = 900  # a hold older than this (its request crashed) no longer counts
NANO = Decimal("1e-9")
QUARTER_US = 15 * 60 * 1_000_000  # every time zone's midnight falls on a quarter hour


def nanos(cost: Decimal) -> int:
    """US dollars as integer nano-dollars (prices per million tokens are whole nano-dollars
    per token, so this is exact in practice)."""
    return int((cost / NANO).to_integral_value())


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


def _m202_usage_guild_holds_executions(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE usage ADD COLUMN guild TEXT")  # NULL: a DM, the CLI, older rows
    # What each user and guild spent per quarter hour (nano-dollars of priced requests, tokens
    # of unpriced ones): a budget check sums a month of these, never a month of requests.
    db.execute(
        """CREATE TABLE usage_spent (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            quarter INTEGER NOT NULL,
            nanos INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            PRIMARY KEY (scope, key, quarter)
        ) WITHOUT ROWID"""
    )
    rows = db.execute(
        "SELECT user, input_tokens, output_tokens, cost_usd, created_us FROM usage"
    ).fetchall()
    for user, i, o, cost, created in rows:
        _add_spent(db, "user", user, created, None if cost is None else Decimal(cost), i + o)
    db.execute("CREATE INDEX usage_by_user_time ON usage (user, created_us)")
    db.execute("CREATE INDEX usage_by_guild_time ON usage (guild, created_us)")
    db.execute("CREATE INDEX usage_by_time ON usage (created_us)")
    db.execute(
        """CREATE TABLE usage_holds (
            id TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            guild TEXT,
            priced INTEGER NOT NULL,
            amount TEXT NOT NULL,
            created_us INTEGER NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE executions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            guild TEXT,
            conversation TEXT NOT NULL,
            status TEXT NOT NULL,
            duration_ms REAL NOT NULL,
            created_us INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX executions_by_time ON executions (created_us)")


MIGRATIONS = [_m201_usage, _m202_usage_guild_holds_executions]


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
    guild: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One execution of the model's code."""

    user: str
    conversation: str
    status: str
    duration_ms: float
    guild: str | None = None


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


@dataclass(frozen=True, slots=True)
class Window:
    """One limit: what the user or guild ``key`` spent since ``since``, in US dollars (priced
    requests) or in tokens (requests to models without a known price)."""

    scope: Literal["user", "guild"]
    key: str
    since: datetime
    unit: Literal["usd", "tokens"]
    limit: Decimal


@dataclass(frozen=True, slots=True)
class Hold:
    """A request in flight: ``admit`` (its input, in the windows' unit) must fit for it to go;
    ``amount`` (its input and its longest possible output) counts as spent until settled."""

    id: str
    user: str
    guild: str | None
    priced: bool
    admit: Decimal
    amount: Decimal

    def counts_in(self, window: Window) -> bool:
        """True when this request spends in ``window`` (its scope, its unit)."""
        if (window.unit == "usd") != self.priced:
            return False
        return window.key == (self.user if window.scope == "user" else self.guild)


@dataclass(frozen=True, slots=True)
class Spent:
    """What a window has spent: settled (``used``) and held by requests in flight."""

    window: Window
    used: Decimal
    held: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        """Settled and held together."""
        return self.used + self.held


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One request, as reports read it."""

    user: str
    guild: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    created: datetime


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One execution, as reports read it."""

    user: str
    guild: str | None
    status: str
    created: datetime


def fits(hold: Hold, spent: Sequence[Spent]) -> bool:
    """True when the request may go: in every window it counts in, what is spent and held
    plus its input stays within the limit (so at most one request ever crosses a limit)."""
    return all(s.total + hold.admit <= s.window.limit for s in spent if hold.counts_in(s.window))


def row_counts_in(window: Window, user: str, guild: str | None, cost: Decimal | None) -> bool:
    """True when a settled request of ``user`` in ``guild`` (``cost`` None: unpriced) counts."""
    if (window.unit == "usd") != (cost is not None):
        return False
    return window.key == (user if window.scope == "user" else guild)


class UsageLedger(Protocol):
    """Where usage is recorded."""

    async def start(self) -> None:
        """Create or migrate the schema."""

    async def record(self, entry: UsageRecord, *, at: datetime | None = None) -> None:
        """Add one request (made ``at``, now by default)."""

    async def summary(self, user: str) -> list[ModelUsage]:
        """The user's totals per model, most expensive first."""

    async def reserve(self, hold: Hold, windows: Sequence[Window], *, now: datetime) -> list[Spent]:
        """Measure each window and, in the same transaction, keep ``hold`` when it ``fits``;
        returns the windows as measured before the hold (the caller checks ``fits`` again)."""

    async def settle(
        self, hold_id: str, entry: UsageRecord, windows: Sequence[Window], *, now: datetime
    ) -> list[Spent]:
        """Replace the hold by the request's row; returns the windows measured after."""

    async def release(self, hold_id: str) -> None:
        """Drop a hold (its request failed)."""

    async def measure(self, windows: Sequence[Window], *, now: datetime) -> list[Spent]:
        """What each window has spent and holds now."""

    async def record_execution(self, entry: ExecutionRecord, *, at: datetime) -> None:
        """Add one execution."""

    async def requests(self, since: datetime) -> list[RequestRow]:
        """Every request made since ``since``, oldest first."""

    async def executions(self, since: datetime) -> list[ExecutionRow]:
        """Every execution since ``since``, oldest first."""


class SqliteUsageLedger:
    """UsageLedger on the shared SQLite database (a reservation is one write transaction:
    BEGIN IMMEDIATE serialises it against every other process's writes)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def start(self) -> None:
        """Create or migrate the schema."""
        await self.db.migrate(MIGRATIONS)

    async def record(self, entry: UsageRecord, *, at: datetime | None = None) -> None:
        """Add one request."""
        when = at or datetime.now(UTC)
        await self.db.run(lambda db: _insert(db, entry, when), write=True)

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

    async def reserve(self, hold: Hold, windows: Sequence[Window], *, now: datetime) -> list[Spent]:
        """Measure and keep the hold in one transaction."""

        def work(db: sqlite3.Connection) -> list[Spent]:
            db.execute("DELETE FROM usage_holds WHERE created_us < ?", (_stale(now),))
            spent = [_measure(db, w, now) for w in windows]
            if fits(hold, spent):
                db.execute(
                    "INSERT INTO usage_holds VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        hold.id,
                        hold.user,
                        hold.guild,
                        int(hold.priced),
                        str(hold.amount),
                        to_us(now),
                    ),
                )
            return spent

        return await self.db.run(work, write=True)

    async def settle(
        self, hold_id: str, entry: UsageRecord, windows: Sequence[Window], *, now: datetime
    ) -> list[Spent]:
        """Replace the hold by the request's row in one transaction."""

        def work(db: sqlite3.Connection) -> list[Spent]:
            db.execute("DELETE FROM usage_holds WHERE id = ?", (hold_id,))
            _insert(db, entry, now)
            return [_measure(db, w, now) for w in windows]

        return await self.db.run(work, write=True)

    async def release(self, hold_id: str) -> None:
        """Drop a hold."""
        await self.db.run(
            lambda db: db.execute("DELETE FROM usage_holds WHERE id = ?", (hold_id,)), write=True
        )

    async def measure(self, windows: Sequence[Window], *, now: datetime) -> list[Spent]:
        """What each window has spent and holds now."""
        return await self.db.run(lambda db: [_measure(db, w, now) for w in windows], write=False)

    async def record_execution(self, entry: ExecutionRecord, *, at: datetime) -> None:
        """Add one execution."""
        row = (entry.user, entry.guild, entry.conversation, entry.status, entry.duration_ms)
        await self.db.run(
            lambda db: db.execute(
                "INSERT INTO executions (user, guild, conversation, status, duration_ms,"
                " created_us) VALUES (?, ?, ?, ?, ?, ?)",
                (*row, to_us(at)),
            ),
            write=True,
        )

    async def requests(self, since: datetime) -> list[RequestRow]:
        """Every request made since ``since``, oldest first."""
        rows = await self.db.run(
            lambda db: db.execute(
                "SELECT user, guild, model, input_tokens, output_tokens, cost_usd, created_us"
                " FROM usage WHERE created_us >= ? ORDER BY created_us, seq",
                (to_us(since),),
            ).fetchall(),
            write=False,
        )
        return [
            RequestRow(u, g, m, i, o, None if c is None else Decimal(c), from_us(t))
            for u, g, m, i, o, c, t in rows
        ]

    async def executions(self, since: datetime) -> list[ExecutionRow]:
        """Every execution since ``since``, oldest first."""
        rows = await self.db.run(
            lambda db: db.execute(
                "SELECT user, guild, status, created_us FROM executions WHERE created_us >= ?"
                " ORDER BY created_us, seq",
                (to_us(since),),
            ).fetchall(),
            write=False,
        )
        return [ExecutionRow(u, g, s, from_us(t)) for u, g, s, t in rows]


def _stale(now: datetime) -> int:
    return to_us(now - timedelta(seconds=HOLD_SECONDS))


def _insert(db: sqlite3.Connection, entry: UsageRecord, at: datetime) -> None:
    db.execute(
        "INSERT INTO usage (user, conversation, model, input_tokens, cached_tokens,"
        " output_tokens, cost_usd, estimated, duration_ms, created_us, guild)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.user,
            entry.conversation,
            entry.model,
            entry.input_tokens,
            entry.cached_tokens,
            entry.output_tokens,
            None if entry.cost_usd is None else str(entry.cost_usd),
            int(entry.estimated),
            entry.duration_ms,
            to_us(at),
            entry.guild,
        ),
    )
    tokens = entry.input_tokens + entry.output_tokens
    _add_spent(db, "user", entry.user, to_us(at), entry.cost_usd, tokens)
    if entry.guild is not None:
        _add_spent(db, "guild", entry.guild, to_us(at), entry.cost_usd, tokens)


def _add_spent(
    db: sqlite3.Connection, scope: str, key: str, at_us: int, cost: Decimal | None, tokens: int
) -> None:
    """Count a request in its quarter hour's row of ``usage_spent``."""
    spent = (0, tokens) if cost is None else (nanos(cost), 0)
    db.execute(
        "INSERT INTO usage_spent VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key, quarter)"
        " DO UPDATE SET nanos = nanos + excluded.nanos, tokens = tokens + excluded.tokens",
        (scope, key, at_us // QUARTER_US, *spent),
    )


def _measure(db: sqlite3.Connection, window: Window, now: datetime) -> Spent:
    column = "user" if window.scope == "user" else "guild"  # one of two fixed names
    since = to_us(window.since)
    if since % QUARTER_US == 0:  # a window starting on a quarter hour: the running sums
        measure = "nanos" if window.unit == "usd" else "tokens"  # one of two fixed names
        (total,) = db.execute(
            f"SELECT COALESCE(SUM({measure}), 0) FROM usage_spent"
            " WHERE scope = ? AND key = ? AND quarter >= ?",
            (window.scope, window.key, since // QUARTER_US),
        ).fetchone()
        used = Decimal(total) * NANO if window.unit == "usd" else Decimal(total)
    elif window.unit == "usd":
        costs = db.execute(
            f"SELECT cost_usd FROM usage WHERE {column} = ? AND created_us >= ?"
            " AND cost_usd IS NOT NULL",
            (window.key, since),
        ).fetchall()
        used = sum((Decimal(c) for (c,) in costs), Decimal(0))  # exact, not through floats
    else:
        (tokens,) = db.execute(
            f"SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM usage"
            f" WHERE {column} = ? AND created_us >= ? AND cost_usd IS NULL",
            (window.key, since),
        ).fetchone()
        used = Decimal(tokens)
    holds = db.execute(
        f"SELECT amount FROM usage_holds WHERE {column} = ? AND priced = ? AND created_us >= ?",
        (window.key, int(window.unit == "usd"), _stale(now)),
    ).fetchall()
    return Spent(window, used, sum((Decimal(a) for (a,) in holds), Decimal(0)))
