"""The conversation store and usage ledger contract, on every backend (tests/backends.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from labbot.chat.history import MAX_TOOL_MESSAGE, SqliteConversationStore
from labbot.chat.mongo import MongoConversationStore, MongoUsageLedger
from labbot.chat.usage import SqliteUsageLedger, UsageRecord
from labbot.sqlite import SqliteDatabase
from tests.backends import BACKENDS, mongo_database


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple]:
    async with mongo_database(request.param) as database:
        if database is None:
            db = SqliteDatabase(tmp_path / "c.sqlite3")
            pair: tuple[Any, Any] = (SqliteConversationStore(db), SqliteUsageLedger(db))
        else:
            pair = (MongoConversationStore(database), MongoUsageLedger(database))
        for store in pair:
            await store.start()
            await store.start()  # idempotent
        yield pair
        if database is None:
            await db.close()


async def test_messages_append_in_order_per_conversation(stores) -> None:
    """Messages come back in the order appended, per user and conversation; clear forgets one."""
    conversations, _ = stores
    await conversations.append("u", "a", [{"role": "user", "content": "1"}])
    await conversations.append("u", "b", [{"role": "user", "content": "x"}])
    await conversations.append(
        "u", "a", [{"role": "assistant", "content": "2"}, {"role": "user", "content": "3 ü 📊"}]
    )
    assert [m["content"] for m in await conversations.messages("u", "a")] == ["1", "2", "3 ü 📊"]
    assert await conversations.messages("v", "a") == []
    assert await conversations.clear("u", "a") == 3
    assert await conversations.messages("u", "a") == []
    assert len(await conversations.messages("u", "b")) == 1


async def test_an_oversized_stored_tool_result_comes_back_bounded(stores) -> None:
    """A 600 KB tool result already in the store (written before results were bounded) is
    re-sent cut to MAX_TOOL_MESSAGE, with its status."""
    conversations, _ = stores
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    result = {"status": "error", "error": {"traceback": "T" * 300_000}, "notes": ["n"] * 30_000}
    await conversations.append(
        "u",
        "a",
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps(result)},
        ],
    )
    tool = (await conversations.messages("u", "a"))[2]
    assert len(tool["content"]) <= MAX_TOOL_MESSAGE
    assert json.loads(tool["content"])["status"] == "error"


async def test_usage_summary_sums_exactly_per_model(stores) -> None:
    """Totals per model, costs summed as decimals, unpriced requests counted, dearest first."""
    _, ledger = stores

    def entry(model: str, cost: str | None) -> UsageRecord:
        return UsageRecord(
            user="u",
            conversation="c",
            model=model,
            input_tokens=100,
            cached_tokens=10,
            output_tokens=5,
            cost_usd=None if cost is None else Decimal(cost),
            estimated=False,
            duration_ms=1.0,
        )

    for record in (
        entry("cheap", "0.1"),
        entry("cheap", "0.2"),
        entry("dear", "1.5"),
        entry("local", None),
    ):
        await ledger.record(record)
    rows = await ledger.summary("u")
    assert [r.model for r in rows] == ["dear", "cheap", "local"]
    cheap = rows[1]
    assert (cheap.requests, cheap.input_tokens, cheap.cached_tokens, cheap.output_tokens) == (
        2,
        200,
        20,
        10,
    )
    assert cheap.cost_usd == Decimal("0.3") and rows[2].unpriced_requests == 1
    assert await ledger.summary("nobody") == []
