"""One conversation turn: a user's message in, a stream of events out. Knows no front end."""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from labbot.chat.budgets import Budgets, Payer, Ticket
from labbot.chat.history import (
    SELECT_MARGIN,
    ConversationStore,
    Message,
    assistant_message,
    bounded_calls,
    fit_counted,
    tool_message,
)
from labbot.chat.images import ModelImages, image_part
from labbot.chat.preferences import Preferences
from labbot.chat.usage import UsageLedger, UsageRecord
from labbot.config import Settings
from labbot.core import (
    Event,
    ExecError,
    ExecutionResult,
    Failed,
    FileProduced,
    Final,
    Status,
    TextDelta,
    ToolFinished,
    ToolOutput,
    ToolStarted,
    Usage,
    progress_to,
)
from labbot.errors import FileNotFound, LabbotError, LLMRequestTooLarge
from labbot.files import FileRecord, FileStore, kind_by_name
from labbot.llm import tokens
from labbot.llm.allowlist import ModelAllowList, ProviderAllowList
from labbot.llm.models import ModelCatalog, ModelInfo
from labbot.llm.prompts import system_prompt
from labbot.llm.protocol import Completion, ModelClient, ToolCall
from labbot.llm.tools import read_call, tool_definition
from labbot.sandbox import Executor
from labbot.sandbox.slots import FairSlots
from labbot.sandbox.slots import Ticket as SlotTicket

log = logging.getLogger(__name__)
# The session previews are made in: a name no front end makes (theirs are "kind:id").
PREVIEW_SESSION = "labbot.previews"

PREVIEW_MAX_BYTES = 64 * 1024 * 1024
WAITING = "waiting for a free"  # how a wait for a slot is named (a progress step → a Status)


