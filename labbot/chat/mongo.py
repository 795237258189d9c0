"""Conversations and the usage ledger on MongoDB (same contracts as SQLite)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING

from labbot.chat.history import (
    PRUNE_TO,
    Counted,
    Message,
    TurnFitter,
    largest_window,
    prune_from,
    repair,
    row_counts,
)
from labbot.chat.usage import ModelUsage, UsageRecord
from labbot.files.meta.mongo import guarded, reading
from labbot.sqlite import to_us

MESSAGES_SCHEMA = 2  # 2: messages carry their tokens and whether they start a turn


class MongoConversationStore:
    """ConversationStore on the ``messages`` collection."""

    def __init__(self, database: Any, *, keep_tokens: int | None = None) -> None:
        self.messages_ = database["messages"]
        self.counters = database["counters"]
        self.schema = database["labbot_schema"]
        self.keep_tokens = keep_tokens or largest_window()

    async def start(self) -> None:
        """Create the indexes and count the tokens of messages stored before counts were
        (idempotent; the schema version records it)."""
        await guarded(
            self.messages_.create_index(
                [("user", ASCENDING), ("conversation", ASCENDING), ("seq", ASCENDING)]
            )
        )
        found = await guarded(self.schema.find_one({"_id": "messages"}))
        if (found or {}).get("version", 1) >= MESSAGES_SCHEMA:
            return
        async with reading():
            cursor = self.messages_.find({"tokens": {"$exists": False}}, {"message": 1})
            docs = [(doc["_id"], doc["message"]) async for doc in cursor]
        counts = await asyncio.to_thread(lambda: [row_counts(json.loads(m)) for _, m in docs])
        for (key, _), (n, starts) in zip(docs, counts, strict=True):  # once, at the upgrade
            update = {"$set": {"tokens": n, "turn_start": bool(starts)}}
            await guarded(self.messages_.update_one({"_id": key}, update))
        await guarded(
            self.schema.update_one(
                {"_id": "messages"}, {"$set": {"version": MESSAGES_SCHEMA}}, upsert=True
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

    async def recent(self, user: str, conversation: str, budget: int) -> list[Counted]:
        """The newest whole turns within ``budget``, read newest first until one does not fit."""
        query = {"user": user, "conversation": conversation}
        fitter = TurnFitter(budget)
        async with reading():
            cursor = self.messages_.find(query).sort("seq", DESCENDING).batch_size(100)
            async for doc in cursor:  # in batches; stop at the first turn that does not fit
                starts = bool(doc.get("turn_start", False))
                if not fitter.take(doc["message"], doc.get("tokens", 0), starts):
                    break
            await cursor.close()
        return fitter.result()

    async def append(self, user: str, conversation: str, messages: list[Message]) -> None:
        """Add messages at the end with their counts (one insert, in order), then drop the
        oldest turns past ``keep_tokens``."""
        if not messages:
            return
        counts = await asyncio.to_thread(lambda: [row_counts(m) for m in messages])
        first = await self._next_seq(len(messages))
        now = datetime.now(UTC)
        docs = [
            {
                "user": user,
                "conversation": conversation,
                "seq": first + n,
                "message": json.dumps(m, ensure_ascii=False),
                "tokens": count,
                "turn_start": bool(starts),
                "created_at": now,
            }
            for n, (m, (count, starts)) in enumerate(zip(messages, counts, strict=True))
        ]
        await guarded(self.messages_.insert_many(docs, ordered=True))
        query = {"user": user, "conversation": conversation}
        async with reading():
            cursor = self.messages_.find(query, {"seq": 1, "tokens": 1, "turn_start": 1})
            rows = [
                (d["seq"], d.get("tokens", 0), d.get("turn_start", False))
                async for d in cursor.sort("seq", DESCENDING)
            ]
        if sum(count for _, count, _ in rows) <= self.keep_tokens:
            return
        cut = prune_from(rows, int(self.keep_tokens * PRUNE_TO))
        if cut is not None:
            await guarded(self.messages_.delete_many({**query, "seq": {"$lt": cut}}))

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
