"""Conversations: every message of a turn (tool calls and results included) in the database,
trimmed by tokens to fit the model's window. (Users' settings, reply links and admins' lists
live in preferences.py; the ``preferences`` table made here is what they were moved from.)

Each message is stored with its token count (by COUNTING_MODEL's rules), so a request is fitted
by a running sum, newest turn first, reading only the turns that fit: its preparation does not
grow with the conversation's length. What is stored is pruned past the largest window any model
offers (whole turns, oldest first).

What history keeps is bounded: a tool result is cut field by field and as a whole, a call's
arguments are kept only when they are valid JSON within the tool's limit, and rows stored before
these bounds are cut again when read, so nothing oversized is re-sent every round."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from labbot.llm import tokens
from labbot.llm.models import ModelCatalog
from labbot.llm.tools import MAX_ARGUMENT_CHARS
from labbot.sqlite import SqliteDatabase, to_us

if TYPE_CHECKING:
    from labbot.llm.client import ToolCall

Message = dict[str, Any]

MAX_TOOL_MESSAGE = 24_000  # characters of a whole tool result as stored and re-sent
MAX_TOOL_TEXT = 6000  # characters of any one string of a tool result (its head and tail)
MAX_TOOL_FIELDS = 12  # fields of an object kept (a result has 11)
MAX_KEY = 100  # characters of a field name
MAX_ANSWER_CHARS = 64_000  # characters of the model's text kept per answer (its head and tail)
MAX_CALL_ID = 64  # characters of a tool call's id; longer ones are refused
MAX_CALLS_KEPT = 64  # tool calls of one round kept and answered; the rest are dropped
# Tried in turn until the result fits: (characters per string, items per list, nesting kept).
# The last always fits: 12 fields of at most 100 + 100 characters.
_CUTS = ((MAX_TOOL_TEXT, 20, 4), (3000, 10, 4), (1500, 5, 4), (750, 3, 3), (300, 2, 2), (100, 2, 1))


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


def _m102_message_tokens(db: sqlite3.Connection) -> None:
    # Every message's tokens and whether it starts a turn, so a request reads only what fits.
    db.execute("ALTER TABLE messages ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE messages ADD COLUMN turn_start INTEGER NOT NULL DEFAULT 0")
    rows = db.execute("SELECT seq, message FROM messages").fetchall()
    counted = [(*row_counts(json.loads(raw)), seq) for seq, raw in rows]
    db.executemany("UPDATE messages SET tokens = ?, turn_start = ? WHERE seq = ?", counted)


MIGRATIONS = [_m101_conversations, _m102_message_tokens]
COUNTING_MODEL = "gpt-4o"  # stored counts follow its rules (o200k_base); others are recounted
SELECT_MARGIN = 1.25  # what a store hands over, over the budget: other rules may count less
PRUNE_TO = 0.9  # past keep_tokens, prune to this share of it: a scan per tenth, not per turn


@cache
def largest_window() -> int:
    """The largest context window of any model in the built-in table: history kept past it
    can never be sent."""
    catalog = ModelCatalog()
    return max(catalog.get(name).context_window for name in catalog.names())


@dataclass(frozen=True, slots=True)
class Counted:
    """A stored message and its tokens in a request (COUNTING_MODEL's rules)."""

    message: Message
    tokens: int


def message_tokens(message: Message, model: str = COUNTING_MODEL) -> int:
    """The tokens ``message`` adds to a request for ``model`` (counts add up exactly)."""
    return tokens.count_messages([message], model) - tokens.REPLY_PRIMER


def row_counts(message: Message) -> tuple[int, int]:
    """A message's stored tokens (as it is re-sent: bounded) and whether it starts a turn."""
    return message_tokens(_bounded(message)), int(message.get("role") == "user")


class TurnFitter:
    """Takes stored rows newest first and keeps the newest whole turns whose tokens sum within
    ``budget`` (always the newest turn); ``take`` says when to stop reading. Only what it
    keeps is parsed."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.total = self._pending = 0
        self._kept: list[tuple[str, int]] = []
        self._turn: list[tuple[str, int]] = []
        self.full = False

    def take(self, raw: str, count: int, *, starts: bool) -> bool:
        """Add the next older row; False once a turn did not fit (read no further)."""
        self._turn.append((raw, count))
        self._pending += count
        if starts:
            if self._kept and self.total + self._pending > self.budget:
                self.full = True
                return False
            self._kept.extend(self._turn)
            self.total += self._pending
            self._turn, self._pending = [], 0
        return True

    def result(self) -> list[Counted]:
        """The kept messages, oldest first."""
        kept = list(self._kept)
        turn = self._turn
        if turn and not self.full and (not kept or self.total + self._pending <= self.budget):
            kept.extend(turn)  # messages before the first question
        return [Counted(json.loads(raw), count) for raw, count in reversed(kept)]


def newest_that_fit(rows: Iterable[tuple[str, int, int]], budget: int) -> list[Counted]:
    """From (message JSON, tokens, starts a turn) rows, newest first: what ``TurnFitter``
    keeps, reading no further than the first turn that does not fit."""
    fitter = TurnFitter(budget)
    for raw, count, starts in rows:
        if not fitter.take(raw, count, starts=bool(starts)):
            break
    return fitter.result()


def fit(counted: list[Counted], budget: int, model: str) -> list[Message]:
    """The history to send to ``model``: made valid (``repair``), then whole turns, newest
    first, while their tokens sum within ``budget`` (always the newest turn). Stored counts are
    used where ``model`` counts alike; images and changed messages are counted again."""
    return fit_counted(counted, budget, model)[0]


def fit_counted(counted: list[Counted], budget: int, model: str) -> tuple[list[Message], int]:
    """``fit``, and the tokens of the history it keeps."""
    reuse = _counts_alike(model)
    stored = {id(c.message): c.tokens for c in counted}
    sized = []
    for message in repair([c.message for c in counted]):
        count = stored.get(id(message)) if reuse and not _has_images(message) else None
        sized.append((message, message_tokens(message, model) if count is None else count))
    groups: list[list[tuple[Message, int]]] = []
    for message, count in sized:
        if message.get("role") == "user" or not groups:
            groups.append([])
        groups[-1].append((message, count))
    kept: list[list[tuple[Message, int]]] = []
    total = 0
    for group in reversed(groups):
        size = sum(count for _, count in group)
        if kept and total + size > budget:
            break
        kept.append(group)
        total += size
    return [message for group in reversed(kept) for message, _ in group], total


@cache
def _counts_alike(model: str) -> bool:
    probe = [{"role": "user", "content": "x"}]
    return tokens.encoding_name(model) == tokens.encoding_name(COUNTING_MODEL) and (
        tokens.count_messages(probe, model) == tokens.count_messages(probe, COUNTING_MODEL)
    )


def _has_images(message: Message) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in tokens.IMAGE_PART_TYPES for p in content
    )


def prune_from(rows: Iterable[tuple[int, int, int]], keep_tokens: int) -> int | None:
    """From (seq, tokens, starts a turn) rows, newest first: the seq of the oldest turn start
    whose turns (with all after it) sum within ``keep_tokens``; rows before it can go. None:
    nothing to prune."""
    total = 0
    cut = None
    for seq, count, starts in rows:
        total += count
        if total > keep_tokens:
            return cut
        if starts:
            cut = seq
    return None


class ConversationStore(Protocol):
    """Where conversations live."""

    async def start(self) -> None:
        """Create or migrate the schema; idempotent."""

    async def messages(self, user: str, conversation: str) -> list[Message]:
        """The conversation's messages, oldest first (tool turns made valid, see ``repair``)."""

    async def recent(self, user: str, conversation: str, budget: int) -> list[Counted]:
        """The newest whole turns whose stored tokens sum within ``budget`` (always the newest
        turn), oldest first, with their counts (``fit`` makes them exact for a model)."""

    async def append(self, user: str, conversation: str, messages: list[Message]) -> None:
        """Add messages at the end with their token counts, atomically; then drop the oldest
        turns past the store's ``keep_tokens``."""

    async def clear(self, user: str, conversation: str) -> int:
        """Forget a conversation; returns how many messages went."""


class SqliteConversationStore:
    """ConversationStore on the shared SQLite database."""

    def __init__(self, db: SqliteDatabase, *, keep_tokens: int | None = None) -> None:
        self.db = db
        self.keep_tokens = keep_tokens or largest_window()

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

    async def recent(self, user: str, conversation: str, budget: int) -> list[Counted]:
        """The newest whole turns within ``budget``, read newest first until one does not fit."""

        def read(db: sqlite3.Connection) -> list[Counted]:
            cursor = db.execute(
                "SELECT message, tokens, turn_start FROM messages"
                " WHERE user = ? AND conversation = ? ORDER BY seq DESC",
                (user, conversation),
            )
            return newest_that_fit(cursor, budget)

        return await self.db.run(read, write=False)

    async def append(self, user: str, conversation: str, messages: list[Message]) -> None:
        """Add messages at the end with their counts in one transaction, pruning past
        ``keep_tokens`` in the same one."""
        now = to_us(datetime.now(UTC))
        counts = await asyncio.to_thread(lambda: [row_counts(m) for m in messages])
        rows = [
            (user, conversation, json.dumps(m, ensure_ascii=False), now, *count)
            for m, count in zip(messages, counts, strict=True)
        ]

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO messages (user, conversation, message, created_us, tokens,"
                " turn_start) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            (total,) = db.execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM messages WHERE user = ? AND conversation = ?",
                (user, conversation),
            ).fetchone()
            if total <= self.keep_tokens:
                return
            cursor = db.execute(
                "SELECT seq, tokens, turn_start FROM messages"
                " WHERE user = ? AND conversation = ? ORDER BY seq DESC",
                (user, conversation),
            )
            cut = prune_from(cursor, int(self.keep_tokens * PRUNE_TO))
            if cut is not None:
                db.execute(
                    "DELETE FROM messages WHERE user = ? AND conversation = ? AND seq < ?",
                    (user, conversation, cut),
                )

        await self.db.run(write, write=True)

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


def repair(messages: list[Message]) -> list[Message]:
    """Make a stored history valid for the API: every assistant tool call gets its result
    (a crash between the call and its result leaves one missing), stray results go, and rows
    stored before history was bounded are cut to the bounds."""
    fixed: list[Message] = []
    pending: list[str] = []
    for message in map(_bounded, messages):
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


def tool_message(call_id: str, result: Any) -> Message:
    """A tool result as history stores and re-sends it: every field and the whole bounded."""
    return {"role": "tool", "tool_call_id": call_id, "content": bounded_json(result)}


def bounded_calls(calls: Sequence[ToolCall], run_limit: int) -> list[tuple[ToolCall, str | None]]:
    """A round's calls as history keeps and answers them, each with why it is not run (None:
    it may run, once ``read_call`` agrees). At most MAX_CALLS_KEPT (the rest are dropped);
    an id over MAX_CALL_ID characters is refused and replaced by a short one; the calls past
    ``run_limit`` are refused."""
    screened: list[tuple[ToolCall, str | None]] = []
    for n, call in enumerate(calls[:MAX_CALLS_KEPT]):
        why = None
        if not 0 < len(call.id) <= MAX_CALL_ID:
            why = (
                f"Not run: the call's id is {len(call.id):,} characters; ids are 1 to"
                f" {MAX_CALL_ID} characters."
            )
            call = replace(call, id=short_call_id(call.id))
        elif n >= run_limit:
            why = (
                f"Not run: too many calls in one round (limit {run_limit}). Run the rest in your"
                " next round, or combine them into one call."
            )
        screened.append((call, why))
    return screened


def short_call_id(call_id: str) -> str:
    """A call id as history keeps it: as given within MAX_CALL_ID characters, else a short id
    made from it (the same for the call and its result)."""
    if 0 < len(call_id) <= MAX_CALL_ID:
        return call_id
    return "call_" + hashlib.sha256(call_id.encode("utf-8", "replace")).hexdigest()[:32]


def assistant_message(text: str, calls: Sequence[tuple[ToolCall, str | None]]) -> Message:
    """The model's answer as history stores it: the text cut to MAX_ANSWER_CHARS; the
    arguments (``stored_arguments``) of the calls that may run, a placeholder for the refused
    (``bounded_calls`` gives both)."""
    message: Message = {"role": "assistant", "content": _cut_text(text, MAX_ANSWER_CHARS) or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.name[:64],
                    "arguments": stored_arguments(c.arguments) if why is None else _not_run(c),
                },
            }
            for c, why in calls
        ]
    return message


