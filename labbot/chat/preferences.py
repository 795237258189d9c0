"""What is kept about users besides their conversations, each in a typed home of its own:

- ``UserSettings``: a user's choices (their model, whether answers show the code);
- ``ReplyLinks``: which conversation a posted answer belongs to (so a reply to it continues
  that conversation), each with the user it answered, swept after REPLY_LINK_DAYS;
- ``AdminLists``: the lists admins keep by command (access lists, added models).

Each is a Protocol with an SQLite implementation here and a MongoDB one in preferences_mongo.py,
held to one contract suite (tests/chat/test_preferences_contract.py). The SQLite migration moves
the rows the old general ``preferences`` table held for them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from labbot.sqlite import SqliteDatabase, to_us

REPLY_LINK_DAYS = 90  # a reply to an answer older than this starts a new conversation


@dataclass(frozen=True)
class UserSettings:
    """A user's choices; the defaults are what a new user gets."""

    model: str | None = None  # None: the operator's DEFAULT_MODEL
    show_code: bool = True


class UserSettingsStore(Protocol):
    """Users' choices."""

    async def get(self, user: str) -> UserSettings:
        """The user's choices (the defaults when they made none)."""

    async def put(self, user: str, settings: UserSettings) -> None:
        """Keep the user's choices."""


class ReplyLinks(Protocol):
    """Which conversation each posted answer belongs to."""

    async def link(self, message_id: int, *, owner: str, conversation: str) -> None:
        """Remember that message ``message_id`` answered ``owner`` in ``conversation``."""

    async def conversation(self, message_id: int, *, owner: str) -> str | None:
        """The conversation of an answer to ``owner`` (None: unknown, swept, or someone
        else's)."""

    async def sweep(self, *, before: datetime) -> int:
        """Forget links made before ``before``; how many went."""


class AdminLists(Protocol):
    """Lists admins keep by command, each a JSON value under a name."""

    async def get(self, name: str) -> Any:
        """The list's value (None when never set)."""

    async def put(self, name: str, value: Any) -> None:
        """Replace the list's value."""


@dataclass
class Preferences:
    """The three stores, as the composition root opens them."""

    users: UserSettingsStore
    replies: ReplyLinks
    admin: AdminLists

    async def sweep(self, *, now: datetime) -> int:
        """Forget reply links older than REPLY_LINK_DAYS."""
        return await self.replies.sweep(before=now - timedelta(days=REPLY_LINK_DAYS))


# SQLite ----------------------------------------------------------------------------------------
def _m201_preferences(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE user_settings (user TEXT PRIMARY KEY, model TEXT, show_code INTEGER NOT NULL)"
    )
    db.execute(
        """CREATE TABLE reply_links (
            message_id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL,
            conversation TEXT NOT NULL,
            created_us INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX reply_links_by_age ON reply_links (created_us)")
    db.execute("CREATE TABLE admin_lists (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'preferences'")
    if old.fetchone() is None:
        return
    # Move what the general preferences table held for each (its rows go with them).
    now = to_us(datetime.now(UTC))
    rows = db.execute("SELECT user, name, value FROM preferences").fetchall()
    for user, name, value in rows:
        if name.startswith("conversation:") and name[13:].isdigit():
            db.execute(
                "INSERT OR REPLACE INTO reply_links VALUES (?, ?, ?, ?)",
                (int(name[13:]), user, value, now),
            )
        elif (user, name) in (("__access__", "lists"), ("__models__", "added")):
            list_name = "access" if user == "__access__" else "models"
            db.execute("INSERT OR REPLACE INTO admin_lists VALUES (?, ?)", (list_name, value))
        elif name in ("model", "show_code"):
            db.execute(
                "INSERT OR IGNORE INTO user_settings VALUES (?, NULL, 1)",
                (user,),
            )
            if name == "model":
                db.execute("UPDATE user_settings SET model = ? WHERE user = ?", (value, user))
            else:
                show = int(value != "off")
                db.execute("UPDATE user_settings SET show_code = ? WHERE user = ?", (show, user))
        else:
            continue
        db.execute("DELETE FROM preferences WHERE user = ? AND name = ?", (user, name))


MIGRATIONS = [_m201_preferences]


class SqliteUserSettings:
    """UserSettingsStore on the shared SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def get(self, user: str) -> UserSettings:
        """The user's choices (the defaults when they made none)."""
        row = await self.db.run(
            lambda db: db.execute(
                "SELECT model, show_code FROM user_settings WHERE user = ?", (user,)
            ).fetchone(),
            write=False,
        )
        return UserSettings() if row is None else UserSettings(row[0], bool(row[1]))

    async def put(self, user: str, settings: UserSettings) -> None:
        """Keep the user's choices."""
        values = (user, settings.model, int(settings.show_code))
        await self.db.run(
            lambda db: db.execute("INSERT OR REPLACE INTO user_settings VALUES (?, ?, ?)", values),
            write=True,
        )


class SqliteReplyLinks:
    """ReplyLinks on the shared SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def link(self, message_id: int, *, owner: str, conversation: str) -> None:
        """Remember which conversation an answer belongs to."""
        row = (message_id, owner, conversation, to_us(datetime.now(UTC)))
        await self.db.run(
            lambda db: db.execute("INSERT OR REPLACE INTO reply_links VALUES (?, ?, ?, ?)", row),
            write=True,
        )

    async def conversation(self, message_id: int, *, owner: str) -> str | None:
        """The conversation of an answer to ``owner``."""
        row = await self.db.run(
            lambda db: db.execute(
                "SELECT conversation FROM reply_links WHERE message_id = ? AND owner = ?",
                (message_id, owner),
            ).fetchone(),
            write=False,
        )
        return None if row is None else str(row[0])

    async def sweep(self, *, before: datetime) -> int:
        """Forget links made before ``before``."""
        cutoff = to_us(before)
        return await self.db.run(
            lambda db: (
                db.execute("DELETE FROM reply_links WHERE created_us < ?", (cutoff,)).rowcount
            ),
            write=True,
        )


class SqliteAdminLists:
    """AdminLists on the shared SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def get(self, name: str) -> Any:
        """The list's value (None when never set)."""
        row = await self.db.run(
            lambda db: db.execute(
                "SELECT value FROM admin_lists WHERE name = ?", (name,)
            ).fetchone(),
            write=False,
        )
        return None if row is None else json.loads(row[0])

    async def put(self, name: str, value: Any) -> None:
        """Replace the list's value."""
        row = (name, json.dumps(value))
        await self.db.run(
            lambda db: db.execute("INSERT OR REPLACE INTO admin_lists VALUES (?, ?)", row),
            write=True,
        )


async def open_sqlite_preferences(db: SqliteDatabase) -> Preferences:
    """The three stores on ``db``, migrated (after the conversation store's own migrations,
    whose old preferences table this one empties)."""
    await db.migrate(MIGRATIONS)
    return Preferences(SqliteUserSettings(db), SqliteReplyLinks(db), SqliteAdminLists(db))
