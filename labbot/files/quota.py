"""The storage quota while files stream in: each save reserves its bytes before writing them,
so the saves of one user in flight never hold more than the quota on disk (commit then evicts
the oldest files as usual)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from labbot.errors import QuotaInUse

log = logging.getLogger(__name__)


@dataclass
class _UserSaves:
    held: int = 0
    saves: list[Reservation] = field(default_factory=list)  # oldest first
    freed: asyncio.Event = field(default_factory=asyncio.Event)


class Reservations:
    """Every user's saves in flight in this process (bot processes sharing one store each
    keep their own).

    When a chunk does not fit, the newer saves are refused (QuotaInUse) and the oldest waits
    for the room they free: one upload always gets through, and no two wait for each other.
    """

    def __init__(self) -> None:
        self._users: dict[str, _UserSaves] = {}

    def open(self, user: str) -> Reservation:
        """A reservation for one new save of ``user``."""
        saves = self._users.setdefault(user, _UserSaves())
        reservation = Reservation(self, user)
        saves.saves.append(reservation)
        return reservation

    def held(self, user: str) -> int:
        """Bytes the user's saves in flight hold now."""
        saves = self._users.get(user)
        return saves.held if saves else 0

    async def _take(self, reservation: Reservation, size: int, limit: int) -> None:
        saves = self._users[reservation.user]
        while saves.held + size > limit:
            if saves.saves[0] is not reservation:
                log.info("file.quota_in_use user=%s held=%d", reservation.user, saves.held)
                raise QuotaInUse(limit_bytes=limit)
            await saves.freed.wait()  # the oldest: the newer ones are giving up their room
        saves.held += size
        reservation.size += size

    def _release(self, reservation: Reservation) -> None:
        saves = self._users.get(reservation.user)
        if saves is None or reservation not in saves.saves:
            return
        saves.saves.remove(reservation)
        saves.held -= reservation.size
        reservation.size = 0
        saves.freed.set()
        saves.freed = asyncio.Event()
        if not saves.saves:
            del self._users[reservation.user]


@dataclass(eq=False)
class Reservation:
    """The bytes one save in flight holds against its user's quota."""

    book: Reservations
    user: str
    size: int = 0

    async def take(self, size: int, *, limit: int) -> None:
        """Hold ``size`` more bytes (waiting if this is the user's oldest save in flight).

        :raises QuotaInUse: the user's older saves in flight hold the room.
        """
        await self.book._take(self, size, limit)

    def release(self) -> None:
        """Give everything back: the save was recorded (the metadata counts it now) or failed.
        Safe to call twice."""
        self.book._release(self)