def _not_run(call: ToolCall) -> str:
    return json.dumps({"not_kept": f"{len(call.arguments):,} characters of arguments, not run"})


def stored_arguments(arguments: str) -> str:
    """A call's arguments as history keeps them: as sent when valid JSON within the tool's limit,
    else a short placeholder (still JSON, so later requests stay well-formed)."""
    if len(arguments) > MAX_ARGUMENT_CHARS:
        why = "over the size limit"
    else:
        try:
            json.loads(arguments or "{}")
            return arguments or "{}"
        except (ValueError, RecursionError):
            why = "not valid JSON"
    return json.dumps({"not_kept": f"{len(arguments):,} characters of arguments, {why}"})


def bounded_json(value: Any) -> str:
    """``value`` as JSON of at most MAX_TOOL_MESSAGE characters: strings cut to head and tail,
    lists and objects to their first items, deep nesting dropped; cut tighter until it fits."""
    for text, items, depth in _CUTS:
        dumped = json.dumps(_cut(value, text, items, depth), ensure_ascii=False)
        if len(dumped) <= MAX_TOOL_MESSAGE:
            return dumped
    return json.dumps({"status": "error", "notes": ["The result was too large to keep."]})


def _cut(value: Any, text: int, items: int, depth: int) -> Any:
    if isinstance(value, str):
        return _cut_text(value, text)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else "[a number too large to keep]"
    if depth <= 0:
        return "[... nested too deep, cut ...]"
    if isinstance(value, dict):
        kept = {
            _cut_text(str(k), MAX_KEY): _cut(v, text, items, depth - 1)
            for k, v in islice(value.items(), MAX_TOOL_FIELDS)
        }
        if len(value) > MAX_TOOL_FIELDS:
            kept["..."] = f"[... {len(value) - MAX_TOOL_FIELDS} more fields cut ...]"
        return kept
    if isinstance(value, list | tuple):
        cut = [_cut(v, text, items, depth - 1) for v in islice(value, items)]
        if len(value) > items:
            cut.append(f"[... {len(value) - items} more items cut ...]")
        return cut
    return _cut_text(str(value), text)


