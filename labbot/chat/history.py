"""Conversations: every message of a turn (tool calls and results included) in the database,
trimmed by tokens to fit the model's window. Per-user preferences live here too."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, Protocol

from labbot.sqlite import SqliteDatabase, to_us

Message = dict[str, Any]


def _m101_conversations(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            conversation TEXT NOT NULL,
            message TEXT NOT NULL,
            created_us INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX messages_by_conversation ON messages (user, conversation, seq)")
    db.execute(
        """CREATE TABLE preferences (
            user TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (user, name)
        )"""
    )


MIGRATIONS = [_m101_conversations]


class ConversationStore(Protocol):
    """Where conversations and preferences live."""

    async def start(self) -> None:
        """Create or migrate the schema; idempotent."""

    async def messages(self, user: str, conversation: str) -> list[Message]:
        """The conversation's messages, oldest first (tool turns made valid, see ``repair``)."""

    async def append(self, user: str, conversation: str, messages: list[Message]) -> None:
        """Add messages at the end, atomically."""

    async def clear(self, user: str, conversation: str) -> int:
        """Forget a conversation; returns how many messages went."""

    async def preference(self, user: str, name: str) -> str | None:
        """A user's preference, or None."""

    async def set_preference(self, user: str, name: str, value: str | None) -> None:
        """Set (or with None remove) a user's preference."""


class SqliteConversationStore:
    """ConversationStore on the shared SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def start(self) -> None:
        """Create or migrate the schema."""
        await self.db.migrate(MIGRATIONS)

    async def messages(self, user: str, conversation: str) -> list[Message]:
        """The conversation's messages, oldest first."""
        rows = await self.db.run(
            lambda db: db.execute(
                "SELECT message FROM messages WHERE user = ? AND conversation = ? ORDER BY seq",
                (user, conversation),
            ).fetchall(),
            write=False,
        )
        return repair([json.loads(row[0]) for row in rows])

    async def append(self, user: str, conversation: str, messages: list[Message]) -> None:
        """Add messages at the end in one transaction."""
        now = to_us(datetime.now(UTC))
        rows = [(user, conversation, json.dumps(m, ensure_ascii=False), now) for m in messages]
        await self.db.run(
            lambda db: db.executemany(
                "INSERT INTO messages (user, conversation, message, created_us)"
                " VALUES (?, ?, ?, ?)",
                rows,
            ),
            write=True,
        )

    async def clear(self, user: str, conversation: str) -> int:
        """Forget a conversation."""
        return await self.db.run(
            lambda db: (
                db.execute(
                    "DELETE FROM messages WHERE user = ? AND conversation = ?", (user, conversation)
                ).rowcount
            ),
            write=True,
        )

    async def preference(self, user: str, name: str) -> str | None:
        """A user's preference, or None."""
        row = await self.db.run(
            lambda db: db.execute(
                "SELECT value FROM preferences WHERE user = ? AND name = ?", (user, name)
            ).fetchone(),
            write=False,
        )
        return None if row is None else row[0]

    async def set_preference(self, user: str, name: str, value: str | None) -> None:
        """Set or remove a user's preference."""

        def write(db: sqlite3.Connection) -> None:
            if value is None:
                db.execute("DELETE FROM preferences WHERE user = ? AND name = ?", (user, name))
            else:
                db.execute(
                    "INSERT INTO preferences VALUES (?, ?, ?)"
                    " ON CONFLICT (user, name) DO UPDATE SET value = excluded.value",
                    (user, name, value),
                )

        await self.db.run(write, write=True)


def repair(messages: list[Message]) -> list[Message]:
    """Make a stored history valid for the API: every assistant tool call gets its result
    (a crash between the call and its result leaves one missing), and stray results go."""
    fixed: list[Message] = []
    pending: list[str] = []
    for message in messages:
        if message.get("role") == "tool":
            if message.get("tool_call_id") in pending:
                pending.remove(message["tool_call_id"])
                fixed.append(message)
            continue
        fixed.extend(_lost(call_id) for call_id in pending)
        pending = [call["id"] for call in message.get("tool_calls") or []]
        fixed.append(message)
    fixed.extend(_lost(call_id) for call_id in pending)
    return fixed


def _lost(call_id: str) -> Message:
    result = {"status": "killed", "notes": ["The result of this call was lost."]}
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)}


def turns(messages: list[Message]) -> list[list[Message]]:
    """Split a history into turns, each starting at a user message (the unit of trimming)."""
    groups: list[list[Message]] = []
    for message in messages:
        if message.get("role") == "user" or not groups:
            groups.append([])
        groups[-1].append(message)
    return groups
