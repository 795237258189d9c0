"""The workers a bot process has heard: who they are (the subject of their heartbeats, which
their NATS credentials enforce; never a name in the message), what they say about themselves
(clamped to what is plausible), and when they last said it. The table is bounded."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass, field

from labbot.errors import SandboxUnavailable
from labbot.remote import wire

log = logging.getLogger(__name__)

MAX_HOSTS = 256  # workers one bot process keeps track of
HEARTBEAT_PREFIX = "labbot.hb."
_HOST_RE = re.compile(wire.HOST_PATTERN)


def host_of_subject(subject: str) -> str | None:
    """The host id a heartbeat subject names, or None if it names none (``labbot.hb.<host>``
    with a valid LABBOT_HOST_ID as its last token)."""
    if not subject.startswith(HEARTBEAT_PREFIX):
        return None
    host = subject[len(HEARTBEAT_PREFIX) :]
    return host if _HOST_RE.fullmatch(host) else None


def valid_host(host: str) -> bool:
    """True if ``host`` can be a LABBOT_HOST_ID (and so a subject token)."""
    return bool(_HOST_RE.fullmatch(host))


@dataclass
class HostState:
    """What the last heartbeat of a worker said (clamped), and when it came."""

    host: str
    seen: float = -math.inf
    slots: int = 0
    free: int = 0
    sessions: int = 0
    warm: int = 0
    draining: bool = False
    timeout: float = math.inf  # its CODE_EXECUTION_TIMEOUT; unknown until it beats
    refused_until: float = -math.inf  # it refused a session: none offered before then
    beat: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self, beat: wire.Heartbeat, now: float) -> None:
        """Take in a beat: free <= slots - sessions, slots <= MAX_HOST_SLOTS, warm <= slots."""
        self.seen = -math.inf if beat.gone else now  # said goodbye: lost now, not in 3 s
        self.slots = min(beat.slots, wire.MAX_HOST_SLOTS)
        self.sessions = min(beat.sessions, self.slots)
        self.free = min(beat.free, self.slots - self.sessions)
        self.warm = min(beat.warm, self.slots)
        self.draining = beat.draining
        self.timeout = beat.timeout
        self.beat.set()
        self.beat = asyncio.Event()

    def open(self, now: float) -> bool:
        """True if it may be offered a new session: not draining, no recent refusal."""
        return not self.draining and now >= self.refused_until


class HostTable:
    """Every worker heard, by host id; at most ``max_hosts`` (the longest silent go first)."""

    def __init__(self, *, dead_after: float, max_hosts: int = MAX_HOSTS) -> None:
        self.dead_after = dead_after
        self.max_hosts = max_hosts
        self.hosts: dict[str, HostState] = {}

    def heard(self, host: str, beat: wire.Heartbeat, now: float) -> HostState | None:
        """Record ``beat`` from ``host`` (the subject's host id); None if there is no room."""
        state = self.entry(host, now)
        if state is not None:
            state.update(beat, now)
        return state

    def refused(self, host: str, until: float) -> None:
        """``host`` refused a session: offer it none before ``until`` (its beats cannot undo
        that)."""
        state = self.hosts.get(host)
        if state is not None:
            state.refused_until = max(state.refused_until, until)
            log.warning("executor.host_refused host=%s", host)

    def entry(self, host: str, now: float) -> HostState | None:
        """The state of ``host``, made if there is room (a valid id, and the table not full of
        live workers); None otherwise."""
        state = self.hosts.get(host)
        if state is not None:
            return state
        if not valid_host(host):
            return None
        if len(self.hosts) >= self.max_hosts and not self._drop_silent(now):
            log.warning("executor.host_table_full host=%s hosts=%d", host, len(self.hosts))
            return None
        state = self.hosts[host] = HostState(host)
        return state

    def _drop_silent(self, now: float) -> bool:
        silent = [s for s in self.hosts.values() if now - s.seen >= self.dead_after]
        if not silent:
            return False
        oldest = min(silent, key=lambda s: s.seen)
        del self.hosts[oldest.host]
        return True


def time_limit_error(hosts: list[HostState], bot_timeout: float) -> SandboxUnavailable:
    """The error when every worker would let code run longer than the bot waits."""
    longest = max(s.timeout for s in hosts)
    log.warning(
        "executor.no_worker_fits hosts=%s bot_timeout=%s",
        ",".join(s.host for s in hosts[:20]),
        bot_timeout,
    )
    return SandboxUnavailable(
        "No worker machine can run code for this bot: its workers let code run longer (up to"
        f" {longest:g} s) than this bot's CODE_EXECUTION_TIMEOUT ({bot_timeout:g} s).",
        hint="Set the same CODE_EXECUTION_TIMEOUT on the bot and its workers (`labbot doctor`"
        " names them).",
    )
