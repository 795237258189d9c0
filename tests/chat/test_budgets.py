"""Budgets end to end: the real openai SDK against the loopback model server, the real SQLite
ledger, a test clock (never today's date); and the limits that apply to whom."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from labbot.app import open_app
from labbot.chat.budgets import Budgets, BudgetWarning, Payer, parse_amount
from labbot.chat.preferences import SqliteAdminLists, open_sqlite_preferences
from labbot.chat.usage import SqliteUsageLedger, UsageRecord
from labbot.core import Event, Failed, Final
from labbot.errors import LabbotError
from labbot.sqlite import SqliteDatabase
from tests.conftest import model_settings
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def spending(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion}


async def test_a_spent_daily_budget_refuses_until_it_resets(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """$1 a day (gpt-4o-mini: $0.15 per million tokens in, $0.60 out), in Paris time. The
    first answer ($0.90) warns at 80%; the second is still served and crosses the limit; the
    third is refused with the sentence, without asking the model; after midnight in Paris
    (23:00 UTC) the user is served again."""
    clock = Clock(datetime(2031, 3, 14, 21, 30, tzinfo=UTC))
    settings = model_settings(
        tmp_path / "data",
        fake_openai.base_url,
        USER_DAILY_BUDGET_USD="1",
        TIMEZONE="Europe/Paris",
    )
    fake_openai.enqueue(
        Reply.text("First.", usage=spending(2_000_000, 1_000_000)),
        Reply.text("Second.", usage=spending(1_000_000, 0)),
        Reply.text("After midnight.", usage=spending(10, 2)),
    )
    async with open_app(settings, clock=clock) as app:
        assert app.engine is not None
        first = await collect(app.engine.turn("42", "c", "one"))
        warnings = [e.text for e in first if isinstance(e, BudgetWarning)]
        assert warnings == [
            "You have used 90% of your daily budget ($0.90 of $1.00); it resets at 00:00"
            " on 15 March 2031 (Europe/Paris)."
        ]
        second = await collect(app.engine.turn("42", "c", "two"))
        assert [e.text for e in second if isinstance(e, Final)] == ["Second."]
        clock.now += timedelta(minutes=20)
        third = await collect(app.engine.turn("42", "c", "three"))
        assert [e.text for e in third if isinstance(e, Failed)] == [
            "You have reached your daily budget of $1.00: $1.05 spent today; it resets at"
            " 00:00 on 15 March 2031 (Europe/Paris)."
        ]
        assert len(fake_openai.requests) == 2  # the refused request never reached the model
        clock.now = datetime(2031, 3, 14, 23, 0, tzinfo=UTC)  # midnight in Paris
        fourth = await collect(app.engine.turn("42", "c", "four"))
        assert [e.text for e in fourth if isinstance(e, Final)] == ["After midnight."]
        states = await app.engine.budgets.states(Payer("42"))
        assert [(s.name, s.spent < Decimal("0.001")) for s in states] == [("user_daily_usd", True)]


@pytest.fixture
async def budgets(tmp_path: Path) -> AsyncIterator[tuple[Budgets, Clock]]:
    db = SqliteDatabase(tmp_path / "b.sqlite3")
    ledger = SqliteUsageLedger(db)
    await ledger.start()
    await open_sqlite_preferences(db)
    clock = Clock(datetime(2031, 1, 31, 12, tzinfo=UTC))
    settings = fake_settings(tmp_path, USER_MONTHLY_BUDGET_USD="10", GUILD_MONTHLY_BUDGET_USD="100")
    yield Budgets(settings, ledger, SqliteAdminLists(db), now=clock), clock
    await db.close()


async def test_overrides_roles_guilds_and_admins(budgets) -> None:
    """A user's own override beats their roles'; of several roles the most generous wins
    ("none": no limit); a guild's override; admins have no limits unless they opt in."""
    found, _ = budgets
    member = Payer("7", guild="g", roles=frozenset({"r1", "r2"}))
    assert await found.limits_for(member) == {
        "user_monthly_usd": Decimal(10),
        "guild_monthly_usd": Decimal(100),
    }
    await found.set_override("role", "r1", "user_monthly_usd", Decimal(20))
    await found.set_override("role", "r2", "user_monthly_usd", Decimal(30))
    await found.set_override("guild", "g", "guild_monthly_usd", Decimal(500))
    assert (await found.limits_for(member))["user_monthly_usd"] == 30
    assert (await found.limits_for(member))["guild_monthly_usd"] == 500
    await found.set_override("role", "r1", "user_monthly_usd", None)
    assert "user_monthly_usd" not in await found.limits_for(member)
    await found.set_override("user", "7", "user_monthly_usd", Decimal(2))
    assert (await found.limits_for(member))["user_monthly_usd"] == 2
    await found.set_override("user", "7", "user_monthly_usd", "default")
    assert "user_monthly_usd" not in await found.limits_for(member)  # the roles' again
    admin = Payer("1", guild="g", admin=True)
    assert await found.limits_for(admin) == {}
    await found.opt_in("1", on=True)
    assert await found.limits_for(admin) == {
        "user_monthly_usd": Decimal(10),
        "guild_monthly_usd": Decimal(500),
    }


