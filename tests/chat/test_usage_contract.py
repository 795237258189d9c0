"""The ledger's budget contract (holds, windows, executions, report rows), on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from labbot.chat.mongo import MongoUsageLedger
from labbot.chat.reports import report
from labbot.chat.usage import (
    HOLD_SECONDS,
    ExecutionRecord,
    Hold,
    SqliteUsageLedger,
    UsageRecord,
    Window,
    fits,
)
from labbot.sqlite import SqliteDatabase
from tests.backends import BACKENDS, mongo_database

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)  # a fixed test clock, never today's date
DAY = NOW.replace(hour=0)


@pytest.fixture(params=BACKENDS)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with mongo_database(request.param) as database:
        if database is None:
            db = SqliteDatabase(tmp_path / "u.sqlite3")
            found: Any = SqliteUsageLedger(db)
        else:
            found = MongoUsageLedger(database)
        await found.start()
        await found.start()  # idempotent
        yield found
        if database is None:
            await db.close()


def record(user: str = "u", cost: str | None = "1", guild: str | None = None) -> UsageRecord:
    return UsageRecord(
        user=user,
        conversation="c",
        model="m" if cost is not None else "local",
        input_tokens=100,
        cached_tokens=0,
        output_tokens=50,
        cost_usd=None if cost is None else Decimal(cost),
        estimated=False,
        duration_ms=5.0,
        guild=guild,
    )


def hold(n: int, user: str = "u", admit: str = "0.5", amount: str = "1", **kw: Any) -> Hold:
    values: dict[str, Any] = {"guild": None, "priced": True} | kw
    return Hold(f"h{n}", user, admit=Decimal(admit), amount=Decimal(amount), **values)


def daily(limit: str, unit: Any = "usd", scope: Any = "user", key: str = "u") -> Window:
    return Window(scope, key, DAY, unit, Decimal(limit))


async def test_a_window_counts_its_user_since_its_start(ledger) -> None:
    """Spent is what the user settled since the window's start, exactly, in its unit."""
    await ledger.record(record(cost="0.1"), at=DAY - timedelta(seconds=1))  # yesterday
    await ledger.record(record(cost="0.1"), at=DAY)
    await ledger.record(record(cost="0.2"), at=NOW)
    await ledger.record(record(user="v", cost="9"), at=NOW)
    await ledger.record(record(cost=None), at=NOW)  # unpriced: counted in tokens only
    usd, tokens = await ledger.measure([daily("5"), daily("1000", "tokens")], now=NOW)
    assert usd.used == Decimal("0.3") and usd.held == 0
    assert tokens.used == 150


async def test_holds_count_until_settled_or_released(ledger) -> None:
    """A kept hold counts as spent for the next request; settling replaces it by the row;
    releasing drops it; a hold older than HOLD_SECONDS stops counting."""
    window = daily("2")
    first = await ledger.reserve(hold(1), [window], now=NOW)
    assert fits(hold(1), first)
    (after,) = await ledger.measure([window], now=NOW)
    assert (after.used, after.held) == (0, 1)
    await ledger.reserve(hold(2), [window], now=NOW)  # 1 held + 0.5 fits in 2: kept
    refused = await ledger.reserve(hold(3), [window], now=NOW)  # 2 held + 0.5 > 2
    assert not fits(hold(3), refused) and refused[0].held == 2
    (settled,) = await ledger.settle("h1", record(cost="0.25"), [window], now=NOW)
    assert (settled.used, settled.held) == (Decimal("0.25"), 1)
    await ledger.release("h2")
    (released,) = await ledger.measure([window], now=NOW)
    assert released.held == 0
    await ledger.reserve(hold(4), [window], now=NOW)
    (later,) = await ledger.measure([window], now=NOW + timedelta(seconds=HOLD_SECONDS + 1))
    assert later.held == 0


async def test_guild_windows_and_token_windows_count_their_own(ledger) -> None:
    """A guild window counts every user of the guild; a token window only unpriced requests
    and holds; a priced hold never counts in a token window."""
    await ledger.record(record(user="a", cost="1", guild="g"), at=NOW)
    await ledger.record(record(user="b", cost="2", guild="g"), at=NOW)
    await ledger.record(record(user="b", cost="4", guild="other"), at=NOW)
    guild = daily("10", scope="guild", key="g")
    tokens = daily("1000", "tokens")
    await ledger.reserve(hold(1, user="c", guild="g"), [guild], now=NOW)
    await ledger.reserve(hold(2, priced=False, admit="10", amount="300"), [tokens], now=NOW)
    g, t = await ledger.measure([guild, tokens], now=NOW)
    assert (g.used, g.held) == (3, 1)
    assert (t.used, t.held) == (0, 300)


async def test_concurrent_reservations_never_pass_the_limit_by_more_than_one(ledger) -> None:
    """Twenty requests of one user reserved at once against room for three: three are kept."""
    window = daily("3.3")
    results = await asyncio.gather(
        *(ledger.reserve(hold(n, admit="0.4"), [window], now=NOW) for n in range(20))
    )
    kept = [n for n, spent in enumerate(results) if fits(hold(n, admit="0.4"), spent)]
    assert len(kept) == 3
    (after,) = await ledger.measure([window], now=NOW)
    assert after.held == 3


