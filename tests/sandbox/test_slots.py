"""The fair scheduler, step by step: slots pass from the releaser to the chosen waiter at once,
so every assertion reads ``granted`` right after a release (no sleeps, a fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from labbot.sandbox.slots import FairSlots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_with_a_cell_running_waits_behind_users_with_none() -> None:
    """Two slots, both held by a and b; a queued first, then c: the freed slot goes to c,
    whose user holds none, although a asked earlier."""
    slots = FairSlots(2)
    a1, b1 = slots.enter("a"), slots.enter("b")
    assert a1.granted and b1.granted
    a2, c1 = slots.enter("a"), slots.enter("c")
    assert not a2.granted and not c1.granted
    b1.leave()
    assert c1.granted and not a2.granted
    c1.leave()
    assert a2.granted


def test_first_come_first_served_within_a_user_and_between_equals() -> None:
    slots = FairSlots(1)
    held = slots.enter("x")
    a1, b1, a2 = slots.enter("a"), slots.enter("b"), slots.enter("a")
    held.leave()
    assert a1.granted and not b1.granted and not a2.granted
    a1.leave()
    assert b1.granted and not a2.granted
    b1.leave()
    assert a2.granted


def test_the_user_who_used_less_slot_time_recently_goes_first() -> None:
    clock = Clock()
    slots = FairSlots(1, budget=600, clock=clock)
    heavy = slots.enter("heavy")
    clock.now += 100
    heavy.leave()  # heavy used 100 s
    light = slots.enter("light")
    clock.now += 10
    light.leave()  # light used 10 s
    blocker = slots.enter("x")
    h, lt = slots.enter("heavy"), slots.enter("light")
    blocker.leave()
    assert lt.granted and not h.granted


def test_a_user_over_their_budget_waits_behind_everyone_but_is_not_starved() -> None:
    clock = Clock()
    slots = FairSlots(1, budget=60, clock=clock)
    hog = slots.enter("hog")
    clock.now += 61
    hog.leave()
    assert slots.over_budget("hog")
    assert "you used your 60 s" in slots.why_wait("hog")
    blocker = slots.enter("x")
    again, other = slots.enter("hog"), slots.enter("other")
    blocker.leave()
    assert other.granted and not again.granted
    other.leave()
    assert again.granted  # nobody else waits: the slot is not left idle
    again.leave()
    clock.now += 3600  # the bucket refills over the hour
    assert not slots.over_budget("hog")


def test_the_status_says_why_it_waits() -> None:
    slots = FairSlots(2)
    slots.enter("a"), slots.enter("b")
    assert slots.why_wait("c") == (
        "waiting for a free sandbox slot: 2 cells of other users are running"
    )
    assert slots.why_wait("a").endswith("1 cells of other users are running and 1 of yours")


async def test_a_cancelled_waiter_never_leaks_or_loses_a_slot() -> None:
    """A waiter cancelled while queued leaves the queue; one cancelled after the slot was
    handed to it (before it woke) passes the slot on; the count of busy slots stays right."""
    slots = FairSlots(1)
    held = slots.enter("a")
    tickets = {}
    queued = {user: asyncio.Event() for user in "bcd"}

    async def waiter(user: str) -> None:
        ticket = tickets[user] = slots.enter(user)
        try:
            queued[user].set()
            await ticket.wait()
            await asyncio.Event().wait()  # would hold the slot for ever
        finally:
            ticket.leave()

    tasks = {}
    for user in "bcd":
        tasks[user] = asyncio.create_task(waiter(user))
        await queued[user].wait()
    tasks["b"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks["b"]
    assert slots.waiting == 2 and slots.busy == 1
    held.leave()
    assert tickets["c"].granted and slots.busy == 1
    tasks["c"].cancel()  # cancelled before it ever ran with the slot
    with pytest.raises(asyncio.CancelledError):
        await tasks["c"]
    assert tickets["d"].granted and slots.busy == 1 and slots.waiting == 0
    tasks["d"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks["d"]
    assert slots.busy == 0
    assert slots.enter("e").granted


async def test_a_bounded_wait_times_out_and_leaves_the_queue() -> None:
    slots = FairSlots(1)
    held = slots.enter("a")
    ticket = slots.enter("b")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await ticket.wait()
    ticket.leave()
    assert slots.waiting == 0
    held.leave()
    assert slots.busy == 0


def test_memory_stays_bounded_once_users_are_done() -> None:
    slots = FairSlots(1)
    for n in range(100):
        slots.enter(f"u{n}").leave()
    assert slots._accounts == {}
