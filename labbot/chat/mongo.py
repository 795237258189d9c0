"""Conversations and the usage ledger on MongoDB (same contracts as SQLite)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING

from labbot.chat.history import Message, repair
from labbot.chat.usage import ModelUsage, UsageRecord
from labbot.files.meta.mongo import guarded, reading
from labbot.sqlite import to_us


class MongoConversationStore:
    """ConversationStore on the ``messages`` collection."""

    def __init__(self, database: Any) -> None:
        self.messages_ = database["messages"]
        self.counters = database["counters"]

    async def start(self) -> None:
        """Create the indexes (idempotent)."""
        await guarded(
            self.messages_.create_index(
                [("user", ASCENDING), ("conversation", ASCENDING), ("seq", ASCENDING)]
            )
        )

    async def _next_seq(self, count: int) -> int:
        doc = await guarded(
            self.counters.find_one_and_update(
                {"_id": "messages"}, {"$inc": {"value": count}}, upsert=True, return_document=True
            )
        )
        return int(doc["value"]) - count + 1

    async def messages(self, user: str, conversation: str) -> list[Message]:
        """The conversation's messages, oldest first."""
        async with reading():
            cursor = self.messages_.find({"user": user, "conversation": conversation}).sort(
                "seq", ASCENDING
            )
            return repair([json.loads(doc["message"]) async for doc in cursor])

    async def append(self, user: str, conversation: str, messages: list[Message]) -> None:
        """Add messages at the end (one insert, in order)."""
        if not messages:
            return
        first = await self._next_seq(len(messages))
        now = datetime.now(UTC)
        docs = [
            {
                "user": user,
                "conversation": conversation,
                "seq": first + n,
                "message": json.dumps(m, ensure_ascii=False),
                "created_at": now,
            }
            for n, m in enumerate(messages)
        ]
        await guarded(self.messages_.insert_many(docs, ordered=True))

    async def clear(self, user: str, conversation: str) -> int:
        """Forget a conversation."""
        result = await guarded(
            self.messages_.delete_many({"user": user, "conversation": conversation})
        )
        return result.deleted_count


class MongoUsageLedger:
    """UsageLedger on the ``usage`` collection (costs as decimal strings, summed exactly)."""

    def __init__(self, database: Any) -> None:
        self.usage = database["usage"]

    async def start(self) -> None:
        """Create the indexes (idempotent)."""
        await guarded(self.usage.create_index([("user", ASCENDING), ("model", ASCENDING)]))

    async def record(self, entry: UsageRecord) -> None:
        """Add one request."""
        now = datetime.now(UTC)
        await guarded(
            self.usage.insert_one(
                {
                    "user": entry.user,
                    "conversation": entry.conversation,
                    "model": entry.model,
                    "input_tokens": entry.input_tokens,
                    "cached_tokens": entry.cached_tokens,
                    "output_tokens": entry.output_tokens,
                    "cost_usd": None if entry.cost_usd is None else str(entry.cost_usd),
                    "estimated": entry.estimated,
                    "duration_ms": entry.duration_ms,
                    "created_at": now,
                    "created_us": to_us(now),
                }
            )
        )

    async def summary(self, user: str) -> list[ModelUsage]:
        """The user's totals per model, most expensive first."""
        totals: dict[str, list[Any]] = {}
        async with reading():
            async for doc in self.usage.find({"user": user}):
                row = totals.setdefault(doc["model"], [0, 0, 0, 0, Decimal(0), 0])
                row[0] += 1
                row[1] += doc["input_tokens"]
                row[2] += doc["cached_tokens"]
                row[3] += doc["output_tokens"]
                if doc.get("cost_usd") is None:
                    row[5] += 1
                else:
                    row[4] += Decimal(doc["cost_usd"])
        result = [ModelUsage(model, *values) for model, values in totals.items()]
        return sorted(result, key=lambda m: (-m.cost_usd, m.model))