def _cut_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} chars cut ...]\n{text[-half:]}"


def _bounded(message: Message) -> Message:
    """A stored message cut to the bounds (rows written before there were any)."""
    content = message.get("content")
    if message.get("role") == "tool" and isinstance(content, str):
        call_id = short_call_id(str(message.get("tool_call_id") or ""))
        if len(content) <= MAX_TOOL_MESSAGE and call_id == message.get("tool_call_id"):
            return message
        if len(content) > MAX_TOOL_MESSAGE:
            try:
                content = bounded_json(json.loads(content))
            except (ValueError, RecursionError):
                content = bounded_json(content)
        return {**message, "tool_call_id": call_id, "content": content}
    if message.get("role") != "assistant":
        return message
    if isinstance(content, str) and len(content) > MAX_ANSWER_CHARS:
        message = {**message, "content": _cut_text(content, MAX_ANSWER_CHARS)}
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        kept = []
        for call in calls[:MAX_CALLS_KEPT]:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            arguments = stored_arguments(arguments if isinstance(arguments, str) else "")
            name = str(function.get("name") or "")[:64]
            call_id = short_call_id(str(call.get("id") or ""))
            function = {**function, "name": name, "arguments": arguments}
            kept.append({**call, "id": call_id, "function": function})
        # the same object when nothing changed: its stored token count still holds
        return message if kept == calls else {**message, "tool_calls": kept}
    return message
