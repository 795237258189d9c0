"""History is bounded: every message is stored with its tokens, a request takes the newest
whole turns by a running sum (reading no further), the exact fit follows the model's own rules,
and what is stored is pruned past the largest window. On every backend (tests/backends.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from labbot.chat import history
from labbot.chat.history import (
    SqliteConversationStore,
    fit,
    largest_window,
    message_tokens,
    newest_that_fit,
)
from labbot.chat.mongo import MongoConversationStore
from labbot.llm import tokens
from labbot.llm.models import ModelCatalog
from labbot.sqlite import SqliteDatabase
from tests.backends import BACKENDS, mongo_database


def turn(n: int, size: int = 40) -> list[dict[str, Any]]:
    """One turn: a question, a tool call, its result and an answer."""
    call = {
        "id": f"c{n}",
        "type": "function",
        "function": {"name": "execute_python_code", "arguments": json.dumps({"code": "1"})},
    }
    return [
        {"role": "user", "content": f"question {n} " + "word " * size},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"c{n}", "content": json.dumps({"stdout": "x " * size})},
        {"role": "assistant", "content": f"answer {n} " + "more " * size},
    ]


def turn_tokens(n: int, size: int = 40) -> int:
    return sum(message_tokens(m) for m in turn(n, size))


@pytest.fixture(params=BACKENDS)
async def conversations(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with mongo_database(request.param) as database:
        if database is None:
            db = SqliteDatabase(tmp_path / "c.sqlite3")
            store: Any = SqliteConversationStore(db)
        else:
            store = MongoConversationStore(database)
        await store.start()
        yield store
        if database is None:
            await db.close()


async def test_recent_takes_the_newest_whole_turns_by_stored_counts(conversations) -> None:
    """Ten turns stored: a budget of three and a half turns gives the newest three, whole, with
    the counts each message was stored with; a budget of nothing still gives the newest turn."""
    for n in range(10):
        await conversations.append("u", "c", turn(n))
    one = turn_tokens(9)
    got = await conversations.recent("u", "c", int(one * 3.5))
    assert [m["content"] for m in (c.message for c in got) if m["role"] == "user"] == [
        turn(n)[0]["content"] for n in (7, 8, 9)
    ]
    assert [c.tokens for c in got] == [message_tokens(m) for n in (7, 8, 9) for m in turn(n)]
    newest = await conversations.recent("u", "c", 0)
    assert [c.message for c in newest] == turn(9)
    assert await conversations.recent("u", "other", 10**6) == []


async def test_stored_history_is_pruned_past_the_largest_window(conversations) -> None:
    """With room for four turns kept, appending the tenth leaves the newest four, whole."""
    conversations.keep_tokens = int(turn_tokens(9) * 4.5)
    for n in range(10):
        await conversations.append("u", "c", turn(n))
    kept = await conversations.messages("u", "c")
    assert kept == [m for n in (6, 7, 8, 9) for m in turn(n)]
    assert await conversations.messages("u", "other") == []


def test_the_default_bound_is_the_largest_window_of_the_catalog() -> None:
    """Nothing that any model could still read is pruned."""
    catalog = ModelCatalog()
    widest = max(catalog.get(name).context_window for name in catalog.names())
    assert largest_window() == widest >= 1_000_000


async def test_rows_stored_before_counts_are_counted_by_the_migration(tmp_path: Path) -> None:
    """A database written by the previous release (no token column) is migrated: every old
    message gets its count and its turn mark, and requests read them like new ones."""
    path = tmp_path / "old.sqlite3"
    old = SqliteDatabase(path)
    await old.migrate(history.MIGRATIONS[:1])
    rows = [("u", "c", json.dumps(m), 1) for n in range(3) for m in turn(n)]
    await old.run(
        lambda db: db.executemany(
            "INSERT INTO messages (user, conversation, message, created_us) VALUES (?, ?, ?, ?)",
            rows,
        ),
        write=True,
    )
    await old.close()
    db = SqliteDatabase(path)
    store = SqliteConversationStore(db)
    await store.start()
    got = await store.recent("u", "c", 10**6)
    assert [c.tokens for c in got] == [message_tokens(m) for n in range(3) for m in turn(n)]
    counts = await db.run(
        lambda db: db.execute("SELECT turn_start FROM messages ORDER BY seq").fetchall(),
        write=False,
    )
    assert [c for (c,) in counts] == [1, 0, 0, 0] * 3
    await db.close()


async def test_mongo_documents_stored_before_counts_are_counted_at_start() -> None:
    """The same for MongoDB: documents without counts get them when the store starts."""
    async with mongo_database("mongo-standin") as database:
        store = MongoConversationStore(database)
        await store.start()
        await store.append("u", "c", turn(0))
        await database["messages"].update_many({}, {"$unset": {"tokens": "", "turn_start": ""}})
        await database["labbot_schema"].delete_many({"_id": "messages"})
        await store.start()
        got = await store.recent("u", "c", 10**6)
    assert [c.tokens for c in got] == [message_tokens(m) for m in turn(0)]


def test_newest_that_fit_reads_no_further_than_it_needs() -> None:
    """The rows are read newest first and reading stops at the first turn that does not fit:
    a thousand-turn history is read no further than the few turns that fit."""
    read = 0

    def rows() -> Any:
        nonlocal read
        for n in range(1000, 0, -1):
            for m in reversed(turn(n, 5)):
                read += 1
                yield json.dumps(m), message_tokens(m), m["role"] == "user"

    got = newest_that_fit(rows(), int(turn_tokens(1, 5) * 2.5))
    assert sum(1 for c in got if c.message["role"] == "user") == 2
    assert read <= 4 * 3 + 1


def test_fit_is_exact_for_a_model_that_counts_otherwise() -> None:
    """For a model with another tokenizer (gpt-4: cl100k_base) the kept history is counted
    again by its rules and trimmed to its budget exactly, whole turns."""
    messages = [m for n in range(6) for m in turn(n)]
    counted = [history.Counted(m, message_tokens(m)) for m in messages]
    budget = sum(message_tokens(m, "gpt-4") for m in messages[-8:]) + 2
    kept = fit(counted, budget, "gpt-4")
    assert kept == messages[-8:]
    assert tokens.count_messages(kept, "gpt-4") - tokens.REPLY_PRIMER <= budget


def test_fit_repairs_what_was_cut_short() -> None:
    """A stored call whose result was lost gets its stand-in result, counted too."""
    broken = turn(0)[:2]  # the call, no result, no answer
    counted = [history.Counted(m, message_tokens(m)) for m in broken]
    kept = fit(counted, 10**6, "gpt-4o")
    assert [m["role"] for m in kept] == ["user", "assistant", "tool"]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_fit_and_the_old_trim_agree(model: str) -> None:
    """The running sum keeps exactly the turns the old loop (count everything, drop the oldest
    turn, count again) kept: the newest turns that fit the budget."""
    messages = [m for n in range(12) for m in turn(n, 10 + 7 * n)]
    counted = [history.Counted(m, message_tokens(m)) for m in messages]
    for budget in (0, 500, 1500, 4000, 10**6):
        groups = history.turns(messages)
        while len(groups) > 1:
            flat = [m for g in groups for m in g]
            if tokens.count_messages(flat, model) - tokens.REPLY_PRIMER <= budget:
                break
            groups.pop(0)
        assert fit(counted, budget, model) == [m for g in groups for m in g], budget


@pytest.mark.timeout(120)
async def test_a_long_conversation_is_prepared_without_recounting(tmp_path: Path) -> None:
    """300 earlier turns of about 2,100 tokens (five times gpt-4o's window): the next turn
    sends the newest turns that fit, whole, and finishes well within 10 s (before: every
    dropped turn re-counted the rest, minutes of CPU; bench/engine.py measures it)."""
    import time

    from labbot.app import open_app
    from tests.conftest import model_settings
    from tests.fakes.openai_server import FakeOpenAI, Reply

    big = [m for n in range(300) for m in turn(n, 700)]
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("ok"))
        settings = model_settings(tmp_path / "data", api.base_url, DEFAULT_MODEL="gpt-4o")
        async with open_app(settings) as services:
            assert services.engine is not None
            for start in range(0, len(big), 40):
                await services.conversations.append("u", "c", big[start : start + 40])
            began = time.perf_counter()
            events = [e async for e in services.engine.turn("u", "c", "and now?")]
            took = time.perf_counter() - began
    assert events[-1].kind == "final", events[-1]
    sent = api.requests[-1]["messages"]
    questions = [m["content"] for m in sent if m["role"] == "user"]
    assert questions[-1] == "and now?" and 20 < len(questions) < 300
    first = sent[1]
    assert first["role"] == "user" and first["content"].startswith("question ")
    assert tokens.count_messages(sent, "gpt-4o") <= 128_000
    assert took < 10, f"{took:.1f} s"
