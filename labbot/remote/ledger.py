"""How many sessions each worker holds, as the bot knows it: the sessions this bot process
placed or found, and those other bot processes placed (the placement bucket), never what a
worker says of itself. Placement prefers the worker holding the fewest, so a worker that claims
room it does not have gets no more than its share.

Every session offered to a worker counts against it until the session's idle timeout, whether
the worker took it or refused it: a worker that refuses everything (and so sees every request)
is offered no more than one that works.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from labbot.remote.hosts import HostState, time_limit_error, valid_host

log = logging.getLogger(__name__)

MAX_ENTRIES = 200_000  # (session, worker) pairs one bot process keeps count of


class SessionLedger:
    """Sessions per worker, each counted for ``ttl`` seconds after it was last placed or used.

    ledger = SessionLedger(ttl=1800)
    ledger.placed("a1b2...", "w1")
    ledger.count("w1")  # 1
    """

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._expires: dict[tuple[str, str], float] = {}  # (session key, host) -> when
        self._queue: list[tuple[float, str, str]] = []  # the same, by expiry (lazily cleaned)
        self._counts: Counter[str] = Counter()

    def placed(self, key: str, host: str, *, age: float = 0.0) -> None:
        """Session ``key`` is on ``host`` (placed, offered, found or used ``age`` s ago)."""
        expires = self.clock() + self.ttl - max(0.0, age)
        pair = (key, host)
        if pair not in self._expires:
            self._counts[host] += 1
        elif self._expires[pair] >= expires:
            return
        self._expires[pair] = expires
        heapq.heappush(self._queue, (expires, key, host))
        while len(self._expires) > self.max_entries:
            self._pop()
        if len(self._queue) > 2 * len(self._expires) + 64:  # refreshed entries left behind
            self._queue = [(e, k, h) for (k, h), e in self._expires.items()]
            heapq.heapify(self._queue)

    def dropped(self, key: str, host: str) -> None:
        """Session ``key`` is no longer on ``host`` (reset by this bot)."""
        if self._expires.pop((key, host), None) is not None:
            self._decrement(host)

    def count(self, host: str) -> int:
        """Sessions counted on ``host`` now."""
        self._expire()
        return self._counts.get(host, 0)

    def counts(self) -> dict[str, int]:
        """Sessions counted on every worker now."""
        self._expire()
        return dict(self._counts)

    def choose(self, hosts: list[HostState], timeout: float, on_time_since: float) -> str | None:
        """Of ``hosts`` (live, not draining), the one holding the fewest sessions by this
        count; what a worker says of itself only rules it out (no room). None if none fits.

        :raises SandboxUnavailable: every one lets code run longer than ``timeout``.
        """
        # A worker that lets code run longer than this bot waits would be taken for lost, and
        # the cell run again elsewhere: it gets no sessions.
        fits = [s for s in hosts if s.timeout <= timeout]
        if hosts and not fits:
            raise time_limit_error(hosts, timeout)
        # Prefer workers whose last beat came on time: one that has just gone quiet may be the
        # next to be lost. Then those with room (all full: their eviction decides).
        fits = [s for s in fits if s.seen >= on_time_since] or fits
        fits = [s for s in fits if s.free > 0] or fits
        if not fits:
            return None
        return min(fits, key=lambda s: (self.count(s.host), s.host)).host

    def _expire(self) -> None:
        now = self.clock()
        while self._queue and self._queue[0][0] <= now:
            self._pop()

    def _pop(self) -> None:
        """Drop the entry that expires first (skipping queue items already superseded)."""
        while self._queue:
            expires, key, host = heapq.heappop(self._queue)
            if self._expires.get((key, host)) == expires:
                del self._expires[(key, host)]
                self._decrement(host)
                return

    def _decrement(self, host: str) -> None:
        self._counts[host] -= 1
        if self._counts[host] <= 0:
            del self._counts[host]


async def follow(kv: Any, ledger: SessionLedger) -> None:
    """Count every placement in the bucket (this and other bot processes'), until cancelled.
    Deletions are not followed: a session forgotten after a refusal still counts for its
    worker, and this process's own resets are dropped from the ledger where they happen."""
    watcher = await kv.watchall()
    try:
        async for entry in watcher:
            if entry is None or entry.operation is not None or not entry.value:
                continue  # the end of the initial values, or a deletion
            host = entry.value.decode(errors="replace")
            if valid_host(host):
                ledger.placed(entry.key, host, age=_age(entry.created))
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()


def _age(created: object) -> float:
    """Seconds since a bucket entry was written (0 when unknown)."""
    if not isinstance(created, datetime):
        return 0.0
    return max(0.0, (datetime.now(UTC) - created).total_seconds())
