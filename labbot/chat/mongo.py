"""Conversations and the usage ledger on MongoDB (same contracts as SQLite)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

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
from labbot.chat.usage import (
    HOLD_SECONDS,
    NANO,
    QUARTER_US,
    ExecutionRecord,
    ExecutionRow,
    Hold,
    ModelUsage,
    RequestRow,
    Spent,
    UsageRecord,
    Window,
    fits,
    nanos,
)
from labbot.errors import StorageError
from labbot.files.meta.mongo import guarded, reading
from labbot.sqlite import from_us, to_us

LOCK_SECONDS = 30.0  # a budget lock a crashed process left behind is free again after this
LOCK_WAIT_SECONDS = 10.0

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
                if not fitter.take(doc["message"], doc.get("tokens", 0), starts=starts):
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
    """UsageLedger on ``usage``, ``usage_holds`` and ``executions`` (costs as decimal strings,
    summed exactly). A reservation holds a lease document per user (and guild) in
    ``usage_locks`` while it measures and keeps its hold: MongoDB's single-document atomicity,
    no multi-document transaction (a standalone server has none)."""

    def __init__(self, database: Any) -> None:
        self.usage = database["usage"]
        self.holds = database["usage_holds"]
        self.executions_ = database["executions"]
        self.locks = database["usage_locks"]
        self.spent = database["usage_spent"]  # per user and guild per quarter hour

    async def start(self) -> None:
        """Create the indexes (idempotent)."""
        await guarded(self.usage.create_index([("user", ASCENDING), ("model", ASCENDING)]))
        for field in ("user", "guild"):
            await guarded(self.usage.create_index([(field, ASCENDING), ("created_us", ASCENDING)]))
        await guarded(self.usage.create_index([("created_us", ASCENDING)]))
        await guarded(self.executions_.create_index([("created_us", ASCENDING)]))
        await guarded(
            self.spent.create_index(
                [("scope", ASCENDING), ("key", ASCENDING), ("quarter", ASCENDING)]
            )
        )
        try:  # the first start fills usage_spent from the requests recorded before it existed
            await guarded(self.spent.insert_one({"_id": "_built"}))
        except StorageError as exc:
            if not isinstance(exc.__cause__, DuplicateKeyError):
                raise
            return
        async with reading():
            async for doc in self.usage.find({}):
                await self._add_spent(_record(doc), doc["created_us"])

    async def record(self, entry: UsageRecord, *, at: datetime | None = None) -> None:
        """Add one request."""
        when = at or datetime.now(UTC)
        await guarded(self.usage.insert_one(_usage_doc(entry, when)))
        await self._add_spent(entry, to_us(when))

    async def _add_spent(self, entry: UsageRecord, at_us: int) -> None:
        """Count a request in its quarter hour's documents (the user's, the guild's)."""
        tokens = entry.input_tokens + entry.output_tokens
        amounts = (
            {"nanos": 0, "tokens": tokens}
            if entry.cost_usd is None
            else {"nanos": nanos(entry.cost_usd), "tokens": 0}
        )
        quarter = at_us // QUARTER_US
        for scope, key in (("user", entry.user), ("guild", entry.guild)):
            if key is None:
                continue
            where = {"_id": f"{scope}\x00{key}\x00{quarter}"}
            fields = {"scope": scope, "key": key, "quarter": quarter}
            await guarded(
                self.spent.update_one(where, {"$inc": amounts, "$setOnInsert": fields}, upsert=True)
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

    @asynccontextmanager
    async def _locked(self, keys: Sequence[str]) -> AsyncIterator[None]:
        """Hold the lease of every key (in sorted order, so two callers never deadlock)."""
        token, taken = uuid.uuid4().hex, []
        try:
            for key in sorted(set(keys)):
                await self._acquire(key, token)
                taken.append(key)
            yield
        finally:
            for key in taken:
                await guarded(self.locks.update_one({"_id": key, "holder": token}, _FREE))

    async def _acquire(self, key: str, token: str) -> None:
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + LOCK_WAIT_SECONDS, 0.002
        while True:
            now = datetime.now(UTC)  # a lease, timed by this machine's clock
            free = {"_id": key, "$or": [{"holder": None}, {"until": {"$lt": now}}]}
            taken = {"$set": {"holder": token, "until": now + timedelta(seconds=LOCK_SECONDS)}}
            try:
                await guarded(self.locks.update_one(free, taken, upsert=True))
                return
            except StorageError as exc:  # a duplicate key: another request holds it, wait
                if not isinstance(exc.__cause__, DuplicateKeyError):
                    raise
            if loop.time() > deadline:
                raise StorageError("The database is busy; nothing was changed.", hint="Try again.")
            await asyncio.sleep(pause)  # a back-off between attempts, not a synchronisation
            pause = min(pause * 2, 0.1)

    async def reserve(self, hold: Hold, windows: Sequence[Window], *, now: datetime) -> list[Spent]:
        """Measure and keep the hold under the user's (and guild's) lease."""
        keys = [f"{w.scope}:{w.key}" for w in windows if hold.counts_in(w)]
        async with self._locked(keys):
            await guarded(self.holds.delete_many({"created_us": {"$lt": _stale(now)}}))
            spent = await self.measure(windows, now=now)
            if fits(hold, spent):
                doc = {
                    "_id": hold.id,
                    "user": hold.user,
                    "guild": hold.guild,
                    "priced": hold.priced,
                    "amount": str(hold.amount),
                    "created_us": to_us(now),
                }
                await guarded(self.holds.insert_one(doc))
        return spent

    async def settle(
        self, hold_id: str, entry: UsageRecord, windows: Sequence[Window], *, now: datetime
    ) -> list[Spent]:
        """Add the request's row, then drop its hold (counted twice for a moment: never under)."""
        await self.record(entry, at=now)
        await self.release(hold_id)
        return await self.measure(windows, now=now)

    async def release(self, hold_id: str) -> None:
        """Drop a hold."""
        await guarded(self.holds.delete_one({"_id": hold_id}))

    async def measure(self, windows: Sequence[Window], *, now: datetime) -> list[Spent]:
        """What each window has spent and holds now."""
        found = []
        for window in windows:
            query: dict[str, Any] = {
                window.scope: window.key,
                "created_us": {"$gte": to_us(window.since)},
            }
            query["cost_usd"] = {"$ne": None} if window.unit == "usd" else None
            used = Decimal(0)
            since = to_us(window.since)
            async with reading():
                if since % QUARTER_US == 0:  # on a quarter hour: the running sums
                    measure = "nanos" if window.unit == "usd" else "tokens"
                    sums = {
                        "scope": window.scope,
                        "key": window.key,
                        "quarter": {"$gte": since // QUARTER_US},
                    }
                    total = sum([doc[measure] async for doc in self.spent.find(sums)])
                    used = Decimal(total) * NANO if window.unit == "usd" else Decimal(total)
                else:
                    async for doc in self.usage.find(query):
                        if window.unit == "usd":
                            used += Decimal(doc["cost_usd"])
                        else:
                            used += doc["input_tokens"] + doc["output_tokens"]
                held = Decimal(0)
                holds = {
                    window.scope: window.key,
                    "priced": window.unit == "usd",
                    "created_us": {"$gte": _stale(now)},
                }
                async for doc in self.holds.find(holds):
                    held += Decimal(doc["amount"])
            found.append(Spent(window, used, held))
        return found

    async def record_execution(self, entry: ExecutionRecord, *, at: datetime) -> None:
        """Add one execution."""
        doc = {
            "user": entry.user,
            "guild": entry.guild,
            "conversation": entry.conversation,
            "status": entry.status,
            "duration_ms": entry.duration_ms,
            "created_us": to_us(at),
        }
        await guarded(self.executions_.insert_one(doc))

    async def requests(self, since: datetime) -> list[RequestRow]:
        """Every request made since ``since``, oldest first."""
        async with reading():
            cursor = self.usage.find({"created_us": {"$gte": to_us(since)}}).sort(
                "created_us", ASCENDING
            )
            return [
                RequestRow(
                    d["user"],
                    d.get("guild"),
                    d["model"],
                    d["input_tokens"],
                    d["output_tokens"],
                    None if d.get("cost_usd") is None else Decimal(d["cost_usd"]),
                    from_us(d["created_us"]),
                )
                async for d in cursor
            ]

    async def executions(self, since: datetime) -> list[ExecutionRow]:
        """Every execution since ``since``, oldest first."""
        async with reading():
            cursor = self.executions_.find({"created_us": {"$gte": to_us(since)}}).sort(
                "created_us", ASCENDING
            )
            return [
                ExecutionRow(d["user"], d.get("guild"), d["status"], from_us(d["created_us"]))
                async for d in cursor
            ]


_FREE = {"$set": {"holder": None}}


def _stale(now: datetime) -> int:
    return to_us(now - timedelta(seconds=HOLD_SECONDS))


def _record(doc: dict[str, Any]) -> UsageRecord:
    """A stored request as a UsageRecord (what usage_spent counts of it)."""
    cost = doc.get("cost_usd")
    return UsageRecord(
        user=doc["user"],
        conversation=doc["conversation"],
        model=doc["model"],
        input_tokens=doc["input_tokens"],
        cached_tokens=doc["cached_tokens"],
        output_tokens=doc["output_tokens"],
        cost_usd=None if cost is None else Decimal(cost),
        estimated=doc["estimated"],
        duration_ms=doc["duration_ms"],
        guild=doc.get("guild"),
    )


def _usage_doc(entry: UsageRecord, at: datetime) -> dict[str, Any]:
    return {
        "user": entry.user,
        "guild": entry.guild,
        "conversation": entry.conversation,
        "model": entry.model,
        "input_tokens": entry.input_tokens,
        "cached_tokens": entry.cached_tokens,
        "output_tokens": entry.output_tokens,
        "cost_usd": None if entry.cost_usd is None else str(entry.cost_usd),
        "estimated": entry.estimated,
        "duration_ms": entry.duration_ms,
        "created_at": at,
        "created_us": to_us(at),
    }
