"""Live interpreters: one kernel per (user, conversation), a warm pool of kernels that already
imported the data stack, and the rules for who keeps one.

- At most ``per_user`` live sessions per user: a user's newest conversation takes the place of
  their least recently used one.
- At most ``max_sessions`` live sessions, and at most ``capacity`` kernels in all (live, pooled
  and starting): the sum of session memory limits never exceeds the machine's, or the bot's
  cgroup's, memory. When full, the session taken is the least recently used of the user with
  the most sessions; a user's last session goes only to someone who has none.
- Idle sessions end after ``idle_seconds``. (Between cells nothing of a session runs: the kernel
  client stops its processes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from labbot.core import progress
from labbot.errors import SandboxUnavailable
from labbot.sandbox.jail import Jail
from labbot.sandbox.kernel_client import KernelProcess
from labbot.sandbox.slots import FairSlots

log = logging.getLogger(__name__)

MAX_REMEMBERED_LOSSES = 10_000
POOL = "\0pool"  # the warm pool's refills, as a user of the start queue (no real id has a NUL)
# A taken pool kernel is replaced once the taker's first cell is over, or after this long: a
# start's first steps run in the bot (a process spawned, its cgroup and folders made) and would
# slow the very cell the pool is there to make fast.
REFILL_AFTER = 1.0

Key = tuple[str, str]


@dataclass
class Session:
    """A conversation's live kernel."""

    user: str
    conversation: str
    kernel: KernelProcess
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    restarted: str | None = None  # why the previous session of this conversation was lost