async def test_rows_for_reports(ledger) -> None:
    """Requests and executions since a time come back oldest first, with guild and status,
    and the report sums them per key with totals."""
    await ledger.record(record(cost="0.5", guild="g"), at=NOW - timedelta(days=10))
    await ledger.record(record(cost="0.5", guild="g"), at=NOW - timedelta(hours=30))
    await ledger.record(record(user="v", cost=None), at=NOW)
    await ledger.record_execution(ExecutionRecord("u", "c", "ok", 12.0, "g"), at=NOW)
    await ledger.record_execution(ExecutionRecord("u", "c", "timeout", 9.0, "g"), at=NOW)
    since = NOW - timedelta(days=7)
    requests, executions = await ledger.requests(since), await ledger.executions(since)
    assert [(r.user, r.guild) for r in requests] == [("u", "g"), ("v", None)]
    assert [e.status for e in executions] == ["ok", "timeout"]
    rows, total = report(requests, executions, by="user", timezone="UTC")
    assert [(r.key, r.requests, r.executions, r.cost_usd) for r in rows] == [
        ("u", 1, 2, Decimal("0.5")),
        ("v", 1, 0, Decimal(0)),
    ]
    assert (total.requests, total.input_tokens, total.unpriced_requests) == (2, 200, 1)
    days, _ = report(requests, executions, by="day", timezone="Pacific/Auckland")
    assert [d.key for d in days] == ["2031-03-13", "2031-03-15"]  # Auckland is UTC+13 then


@pytest.fixture
async def mongo_ledger() -> AsyncIterator[MongoUsageLedger]:
    async with mongo_database("mongo-standin") as database:
        found = MongoUsageLedger(database)
        await found.start()
        yield found


async def test_a_mongo_reservation_waits_for_the_users_lease(mongo_ledger, monkeypatch) -> None:
    """On MongoDB a reservation takes the user's lease: while another request holds it, a
    reservation of that user waits (here: gives up, busy, after a short wait), another user's
    goes on, and a lease a crashed process left behind is free again after LOCK_SECONDS."""
    from labbot.chat import mongo
    from labbot.errors import StorageError

    monkeypatch.setattr(mongo, "LOCK_WAIT_SECONDS", 0.05)
    window = daily("5")
    async with mongo_ledger._locked(["user:u"]):
        with pytest.raises(StorageError, match="busy"):
            await mongo_ledger.reserve(hold(1), [window], now=NOW)
        other = daily("5", key="v")
        assert fits(
            hold(2, user="v"), await mongo_ledger.reserve(hold(2, user="v"), [other], now=NOW)
        )
    assert fits(hold(3), await mongo_ledger.reserve(hold(3), [window], now=NOW))
    stale = datetime.now(UTC) - timedelta(seconds=1)
    await mongo_ledger.locks.update_one(
        {"_id": "user:u"}, {"$set": {"holder": "x", "until": stale}}
    )
    assert fits(hold(4), await mongo_ledger.reserve(hold(4), [window], now=NOW))


async def test_a_window_off_the_quarter_hour_counts_the_rows_themselves(ledger) -> None:
    """A window starting off a quarter hour (no real midnight does) sums the requests
    themselves, with the same result."""
    await ledger.record(record(cost="0.25"), at=NOW - timedelta(minutes=10))
    await ledger.record(record(cost="0.5"), at=NOW)
    await ledger.record(record(cost=None), at=NOW)
    odd = NOW - timedelta(minutes=7)
    usd, tokens = await ledger.measure(
        [
            Window("user", "u", odd, "usd", Decimal(5)),
            Window("user", "u", odd, "tokens", Decimal(9)),
        ],
        now=NOW,
    )
    assert (usd.used, tokens.used) == (Decimal("0.5"), 150)
    (aligned,) = await ledger.measure([daily("5")], now=NOW)
    assert aligned.used == Decimal("0.75")


async def test_sqlite_requests_recorded_before_the_budgets_count(tmp_path: Path) -> None:
    """The migration fills the running sums from the requests an older labbot recorded."""
    from labbot.chat.usage import _m201_usage
    from labbot.sqlite import to_us

    db = SqliteDatabase(tmp_path / "old.sqlite3")
    await db.migrate([_m201_usage])
    old = ("u", "c", "gpt-4o-mini", 100, 0, 50, "0.125", 0, 1.0, to_us(NOW))
    await db.run(
        lambda c: c.execute(
            "INSERT INTO usage (user, conversation, model, input_tokens, cached_tokens,"
            " output_tokens, cost_usd, estimated, duration_ms, created_us)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            old,
        ),
        write=True,
    )
    ledger = SqliteUsageLedger(db)
    await ledger.start()
    (spent,) = await ledger.measure([daily("5")], now=NOW)
    assert spent.used == Decimal("0.125")
    await db.close()


async def test_mongo_requests_recorded_before_the_budgets_count() -> None:
    """The first start on MongoDB fills the running sums from the requests already stored
    (once: a second start adds nothing)."""
    async with mongo_database("mongo-standin") as database:
        old = {
            "user": "u",
            "conversation": "c",
            "model": "m",
            "input_tokens": 100,
            "cached_tokens": 0,
            "output_tokens": 50,
            "cost_usd": "0.125",
            "estimated": False,
            "duration_ms": 1.0,
            "created_at": NOW,
            "created_us": int(NOW.timestamp() * 1_000_000),
        }
        await database["usage"].insert_one(old)
        for _ in range(2):
            ledger = MongoUsageLedger(database)
            await ledger.start()
        (spent,) = await ledger.measure([daily("5")], now=NOW)
        assert spent.used == Decimal("0.125")
