"""The bot's table of workers: named by subject only, bounded, and what a worker says about
itself clamped to what is plausible."""

from __future__ import annotations

import math

from labbot.remote import wire
from labbot.remote.hosts import HostTable, host_of_subject


def beat(**fields: object) -> wire.Heartbeat:
    values: dict[str, object] = {
        "slots": 4,
        "sessions": 1,
        "free": 3,
        "running": 0,
        "warm": 1,
        "draining": False,
        "gone": False,
        "timeout": 300.0,
    }
    return wire.Heartbeat.model_validate(values | fields)


def test_only_a_valid_host_id_in_the_subject_names_a_worker() -> None:
    """The subject's last token is the host; anything else names no one."""
    assert host_of_subject("labbot.hb.w1") == "w1"
    for subject in ("labbot.hb.ghost.>", "labbot.hb.", "labbot.hb.a b", "labbot.exec.w1",
                    "labbot.hb." + "x" * 65, "labbot.hb.*"):  # fmt: skip
        assert host_of_subject(subject) is None, subject


def test_claims_are_clamped() -> None:
    """free <= slots - sessions, slots <= MAX_HOST_SLOTS, warm <= slots."""
    table = HostTable(dead_after=3.0)
    state = table.heard("w1", beat(slots=10**9, sessions=0, free=10**9, warm=10**9), now=1.0)
    assert state is not None
    assert (state.slots, state.free, state.warm) == (wire.MAX_HOST_SLOTS,) * 3
    table.heard("w1", beat(slots=4, sessions=3, free=1000), now=2.0)
    assert (state.slots, state.sessions, state.free) == (4, 3, 1)
    table.heard("w1", beat(gone=True), now=3.0)
    assert state.seen == -math.inf


def test_the_table_is_bounded_and_makes_room_only_from_silent_hosts() -> None:
    """A full table of live workers takes no newcomer; a silent one makes room."""
    table = HostTable(dead_after=3.0, max_hosts=3)
    for n in range(3):
        assert table.heard(f"w{n}", beat(), now=10.0) is not None
    assert table.heard("w9", beat(), now=11.0) is None  # all three are alive
    assert set(table.hosts) == {"w0", "w1", "w2"}
    table.heard("w1", beat(), now=12.0)
    table.heard("w2", beat(), now=12.0)
    assert table.heard("w9", beat(), now=14.0) is not None  # w0 went silent at 10
    assert set(table.hosts) == {"w1", "w2", "w9"}
    assert table.entry("not a host", now=14.0) is None
