"""RemoteExecutor: the bot's side of running code on worker machines over NATS.

Affinity: a conversation's session lives on one worker, named in the JetStream KV bucket
``labbot_sessions`` (TTL = the idle timeout). New sessions go to the live, non-draining worker
with room that holds the fewest sessions as the bot counts them (``SessionLedger``: never the
worker's own word), placed with compare-and-set so two bot processes never place one session
twice. Failure: a worker with no subscriber ("no responders") or silent for
LABBOT_HOST_DEAD_AFTER_S is lost. The session is placed again, the code runs on a fresh
interpreter, and the model is told why. Earlier cells are never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import (
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)

from labbot.config import MIB, Settings
from labbot.core import ExecError, ExecutionResult
from labbot.errors import SandboxUnavailable
from labbot.files import FileStore
from labbot.remote import bus, wire
from labbot.remote import ledger as session_ledger
from labbot.remote.checkpoints import register, shipped
from labbot.remote.hosts import (
    HostState,
    HostTable,
    host_of_subject,
    valid_host,
)
from labbot.remote.rpc import (
    HOST_LOST_NOTE,
    HOST_LOST_RESTORED_NOTE,
    HOST_MOVED_NOTE,
    HOST_RESTARTED_NOTE,
    HostLost,
    NoAnswer,
    Refused,
    control,
    ctl_request,
    exec_request,
    read_reply,
    to_result,
)
from labbot.remote.stream import OutputStream
from labbot.sandbox import OutputHandler
from labbot.sandbox.checkpoints import RESTORED, StorePieces

log = logging.getLogger(__name__)

# Seconds past the execution time limit before a reply that never comes counts as lost: room
# for a kernel start queued behind others (two tries of 30 s). The heartbeat watchdog is what
# notices a dead worker; this is only the backstop.
REPLY_GRACE = 120.0
PLACE_ATTEMPTS = 4
# A worker that refused a session (draining, or another time limit than its beats said) gets
# no new ones for this long, whatever its beats say: each offer shows it a user's code.
REFUSAL_COOLOFF_S = 60.0
MISSING = (KeyNotFoundError, KeyDeletedError)


@dataclass
class Placement:
    """A session's worker as this bot process last knew it."""

    host: str
    revision: int
    refreshed: float


