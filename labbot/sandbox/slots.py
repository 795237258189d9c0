"""Slots handed out fairly across users: execution slots, kernel starts, model requests.

When a slot frees it goes to the waiting user who is within their time budget, then has the
fewest slots held now, then the least slot time used recently; first come first served within a
user and between equals. A user with a cell running thus waits behind users with none, and a
user over their budget waits behind everyone else (but still runs when nobody else waits).

Slots pass straight from the releaser to the chosen waiter (no one barges in between), so a
ticket's ``granted`` is exact at every moment; ``leave`` (always called, in ``finally``) gives
back a held slot or leaves the queue, so a cancelled waiter never leaks or loses a slot.

    ticket = slots.enter(user)
    try:
        if not ticket.granted:
            with progress(slots.why_wait(user)):
                await ticket.wait()
        ...
    finally:
        ticket.leave()
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Account:
    """One user's standing: slots held now, and a token bucket of slot seconds."""

    held: int = 0
    tokens: float = 0.0
    updated: float = 0.0


class Ticket:
    """One request for a slot: granted at once, or queued until a slot is handed to it."""

    def __init__(self, slots: FairSlots, user: str, order: int) -> None:
        self.slots = slots
        self.user = user
        self.order = order
        self.granted = False
        self.granted_at = 0.0
        self.left = False
        self._ready = asyncio.Event()

    async def wait(self) -> None:
        """Wait until the slot is ours (bound it with ``asyncio.timeout``: the ticket stays
        queued until ``leave``)."""
        if not self.granted:
            await self._ready.wait()

    def leave(self) -> None:
        """Give back the slot, or leave the queue; safe to call more than once."""
        if self.left:
            return
        self.left = True
        self.slots._leave(self)


class FairSlots:
    """``size`` slots shared by users. ``budget`` (seconds of slot time per ``per`` seconds,
    as a token bucket) is optional; over it, a user's requests go after everyone else's."""

    def __init__(
        self,
        size: int,
        *,
        budget: float | None = None,
        per: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.budget = budget
        self.per = per
        self.clock = clock
        self.busy = 0
        self._accounts: dict[str, _Account] = {}
        self._queues: dict[str, deque[Ticket]] = {}
        self._order = itertools.count()

    def enter(self, user: str) -> Ticket:
        """Ask for a slot: the ticket is granted now when one is free and nobody waits."""
        ticket = Ticket(self, user, next(self._order))
        if self.busy < self.size and not self._queues:
            self._grant(ticket)
        else:
            self._queues.setdefault(user, deque()).append(ticket)
        return ticket

    @property
    def waiting(self) -> int:
        """Requests queued now."""
        return sum(len(queue) for queue in self._queues.values())

    def held_by_others(self, user: str) -> int:
        """Slots held now by users other than ``user``."""
        return self.busy - self._account(user).held

    def over_budget(self, user: str) -> bool:
        """True when ``user`` has used their slot time for now."""
        return self.budget is not None and self._tokens(user) <= 0

    def why_wait(self, user: str, what: str = "sandbox slot", work: str = "cells") -> str:
        """The status line of a wait, in words."""
        others = self.held_by_others(user)
        mine = self._account(user).held
        if self.over_budget(user):
            assert self.budget is not None
            return (
                f"waiting for a free {what}: you used your {self.budget:g} s of sandbox time"
                f" for now, so other users' {work} go first"
            )
        text = f"waiting for a free {what}: {others} {work} of other users are running"
        if mine:
            text += f" and {mine} of yours"
        return text

    def used(self, user: str) -> float:
        """Slot seconds ``user`` used recently (the budget's spent part; 0 without one)."""
        if self.budget is None:
            return 0.0
        return self.budget - self._tokens(user)

    def _account(self, user: str) -> _Account:
        account = self._accounts.get(user)
        if account is None:
            account = _Account(tokens=self.budget or 0.0, updated=self.clock())
        return account

    def _tokens(self, user: str) -> float:
        account = self._accounts.get(user)
        if account is None or self.budget is None:
            return self.budget or 0.0
        now = self.clock()
        refill = (now - account.updated) * self.budget / self.per
        return min(self.budget, account.tokens + refill)

    def _grant(self, ticket: Ticket) -> None:
        account = self._accounts.get(ticket.user)
        if account is None:
            account = self._accounts[ticket.user] = self._account(ticket.user)
        account.held += 1
        self.busy += 1
        ticket.granted = True
        ticket.granted_at = self.clock()
        ticket._ready.set()

    def _leave(self, ticket: Ticket) -> None:
        if not ticket.granted:
            queue = self._queues.get(ticket.user)
            if queue is not None and ticket in queue:
                queue.remove(ticket)
                if not queue:
                    del self._queues[ticket.user]
            return
        account = self._accounts[ticket.user]
        if self.budget is not None:
            now = self.clock()
            account.tokens = self._tokens(ticket.user) - (now - ticket.granted_at)
            account.updated = now
        account.held -= 1
        self.busy -= 1
        if account.held == 0 and ticket.user not in self._queues and self._full(ticket.user):
            del self._accounts[ticket.user]  # nothing to remember: memory stays bounded
        self._hand_on()

    def _full(self, user: str) -> bool:
        return self.budget is None or self._tokens(user) >= self.budget

    def _hand_on(self) -> None:
        while self.busy < self.size and self._queues:
            user = min(self._queues, key=self._rank)
            queue = self._queues[user]
            ticket = queue.popleft()
            if not queue:
                del self._queues[user]
            self._grant(ticket)

    def _rank(self, user: str) -> tuple[bool, int, float, int]:
        # over_budget and used, from one look at the user's tokens (this runs per queued
        # user at every hand-on)
        account = self._accounts.get(user)
        if self.budget is None:
            over, used = False, 0.0
        else:
            tokens = self._tokens(user)
            over, used = tokens <= 0, self.budget - tokens
        return (
            over,
            account.held if account is not None else 0,
            round(used, 3),
            self._queues[user][0].order,
        )