async def test_a_guild_budget_and_its_reset_at_the_month_end(budgets) -> None:
    """Another user's spending in the guild counts; the sentence names the server's limit and
    the first of the next month."""
    found, clock = budgets
    await found.set_override("guild", "g", "guild_monthly_usd", Decimal(1))
    entry = UsageRecord("8", "c", "gpt-4o-mini", 0, 0, 0, Decimal("1.5"), False, 1.0, "g")
    await found.ledger.record(entry, at=clock())
    from labbot.llm.models import ModelCatalog

    model = ModelCatalog().get("gpt-4o-mini")
    with pytest.raises(LabbotError) as refused:
        await found.reserve(Payer("7", guild="g"), model, input_tokens=10)
    assert str(refused.value) == (
        "This server has reached its monthly budget of $1.00: $1.50 spent this month; it"
        " resets at 00:00 on 1 February 2031 (UTC)."
    )
    ticket = await found.reserve(Payer("7"), model, input_tokens=10)  # a DM: no guild limit
    assert ticket.hold is not None
    await found.release(ticket)


async def test_tokens_limit_models_without_a_price(tmp_path: Path) -> None:
    """USER_DAILY_TOKENS counts the tokens of unpriced models; a priced model is not held to
    it."""
    db = SqliteDatabase(tmp_path / "t.sqlite3")
    ledger = SqliteUsageLedger(db)
    await ledger.start()
    await open_sqlite_preferences(db)
    clock = Clock(datetime(2031, 1, 31, 12, tzinfo=UTC))
    found = Budgets(
        fake_settings(tmp_path, USER_DAILY_TOKENS=1000), ledger, SqliteAdminLists(db), now=clock
    )
    from labbot.llm.models import ModelCatalog

    local, priced = ModelCatalog().get("llama-local-7b"), ModelCatalog().get("gpt-4o-mini")
    ticket = await found.reserve(Payer("7"), local, input_tokens=600)
    await found.settle(ticket, UsageRecord("7", "c", local.name, 600, 0, 500, None, False, 1.0))
    with pytest.raises(LabbotError, match="1,100 tokens spent today"):
        await found.reserve(Payer("7"), local, input_tokens=10)
    await found.release(await found.reserve(Payer("7"), priced, input_tokens=10))
    await db.close()


def test_amounts_admins_type() -> None:
    """Dollars, tokens and "none"; anything else is refused with what to type."""
    assert parse_amount("$2.50") == Decimal("2.50")
    assert parse_amount("20,000") == 20000
    assert parse_amount("none") is None
    with pytest.raises(LabbotError, match="not an amount"):
        parse_amount("-3")
    with pytest.raises(LabbotError, match="not an amount"):
        parse_amount("lots")


async def test_a_turn_running_holds_what_it_may_spend(tmp_path: Path) -> None:
    """Two turns of one user at once: while the first request is in flight its most possible
    cost (its input and 4,096 tokens out: over $0.0025) is held, so the second turn is refused
    at once with the hold named; the first is answered, and settling frees the hold."""
    model = ScriptedModel()
    go = asyncio.Event()

    async def slow(body: dict) -> Reply:
        await go.wait()
        return Reply.text("A.", usage=spending(100, 10))

    model.respond_with(slow)
    settings = fake_settings(tmp_path / "d", USER_DAILY_BUDGET_USD="0.002")
    async with open_fake_app(settings, model) as app:
        assert app.engine is not None
        app.engine.budgets.now = Clock(datetime(2031, 3, 14, 12, tzinfo=UTC))
        first = asyncio.create_task(collect(app.engine.turn("42", "a", "one")))
        async with asyncio.timeout(10):
            await model.wait_for_requests(1)
        second = await collect(app.engine.turn("42", "b", "two"))
        (refused,) = [e.text for e in second if isinstance(e, Failed)]
        assert refused.startswith("You have reached your daily budget of $0.0020: $0.00 spent")
        assert "held by requests still running" in refused
        go.set()
        assert [e.text for e in await first if isinstance(e, Final)] == ["A."]
        (state,) = await app.engine.budgets.states(Payer("42"))
        assert state.spent == Decimal("0.0000210")  # 100 in, 10 out: the hold is gone
        assert len(model.requests) == 1
