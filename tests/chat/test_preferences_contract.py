"""Users' settings, reply links and admins' lists (labbot/chat/preferences.py), on every
backend (tests/backends.py); and the move of what the old general preferences held."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labbot.chat.history import SqliteConversationStore
from labbot.chat.preferences import (
    REPLY_LINK_DAYS,
    Preferences,
    UserSettings,
    open_sqlite_preferences,
)
from labbot.chat.preferences_mongo import open_mongo_preferences
from labbot.sqlite import SqliteDatabase
from tests.backends import BACKENDS, mongo_database

OLD_ROWS = [
    ("42", "model", "o4-mini"),
    ("42", "show_code", "off"),
    ("43", "show_code", "on"),
    ("42", "conversation:1001", "msg:999"),
    ("__access__", "lists", '{"allowed": {"user": [7]}, "blocked": {}}'),
    ("__models__", "added", '["my-finetune"]'),
]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple]:
    """(open the stores, put the old general rows in place first)."""
    async with mongo_database(request.param) as database:
        if database is None:
            db = SqliteDatabase(tmp_path / "p.sqlite3")

            async def plant() -> None:
                await SqliteConversationStore(db).start()
                await db.run(
                    lambda c: c.executemany("INSERT INTO preferences VALUES (?, ?, ?)", OLD_ROWS),
                    write=True,
                )

            yield (lambda: open_sqlite_preferences(db)), plant
            await db.close()
        else:

            async def plant() -> None:
                docs = [
                    {"_id": f"{u}\x00{n}", "user": u, "name": n, "value": v} for u, n, v in OLD_ROWS
                ]
                await database["preferences"].insert_many(docs)

            yield (lambda: open_mongo_preferences(database)), plant


async def test_user_settings_default_and_kept(backend) -> None:
    """A user without choices gets the defaults; choices are per user and replaced whole."""
    open_stores, _ = backend
    stores: Preferences = await open_stores()
    assert await stores.users.get("u") == UserSettings(model=None, show_code=True)
    await stores.users.put("u", UserSettings(model="gpt-4o", show_code=False))
    await stores.users.put("u", UserSettings(model="o4-mini", show_code=False))
    assert await stores.users.get("u") == UserSettings("o4-mini", False)
    assert await stores.users.get("v") == UserSettings()


async def test_reply_links_have_an_owner_and_are_swept(backend) -> None:
    """A link answers only its owner; links older than REPLY_LINK_DAYS are swept."""
    open_stores, _ = backend
    stores: Preferences = await open_stores()
    await stores.replies.link(1, owner="alice", conversation="msg:1")
    assert await stores.replies.conversation(1, owner="alice") == "msg:1"
    assert await stores.replies.conversation(1, owner="mallory") is None
    assert await stores.replies.conversation(2, owner="alice") is None
    now = datetime.now(UTC)
    assert await stores.sweep(now=now) == 0
    assert await stores.sweep(now=now + timedelta(days=REPLY_LINK_DAYS, seconds=1)) == 1
    assert await stores.replies.conversation(1, owner="alice") is None


async def test_admin_lists_round_trip(backend) -> None:
    """A list is a JSON value under its name, replaced whole."""
    open_stores, _ = backend
    stores: Preferences = await open_stores()
    assert await stores.admin.get("access") is None
    await stores.admin.put("access", {"allowed": {"user": [1]}})
    await stores.admin.put("access", {"allowed": {"user": [2]}})
    assert await stores.admin.get("access") == {"allowed": {"user": [2]}}


async def test_the_old_general_preferences_are_moved(backend) -> None:
    """Every row the old key-value table held lands in its typed home, once."""
    open_stores, plant = backend
    await plant()
    stores: Preferences = await open_stores()
    await open_stores()  # idempotent
    assert await stores.users.get("42") == UserSettings("o4-mini", False)
    assert await stores.users.get("43") == UserSettings(None, True)
    assert await stores.replies.conversation(1001, owner="42") == "msg:999"
    assert await stores.admin.get("access") == {"allowed": {"user": [7]}, "blocked": {}}
    assert await stores.admin.get("models") == ["my-finetune"]