class RemoteExecutor:
    """Runs code on worker machines; same contract as CodeInterpreter.

    executor = RemoteExecutor(settings, store)
    await executor.start()
    result = await executor.run("1234", "thread-9", "x = 1")
    """

    def __init__(self, settings: Settings, store: FileStore) -> None:
        self.settings = settings
        self.store = store
        cap = int(settings.SESSION_CHECKPOINT_MB * MIB)
        self.pieces = StorePieces(store, cap) if cap > 0 else None
        self.dead_after = settings.LABBOT_HOST_DEAD_AFTER_S
        self.heartbeat = settings.LABBOT_HEARTBEAT_S
        self.ttl = settings.SESSION_IDLE_MINUTES * 60
        self.table = HostTable(dead_after=self.dead_after)
        self.hosts: dict[str, HostState] = self.table.hosts  # by host id, bounded
        self.timeout = settings.CODE_EXECUTION_TIMEOUT
        self._warned: set[str] = set()  # what was logged once (per host)
        self.placements: dict[str, Placement] = {}
        self.ledger = session_ledger.SessionLedger(self.ttl)  # sessions per worker, as we count
        self._follower: asyncio.Task[None] | None = None
        self.losses: list[tuple[str, float]] = []  # (host, when) for health checks and tests
        self._running: dict[tuple[str, str], str] = {}
        self._any_beat = asyncio.Event()
        self._started = 0.0
        self._nc: Any = None
        self._kv: Any = None

    async def start(self) -> None:
        """Connect, open the placement bucket and listen to heartbeats."""
        self._nc = await bus.connect(self.settings, "labbot-bot")
        js = self._nc.jetstream()
        try:
            self._kv = await js.create_key_value(bucket=bus.KV_BUCKET, ttl=self.ttl, history=1)
        except BadRequestError:  # it exists with other settings: use it as it is
            self._kv = await js.key_value(bus.KV_BUCKET)
        self._follower = asyncio.create_task(session_ledger.follow(self._kv, self.ledger))
        await self._nc.subscribe(bus.heartbeat_subject("*"), cb=self._on_heartbeat)
        await self._nc.flush()
        self._started = time.monotonic()

    async def close(self) -> None:
        """Disconnect (sessions stay on their workers until idle)."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
            self._follower = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    # Liveness ------------------------------------------------------------------------------

    async def _on_heartbeat(self, msg: Any) -> None:
        """A worker's beat: it is the host its subject names (its credentials allow no other);
        a beat that does not validate is dropped."""
        host = host_of_subject(msg.subject)
        if host is None:
            return
        try:
            beat = wire.decode(wire.Heartbeat, msg.data)
        except wire.WireError as exc:
            self._warn_once(host, "executor.bad_heartbeat host=%s error=%s", host, exc)
            return
        if self.table.heard(host, beat, time.monotonic()) is None:
            return
        if beat.timeout > self.timeout:
            self._warn_once(
                f"time-limit:{host}",
                "executor.time_limit_mismatch host=%s worker_timeout=%s bot_timeout=%s",
                host,
                beat.timeout,
                self.timeout,
            )
        self._any_beat.set()

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 1000:
            self._warned.add(key)
            log.warning(message, *args)

    def _fresh(self, host: str) -> bool:
        state = self.hosts.get(host)
        return state is not None and time.monotonic() - state.seen < self.dead_after

    async def _alive(self, host: str) -> bool:
        """True if the worker beat recently; just after start, wait for its first beat."""
        if self._fresh(host):
            return True
        remaining = self._started + self.dead_after - time.monotonic()
        if remaining <= 0:
            return False
        state = self.table.entry(host, time.monotonic())
        if state is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await state.beat.wait()
        return self._fresh(host)

    async def _await_reply(self, host: str, call: asyncio.Future[Any]) -> Any:
        """The reply of ``call``, unless ``host`` goes silent for ``dead_after`` seconds first
        (counted from its last beat; a host this process has never heard gets the full window
        from now). No extra task: the wait wakes at each deadline and looks at the last beat."""
        since = time.monotonic()
        while True:
            state = self.hosts.get(host)
            seen = state.seen if state is not None and state.seen > -math.inf else since
            remaining = seen + self.dead_after - time.monotonic()
            if remaining <= 0:
                call.cancel()
                raise HostLost(host)
            done, _ = await asyncio.wait({call}, timeout=remaining)
            if done:
                try:
                    return call.result()
                except NoRespondersError as exc:  # nobody takes its subject: it is gone
                    raise HostLost(host) from exc
                except NatsTimeout as exc:  # it still beats: slow, not lost; never rerun
                    raise NoAnswer(host) from exc

    def _lost(self, host: str) -> None:
        state = self.hosts.get(host)
        if state is not None:
            state.seen = -math.inf  # until it beats again
        self.losses.append((host, time.monotonic()))
        del self.losses[:-100]
        log.warning("executor.host_lost host=%s", host)

    # Placement -----------------------------------------------------------------------------

    async def _choose(self, exclude: set[str]) -> str:
        """The live, non-draining worker with room that holds the fewest sessions as this bot
        counts them. What a worker says of itself only rules it out (full, draining); it never
        draws sessions to it."""
        # Just after start, listen for one heartbeat period first: every worker says so once
        # per period, and placing before hearing them all would pile sessions on the first.
        await asyncio.sleep(max(0.0, self._started + self.heartbeat * 1.2 - time.monotonic()))
        deadline = self._started + self.dead_after
        while True:
            candidates = [
                s
                for s in self.hosts.values()
                if self._fresh(s.host) and s.open(time.monotonic()) and s.host not in exclude
            ]
            now = time.monotonic()
            chosen = self.ledger.choose(candidates, self.timeout, now - self.heartbeat * 2)
            if chosen is not None:
                return chosen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxUnavailable(
                    "No worker machine is available to run code right now.",
                    hint="Start `labbot worker` on a worker machine, or ask the operator.",
                )
            self._any_beat.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._any_beat.wait()

    async def _place(self, key: str, exclude: set[str]) -> tuple[str, bool]:
        """The session's worker, and whether it was placed just now."""
        known = self.placements.get(key)
        if known and known.host not in exclude and self._fresh(known.host):
            if time.monotonic() - known.refreshed < self.ttl / 4:
                return known.host, False
            with contextlib.suppress(KeyWrongLastSequenceError):
                value = known.host.encode()
                known.revision = await self._kv.update(key, value, last=known.revision)
                known.refreshed = time.monotonic()
                self.ledger.placed(key, known.host)
                return known.host, False
        self.placements.pop(key, None)
        for _ in range(PLACE_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
            except MISSING:
                entry = None
            if entry is not None and entry.value:
                host = entry.value.decode(errors="replace")
                if valid_host(host) and host not in exclude and await self._alive(host):
                    self.placements[key] = Placement(host, entry.revision, time.monotonic())
                    self.ledger.placed(key, host)
                    return host, False
            host = await self._choose(exclude)
            state = self.hosts.get(host) or HostState(host)
            state.free -= 1  # counted at once (until its next heartbeat): spreads a burst
            state.sessions += 1
            self.ledger.placed(key, host)  # offered: it counts even if the worker refuses it
            try:
                if entry is None:
                    revision = await self._kv.create(key, host.encode())
                else:
                    revision = await self._kv.update(key, host.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                state.free += 1
                state.sessions -= 1
                self.ledger.dropped(key, host)
                continue  # another bot process placed it first: use theirs
            self.placements[key] = Placement(host, revision, time.monotonic())
            log.info("executor.placed host=%s", host)
            return host, True
        raise SandboxUnavailable("The session could not be placed on a worker machine.")

    async def _forget(self, key: str, host: str) -> None:
        """Drop the session's placement if it still names ``host``."""
        self.placements.pop(key, None)
        with contextlib.suppress(*MISSING, KeyWrongLastSequenceError):
            entry = await self._kv.get(key)
            if entry.value and entry.value.decode() == host:
                await self._kv.delete(key, last=entry.revision)

    # Execution -----------------------------------------------------------------------------

    async def run(
        self, user: str, conversation: str, code: str, *, on_output: OutputHandler | None = None
    ) -> ExecutionResult:
        """Run ``code`` in the conversation's session, on whichever worker holds it. A cell runs
        again on another worker only when its worker is lost (gone or silent), never because it
        was slow.

        :raises SandboxUnavailable: no worker can take it.
        """
        key = bus.session_key(user, conversation)
        refs = [record.ref() for record in await self.store.list(user)]
        request = exec_request(user, conversation, code, refs, timeout=self.timeout)
        checkpoint = await shipped(self.pieces, user, conversation)
        request = request.model_copy(update={"checkpoint": checkpoint})
        exclude: set[str] = set()
        note: str | None = None
        for _ in range(PLACE_ATTEMPTS):
            host, placed = await self._place(key, exclude)
            try:
                reply = await self._call(host, (user, conversation), request, on_output)
            except HostLost:
                self._lost(host)
                await self._forget(key, host)
                exclude.add(host)
                note = HOST_LOST_NOTE
                continue
            except Refused as refused:
                await self._forget(key, host)
                exclude.add(host)
                self.table.refused(host, time.monotonic() + REFUSAL_COOLOFF_S)
                if refused.reason == "time_limit":
                    note = note or HOST_MOVED_NOTE
                continue
            except NoAnswer:
                return await self._no_answer(host, user, conversation)
            break
        else:
            raise SandboxUnavailable("No worker machine could run the code.")
        assert reply.result is not None  # a valid ok reply has one
        result = await to_result(self.store, user, reply.result)
        if self.pieces is not None and checkpoint is not None and reply.checkpoint is not None:
            kept = await register(
                self.store, self.pieces, user, conversation, reply.checkpoint, checkpoint.room
            )
            result = replace(result, notes=(*result.notes, *kept))
        if not note and reply.new_session and not placed and not result.session_restarted:
            note = HOST_RESTARTED_NOTE
        if note and result.session_restarted and any(RESTORED in n for n in result.notes):
            note = HOST_LOST_RESTORED_NOTE if note == HOST_LOST_NOTE else None
        if note:
            result = replace(result, session_restarted=True, notes=(note, *result.notes))
        return result

    async def _call(
        self,
        host: str,
        who: tuple[str, str],
        request: wire.ExecRequest,
        on_output: OutputHandler | None,
    ) -> wire.ExecReply:
        """One request to ``host``, raced against its heartbeat going silent."""
        stream = OutputStream(on_output) if on_output is not None else None
        sub = None
        if stream is not None:
            subject = bus.stream_subject(secrets.token_hex(12))
            request = request.model_copy(update={"stream": subject})
            sub = await self._nc.subscribe(subject, cb=stream.on_part)
        timeout = self.timeout + REPLY_GRACE
        call = asyncio.ensure_future(
            self._nc.request(bus.exec_subject(host), wire.encode(request), timeout=timeout)
        )
        self._running[who] = host
        try:
            msg = await self._await_reply(host, call)
            reply = read_reply(host, msg.data)
            if stream is not None:
                await stream.drain(reply.streamed)
            return reply
        finally:
            self._running.pop(who, None)
            if not call.done():  # cancelled from outside
                call.cancel()
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _no_answer(self, host: str, user: str, conversation: str) -> ExecutionResult:
        """The worker beats but has not answered in time: stop the code there, and say so. It
        is not run anywhere else (it may still be running, or have done its work)."""
        log.warning("executor.no_answer host=%s", host)
        with contextlib.suppress(Exception):
            await self._control(host, ctl_request("stop", user, conversation))
        waited = self.timeout + REPLY_GRACE
        message = f"The worker machine did not answer within {waited:g} s; the code was stopped."
        return ExecutionResult(
            status="timeout", error=ExecError("Timeout", message), notes=(message,)
        )

    async def _control(self, host: str, request: wire.CtlRequest | None) -> Any:
        """Send a control request; its value, or None (no answer, refused, unreadable)."""
        if request is None:
            return None
        return await control(self._nc, host, request)

    async def stop(self, user: str, conversation: str) -> bool:
        """Interrupt the conversation's running code on its worker. True if something ran."""
        host = self._running.get((user, conversation))
        if host is None:
            return False
        return bool(await self._control(host, ctl_request("stop", user, conversation)))

    async def reset(self, user: str, conversation: str) -> bool:
        """Forget the conversation's variables and checkpoint (files stay). True if a session
        was live."""
        if self.pieces is not None:
            await self.pieces.delete(user, conversation)
        key = bus.session_key(user, conversation)
        try:
            entry = await self._kv.get(key)
        except MISSING:
            self.placements.pop(key, None)
            return False
        host = entry.value.decode(errors="replace") if entry.value else ""
        await self._forget(key, host)
        self.ledger.dropped(key, host)
        if not valid_host(host) or not self._fresh(host):
            return False
        return bool(await self._control(host, ctl_request("reset", user, conversation)))

    async def drain(self, host: str) -> int | None:
        """Ask a worker to take no new sessions and exit once its sessions are idle.
        Returns its live session count, or None if it did not answer."""
        value = await self._control(host, wire.CtlRequest(op="drain"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None