class Engine:
    """Runs conversation turns: the model, its one tool, the history, tokens and cost.

    engine = Engine(settings, store=..., executor=..., llm=..., conversations=...,
                    ledger=..., catalog=ModelCatalog())
    async for event in engine.turn("1234", "thread-9", "What is in sales.csv?"):
        ...
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: FileStore,
        executor: Executor,
        llm: ModelClient,
        conversations: ConversationStore,
        preferences: Preferences,
        ledger: UsageLedger,
        catalog: ModelCatalog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.llm = llm
        self.conversations = conversations
        self.preferences = preferences
        self.ledger = ledger
        self.catalog = catalog
        self.clock = clock
        self.budgets = budgets or Budgets(settings, ledger, preferences.admin, now=clock)
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.images = ModelImages(store)
        # Images per request a conversation's provider took after refusing more (HTTP 413).
        self._image_caps: dict[tuple[str, str], int] = {}
        self._models = ProviderAllowList(
            settings, catalog, llm.list_models, store=preferences.admin
        )
        # Model requests at once, for the bot and for each guild, handed out fairly by user.
        self._model_slots = FairSlots(settings.MAX_CONCURRENT_MODEL_REQUESTS)
        self._guild_slots: dict[str, FairSlots] = {}

    async def models(self) -> ModelAllowList:
        """The models users may pick (the provider's list is asked for when needed)."""
        return await self._models.get()

    async def model_for(self, user: str) -> ModelInfo:
        """The user's chosen model while it is allowed, else DEFAULT_MODEL."""
        chosen = (await self.preferences.users.get(user)).model
        if chosen and not (await self.models()).allows(chosen):
            log.warning("model.not_allowed user=%s model=%s", user, chosen[:100])
            chosen = None
        return self.catalog.get(chosen or self.settings.DEFAULT_MODEL)

    async def set_model(self, user: str, name: str | None, *, force: bool = False) -> ModelInfo:
        """Choose the user's model (None: back to the default). Only allowed models; ``force``
        adds the name to the allow-list first (callers decide who may force)."""
        if name is not None:
            name = await (await self.models()).choose(name, force=force, by=user)
        chosen = await self.preferences.users.get(user)
        await self.preferences.users.put(user, replace(chosen, model=name))
        return await self.model_for(user)

    async def reset(self, user: str, conversation: str) -> None:
        """Forget the conversation's history and end its session (files stay)."""
        async with self._lock(user, conversation):
            await self.conversations.clear(user, conversation)
            await self.executor.reset(user, conversation)
            self._image_caps.pop((user, conversation), None)

    def _lock(self, user: str, conversation: str) -> asyncio.Lock:
        key = (user, conversation)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def turn(
        self,
        user: str,
        conversation: str,
        text: str,
        *,
        file_ids: Sequence[str] = (),
        image_ids: Sequence[str] = (),
        payer: Payer | None = None,
    ) -> AsyncIterator[Event]:
        """Answer one message. Turns of one conversation run one at a time; a failure ends
        the stream with an ``error`` event whose text is fit for the user. ``payer`` says
        whose budgets the requests spend and which server's model slots they share
        (MAX_CONCURRENT_MODEL_REQUESTS_PER_GUILD); by default the user's alone, no guild."""
        payer = payer or Payer(user)
        async with self._lock(user, conversation):
            try:
                async for event in self._turn(payer, conversation, text, file_ids, image_ids):
                    yield event
            except LabbotError as exc:
                log.warning("turn.failed user=%s kind=%s", user, type(exc).__name__)
                yield Failed(str(exc))

    async def _turn(
        self,
        payer: Payer,
        conversation: str,
        text: str,
        file_ids: Sequence[str],
        image_ids: Sequence[str],
    ) -> AsyncIterator[Event]:
        user = payer.user
        model = await self.model_for(user)
        attached = await self._live(user, file_ids)
        images = [r.id for r in await self._live(user, image_ids)]
        await self._preview(user, conversation, attached)
        await self.conversations.append(
            user, conversation, [await self._user_message(user, text, attached, images)]
        )
        rounds = self.settings.MAX_TOOL_ROUNDS
        for round_ in range(rounds + 1):
            use_tools = model.tools and round_ < rounds
            answered: list[tuple[list[Message], Completion, Ticket]] = []
            async for event in self._ask(payer, conversation, model, use_tools, answered):
                yield event
            ((request, completion, ticket),) = answered
            for event in await self._account(conversation, model, request, completion, ticket):
                yield event
            calls = bounded_calls(
                completion.tool_calls if use_tools else [],
                self.settings.MAX_TOOL_CALLS_PER_ROUND,
            )
            await self.conversations.append(
                user, conversation, [assistant_message(completion.text, calls)]
            )
            if not calls:
                yield Final(completion.text)
                return
            for call, refused in calls:
                code, problem = (None, refused) if refused else read_call(call.name, call.arguments)
                if code is None:
                    yield await self._refuse(user, conversation, call, str(problem))
                    continue
                async for event in self._run_code(payer, conversation, call, code):
                    yield event

    async def _ask(
        self,
        payer: Payer,
        conversation: str,
        model: ModelInfo,
        use_tools: bool,
        answered: list[tuple[list[Message], Completion, Ticket]],
    ) -> AsyncIterator[Event]:
        """One request to the model, within the payer's budgets: its text as events, then the
        request, completion and budget ticket go in ``answered``. A request refused as too
        large goes again with half the images."""
        user = payer.user
        while True:
            request, images, counted = await self._request(user, conversation, model, use_tools)
            ticket = await self.budgets.reserve(payer, model, input_tokens=counted)
            completion: Completion | None = None
            slot_tickets: list[tuple[FairSlots, SlotTicket]] = []
            try:
                for slots, what in self._model_gates(payer.guild):
                    slot = slots.enter(user)
                    slot_tickets.append((slots, slot))
                    if not slot.granted:
                        log.info("model.waiting user=%s busy=%d", user, slots.busy)
                        yield Status(slots.why_wait(user, what, "requests"))
                        await slot.wait()
                async for piece in self.llm.stream(
                    model, request, tools=[tool_definition()] if use_tools else None
                ):
                    if isinstance(piece, str):
                        yield TextDelta(piece)
                    else:
                        completion = piece
            except BaseException as exc:
                await self.budgets.release(ticket)
                if not isinstance(exc, LLMRequestTooLarge) or images == 0:
                    raise
                keep = images // 2
                self._image_caps[(user, conversation)] = keep
                log.warning("turn.too_large user=%s images=%d kept=%d", user, images, keep)
                yield Status(
                    "The model API refused the request as too large (HTTP 413): I left out the"
                    f" {images - keep} oldest image(s) of this conversation (they stay in your"
                    " files) and asked again."
                )
                continue
            finally:
                self._leave_gates(payer.guild, slot_tickets)
            assert completion is not None
            answered.append((request, completion, ticket))
            return

    def _model_gates(self, guild: str | None) -> list[tuple[FairSlots, str]]:
        """The slots a model request needs, in order: its guild's, then the bot's."""
        gates = [(self._model_slots, "model slot")]
        if guild is not None:
            slots = self._guild_slots.get(guild)
            if slots is None:
                size = self.settings.MAX_CONCURRENT_MODEL_REQUESTS_PER_GUILD
                slots = self._guild_slots[guild] = FairSlots(size)
            gates.insert(0, (slots, "model slot of this server"))
        return gates

    def _leave_gates(self, guild: str | None, tickets: list[tuple[FairSlots, SlotTicket]]) -> None:
        for slots, slot in reversed(tickets):
            slot.leave()
            if slots is not self._model_slots and not slots.busy and not slots.waiting:
                self._guild_slots.pop(guild or "", None)  # an idle guild is forgotten

    async def _live(self, user: str, file_ids: Sequence[str]) -> list[FileRecord]:
        """The records of these files still there: one removed since it was attached (deleted,
        evicted by a later upload) is left out of the turn, which goes on without it."""
        live = []
        for file_id in file_ids:
            try:
                live.append(await self.store.get(user, file_id))
            except FileNotFound:
                log.info("turn.attachment_gone user=%s id=%s", user, file_id)
        return live

    async def _user_message(
        self,
        user: str,
        text: str,
        attached: list[FileRecord],
        image_ids: Sequence[str],
    ) -> Message:
        body = text
        if attached:
            names = ", ".join(f"{r.name} (id {r.id})" for r in attached)
            body += f"\n\n[The user attached: {names}]"
        if not image_ids:  # kept by id even for a model that cannot see: the request notes
            return {"role": "user", "content": body}  # it, and a later model may see it
        parts: list[dict[str, Any]] = [{"type": "text", "text": body}]
        for image_id in image_ids:
            parts.append(image_part(image_id, await self.images.size(user, image_id)))
        return {"role": "user", "content": parts}

    async def _preview(self, user: str, conversation: str, records: list[FileRecord]) -> None:
        """Compute the schema preview of new tables once, in the sandbox, and store it.

        In a session of its own, ended after: never one the model's code ran in, which could
        have changed how previews are made (a preview is stored with the file and shown in
        every later conversation's system prompt)."""
        todo = [
            record
            for record in records
            if not record.preview
            and kind_by_name(record.kind).is_table
            and record.size <= PREVIEW_MAX_BYTES
        ]
        if not todo:
            return
        try:
            for record in todo:
                code = f"print(__import__('loaders').preview(load_file({record.id!r})))"
                result = await self.executor.run(user, PREVIEW_SESSION, code)
                if result.status == "ok" and result.stdout.strip():
                    await self.store.set_preview(user, record.id, result.stdout.strip())
        finally:
            await self.executor.reset(user, PREVIEW_SESSION)

    async def _request(
        self, user: str, conversation: str, model: ModelInfo, use_tools: bool
    ) -> tuple[list[Message], int, int]:
        """System prompt + history trimmed to fit the window (images counted by their size),
        then the newest images made ready to send; returns it, how many images it holds and
        its input tokens as counted."""
        files = await self.store.list(user)
        system = system_prompt(files, now=self.clock(), timezone=self.settings.TIMEZONE)
        tools = [tool_definition()] if use_tools else None
        budget = model.context_window - min(self.settings.MAX_OUTPUT_TOKENS, model.max_output)
        fixed = {"role": "system", "content": system}  # the system prompt and tools, counted once
        fixed_tokens = await asyncio.to_thread(
            tokens.count_messages, [fixed], model.name, tools=tools
        )
        budget -= fixed_tokens
        # Stored counts, summed newest turn first: reads and counts only what can be sent.
        counted = await self.conversations.recent(user, conversation, int(budget * SELECT_MARGIN))
        history, history_tokens = await asyncio.to_thread(fit_counted, counted, budget, model.name)
        used = fixed_tokens + history_tokens
        messages = _with_system(system, history, model)
        cap = self._image_caps.get((user, conversation), sys.maxsize)
        limit = min(self.settings.MAX_IMAGES_PER_REQUEST, cap)
        expanded, images = await self.images.expand(user, messages, model=model, limit=limit)
        return expanded, images, used

    async def _account(
        self,
        conversation: str,
        model: ModelInfo,
        request: list[Message],
        completion: Completion,
        ticket: Ticket,
    ) -> list[Event]:
        """Record the request's tokens and cost (settling its budget ticket); estimate what was
        not reported. The usage event, then a warning for each limit passed 80%."""
        usage = completion.usage
        if usage is None:
            prompt = await asyncio.to_thread(tokens.count_messages, request, model.name)
            output = await asyncio.to_thread(tokens.count_text, completion.text, model.name)
            input_tokens, cached, output_tokens, estimated = prompt, 0, output, True
        else:
            input_tokens, cached = usage.input_tokens, usage.cached_tokens
            output_tokens, estimated = usage.output_tokens, False
        cost = tokens.estimate_cost(
            model.name, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached
        )
        warnings = await self.budgets.settle(
            ticket,
            UsageRecord(
                user=ticket.payer.user,
                conversation=conversation,
                model=model.name,
                input_tokens=input_tokens,
                cached_tokens=cached,
                output_tokens=output_tokens,
                cost_usd=cost,
                estimated=estimated,
                duration_ms=completion.duration_ms,
            ),
        )
        event = Usage(
            model=model.name,
            input_tokens=input_tokens,
            cached_tokens=cached,
            output_tokens=output_tokens,
            estimated=estimated,
            cost_usd=None if cost is None else str(cost),
        )
        return [event, *warnings]

    async def _refuse(
        self, user: str, conversation: str, call: ToolCall, problem: str
    ) -> ToolFinished:
        """Answer a call that is not run (the model reads why); nothing reaches the sandbox."""
        log.info("tool.refused user=%s arguments=%d", user, len(call.arguments))
        result = ExecutionResult(status="error", error=ExecError("ToolError", problem))
        await self.conversations.append(
            user, conversation, [tool_message(call.id, result.to_json())]
        )
        return ToolFinished(call.id, result)

    async def _run_code(
        self, payer: Payer, conversation: str, call: ToolCall, code: str
    ) -> AsyncIterator[Event]:
        user = payer.user
        yield ToolStarted(call.id, code)
        queue: asyncio.Queue[Event] = asyncio.Queue()

        async def on_output(stream: str, text: str) -> None:
            name: Literal["stdout", "stderr"] = "stderr" if stream == "stderr" else "stdout"
            queue.put_nowait(ToolOutput(call.id, name, text))

        def on_progress(name: str, *, started: bool) -> None:
            if started and name.startswith(WAITING):  # e.g. for a free sandbox slot: say why
                queue.put_nowait(Status(name))

        with progress_to(on_progress):  # the task copies the context: the hook goes with it
            task = asyncio.create_task(
                self.executor.run(user, conversation, code, on_output=on_output)
            )
        getter: asyncio.Future[Event] | None = None
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    event, getter = getter.result(), None
                    yield event
                else:
                    getter.cancel()
                    getter = None
            outcome: ExecutionResult = task.result()
            await self.budgets.executed(payer, conversation, outcome)
        finally:
            if getter is not None:  # cancelled while waiting: no pending get left behind
                getter.cancel()
            if not task.done():  # the turn was cancelled (/stop): stop the code too
                await self.executor.stop(user, conversation)
                task.cancel()
        for produced in outcome.files:
            yield FileProduced(call.id, produced)
        await self.conversations.append(
            user, conversation, [tool_message(call.id, outcome.to_json())]
        )
        yield ToolFinished(call.id, outcome)


def _with_system(system: str, history: list[Message], model: ModelInfo) -> list[Message]:
    """The request's messages; a model without a system role gets it in the first user turn."""
    if model.system_role != "none":
        return [{"role": model.system_role, "content": system}, *history]
    messages = list(history)
    for i, message in enumerate(messages):
        if message.get("role") == "user":
            content = message["content"]
            if isinstance(content, str):
                content = f"{system}\n\n{content}"
            else:
                content = [{"type": "text", "text": system}, *content]
            messages[i] = {**message, "content": content}
            break
    return messages