class Sessions:
    """Keeps live kernels per (user, conversation). A pooled kernel is handed to exactly one
    session and never returns to the pool."""

    def __init__(
        self,
        jail: Jail,
        *,
        idle_seconds: float,
        max_sessions: int,
        capacity: int,
        per_user: int,
        pool_size: int,
        room_wait: float = 30.0,
    ) -> None:
        self.jail = jail
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self.capacity = capacity
        self.per_user = per_user
        self.pool_size = min(pool_size, capacity)
        self.room_wait = room_wait
        self._room = asyncio.Event()  # set when a session finished a cell or went away
        self.sessions: OrderedDict[Key, Session] = OrderedDict()
        self._lost: OrderedDict[Key, str] = OrderedDict()
        self._pool: list[KernelProcess] = []
        self._reaping: set[asyncio.Task[None]] = set()  # dead pooled kernels being killed
        self._starting: set[KernelProcess] = set()
        # Sessions each user has reserved but not registered yet (a kernel starting or a pooled
        # one being handed over): counted against the per-user limit, so a user's new
        # conversations at once cannot each find room and hold more than their share.
        self._reserved: Counter[str] = Counter()
        # Two one-way signals, so no wake-up is lost: takers ask for a refill, the filler says
        # when the pool is full.
        self._need_fill = asyncio.Event()
        self._pool_full = asyncio.Event()
        self._refill_timer: asyncio.TimerHandle | None = None  # a refill waits for a cell's end
        self._takers: list[Session] = []  # sessions on a pool kernel whose first cell is not over
        self._tasks: list[asyncio.Task[None]] = []
        self._dying: set[asyncio.Task[None]] = set()  # sandboxes being killed
        self._lock = asyncio.Lock()
        # Kernel starts at once: a start costs a second or two of CPU, and a burst of them
        # would each take too long; the rest wait their turn, fairly across users (the warm
        # pool's refills count as one more user).
        self._starts = FairSlots(2 * (os.cpu_count() or 1))
        self.dropped = asyncio.Event()  # set whenever a session is ended for a reason

    async def start(self) -> None:
        """Start filling the warm pool and reaping idle sessions."""
        await asyncio.to_thread(self.jail.root.mkdir, parents=True, exist_ok=True)
        if self.jail.enabled:
            await asyncio.to_thread(self.jail.remove_stale_cgroups)
        self._tasks = [
            asyncio.create_task(self._fill_pool()),
            asyncio.create_task(self._reap_idle()),
        ]

    async def close(self) -> None:
        """Kill every kernel, pooled or live."""
        if self._refill_timer is not None:
            self._refill_timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        kernels = [*self._pool, *self._starting, *(s.kernel for s in self.sessions.values())]
        self._pool, self.sessions = [], OrderedDict()
        await asyncio.gather(*(k.kill() for k in kernels), *self._dying, return_exceptions=True)

    @property
    def warm(self) -> int:
        """Started kernels waiting in the pool."""
        return len(self._pool)

    @property
    def kernels(self) -> int:
        """Kernels that hold memory now: live, pooled and starting."""
        return len(self.sessions) + len(self._pool) + len(self._starting)

    async def wait_for_pool(self) -> None:
        """Return once the warm pool is full (for benchmarks and tests)."""
        await self._pool_full.wait()

    async def _fill_pool(self) -> None:
        while True:
            self._need_fill.clear()  # before filling: a take during the fill sets it again
            while len(self._pool) < self.pool_size and self.kernels < self.capacity:
                kernel = KernelProcess(self.jail, self.jail.root, background=True)
                self._starting.add(kernel)
                try:
                    await self._start(kernel, POOL)
                except Exception:  # keep refilling: a passing failure must not end the pool
                    self._starting.discard(kernel)
                    log.exception("pool.start_failed")
                    await asyncio.sleep(5)
                    continue
                self._starting.discard(kernel)
                self._pool.append(kernel)
            self._pool_full.set()
            await self._need_fill.wait()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.idle_seconds / 2))
            now = time.monotonic()
            for key, session in list(self.sessions.items()):
                if now - session.last_used > self.idle_seconds and not session.lock.locked():
                    minutes = self.idle_seconds / 60
                    await self._drop(key, f"it was idle for more than {minutes:g} minutes")

    async def _drop(self, key: Key, reason: str) -> None:
        """End a session for ``reason``; its sandbox is killed in the background, so the
        sessions' lock is never held while a sandbox dies."""
        session = self.sessions.pop(key, None)
        if session is None:
            return
        self._remember_loss(key, reason)
        log.info("session.dropped reason=%s", reason)
        task = asyncio.get_running_loop().create_task(session.kernel.kill())
        self._dying.add(task)
        task.add_done_callback(self._dying.discard)
        self.dropped.set()
        self._room.set()

    def _remember_loss(self, key: Key, reason: str) -> None:
        self._lost[key] = reason
        while len(self._lost) > MAX_REMEMBERED_LOSSES:
            self._lost.popitem(last=False)

    async def get(self, user: str, conversation: str) -> Session:
        """The conversation's live session, starting one (from the pool when it can). When no
        room can be made now (every session that could go is running), waits up to
        ``room_wait`` seconds for one to finish.

        :raises SandboxUnavailable: still no room, or the sandbox cannot start.
        """
        key = (user, conversation)
        deadline = time.monotonic() + self.room_wait
        while True:
            async with self._lock:
                session = self.sessions.get(key)
                if session is not None and session.kernel.alive:
                    self.sessions.move_to_end(key)
                    session.last_used = time.monotonic()
                    return session
                if session is not None:
                    dead = session.kernel.dead
                    self.sessions.pop(key)
                    self._remember_loss(key, dead.reason if dead else "its interpreter ended")
                self._room.clear()
                if await self._make_room(user):
                    self._reserved[user] += 1
                    kernel = self._take_pooled()
                    pooled = kernel is not None
                    if kernel is None:  # reserved now: the room made stays ours as it starts
                        kernel = KernelProcess(self.jail, self.jail.root)
                        self._starting.add(kernel)
                    break
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._room.wait()
            except TimeoutError:
                raise SandboxUnavailable(
                    "Every sandbox session this server has room for is busy; try again in a minute."
                ) from None
        try:
            if kernel in self._starting:
                try:
                    with progress("starting a sandbox"):
                        await self._start_reserved(kernel, user)
                finally:
                    self._starting.discard(kernel)
            async with self._lock:
                session = Session(user, conversation, kernel, restarted=self._lost.pop(key, None))
                self.sessions[key] = session
                self._starting.discard(kernel)
                if pooled and self._refill_timer is not None:
                    self._takers.append(session)
        finally:
            self._reserved[user] -= 1
            if not self._reserved[user]:
                del self._reserved[user]
            self._room.set()  # a run of the user's that waits for room may look again
        return session

    def release(self) -> None:
        """A session finished a cell: whoever waits for room may look again, and once the
        first cells on kernels taken from the pool are over, the pool is refilled."""
        self._room.set()
        # A taker's lock is held for its cell (it is free again before this is called).
        self._takers = [s for s in self._takers if s.lock.locked()]
        if self._refill_timer is not None and not self._takers:
            self._refill()

    def _refill(self) -> None:
        if self._refill_timer is not None:
            self._refill_timer.cancel()
            self._refill_timer = None
        self._takers.clear()
        self._need_fill.set()

    async def _make_room(self, user: str) -> bool:
        """Free a place for one more session of ``user`` (under the sessions' lock); False when
        nothing can go now."""
        mine = [k for k, s in self.sessions.items() if k[0] == user]
        while len(mine) + self._reserved[user] >= self.per_user:
            victim = next((k for k in mine if not self.sessions[k].lock.locked()), None)
            if victim is None:
                return False
            mine.remove(victim)
            await self._drop(
                victim,
                "another of your conversations needed it (each user keeps at most"
                f" {self.per_user} live sessions)",
            )
        pooled = any(kernel.alive for kernel in self._pool)  # taking it adds no memory
        while len(self.sessions) >= self.max_sessions or (
            not pooled and self.kernels >= self.capacity
        ):
            victim = self._fair_victim(user)
            if victim is None:
                return False
            await self._drop(victim, "the server needed room for other users' sessions")
        return True

    def _fair_victim(self, user: str) -> Key | None:
        """The least recently used idle session of the user holding the most; a user's last
        session only when ``user`` has none."""
        counts = Counter(k[0] for k in self.sessions)
        mine = counts.get(user, 0)
        candidates = [
            k for k, s in self.sessions.items()
            if not s.lock.locked() and (counts[k[0]] > 1 or mine == 0)
        ]  # fmt: skip
        if not candidates:
            return None
        most = max(counts[k[0]] for k in candidates)
        return next(k for k in candidates if counts[k[0]] == most)  # OrderedDict: LRU first

    async def _start_reserved(self, kernel: KernelProcess, user: str, attempts: int = 2) -> None:
        """Start a kernel reserved for a session; a start that fails or hangs is retried once
        (the same reservation, a new sandbox)."""
        for attempt in range(1, attempts + 1):
            try:
                await self._start(kernel, user)
                return
            except SandboxUnavailable:
                if attempt == attempts:
                    raise
                log.warning("kernel.start_retry attempt=%d", attempt)
                kernel.reset_for_retry()

    async def _start(self, kernel: KernelProcess, user: str) -> None:
        # Running cells are not held up by this queue; its wait is not part of the start's
        # time limit.
        ticket = self._starts.enter(user)
        try:
            if not ticket.granted:
                with progress("waiting for a free sandbox start: the machine is starting others"):
                    await ticket.wait()
            await kernel.start()
        finally:
            ticket.leave()

    def _take_pooled(self) -> KernelProcess | None:
        kernel = None
        while self._pool and kernel is None:
            candidate = self._pool.pop(0)
            # Started at the low CPU weight: a session's kernel has the normal one.
            kernel = candidate if candidate.alive and candidate.foreground() else None
            if kernel is None:  # its cgroup, folder and host uid go back too
                reap = asyncio.get_running_loop().create_task(candidate.kill())
                self._reaping.add(reap)
                reap.add_done_callback(self._reaping.discard)
        if self.pool_size:
            self._pool_full.clear()
            if self._refill_timer is None:  # see REFILL_AFTER
                loop = asyncio.get_running_loop()
                self._refill_timer = loop.call_later(REFILL_AFTER, self._refill)
        return kernel

    async def reset(self, user: str, conversation: str) -> bool:
        """End the conversation's session (variables go; files stay). True if one was live."""
        key = (user, conversation)
        async with self._lock:
            session = self.sessions.pop(key, None)
            self._lost.pop(key, None)
        if session is None:
            return False
        await session.kernel.kill()
        self._room.set()
        return True

    async def end(self, session: Session) -> None:
        """End ``session`` (its cell was lost): it only, never a newer session the same
        conversation has started meanwhile (a user's next run may have replaced it already)."""
        key = (session.user, session.conversation)
        async with self._lock:
            current = self.sessions.get(key)
            if current is session:
                self.sessions.pop(key)
            if current is None or current is session:  # the lost cell's result tells it
                self._lost.pop(key, None)
        await session.kernel.kill()
        self._room.set()

    def forget_loss(self, session: Session) -> None:
        """The restart notice was delivered; do not repeat it."""
        session.restarted = None
