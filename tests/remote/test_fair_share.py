"""A compromised worker (its own NATS login) cannot draw the cluster's sessions to itself: it
claims 1024 free slots, or refuses every session after seeing it, next to two honest workers
over a real nats-server. Each offer shows a worker the user's id, code and file list."""

from __future__ import annotations

import uuid

import pytest

from labbot.remote import executor as executor_module
from tests.remote.conftest import RemoteFactory
from tests.remote.rogue import refuse, rogue_worker, serve
from tests.servers import Nats

pytestmark = pytest.mark.usefixtures("workers")  # honest w1 and w2


async def test_claimed_room_draws_no_more_than_a_fair_share(
    make_remote: RemoteFactory, nats: Nats
) -> None:
    """w3 beats slots=free=1024 next to w1 and w2 (16 slots each): of 9 new conversations it
    is offered at most a third, as each worker holds about as many as the others."""
    async with rogue_worker(nats, "w3", serve) as rogue, make_remote() as (executor, _):
        for i in range(9):
            result = await executor.run(f"user{i}", uuid.uuid4().hex, f"SECRET_{i} = 42")
            assert result.status == "ok", result.to_json()
        seen = [(r["user"], r["code"]) for r in rogue.seen]
        assert len(seen) <= 3, seen
        counts = executor.ledger.counts()
        assert max(counts.values()) - min(counts.values()) <= 1, counts


async def test_a_worker_that_refuses_is_offered_nothing_more(
    make_remote: RemoteFactory, nats: Nats
) -> None:
    """w3 claims all the room and answers "draining" to each request after reading it: it is
    offered one session, then none while its refusal stands; the honest workers run them all."""
    async with rogue_worker(nats, "w3", refuse) as rogue, make_remote() as (executor, _):
        for i in range(6):
            result = await executor.run(f"user{i}", uuid.uuid4().hex, f"SECRET_{i} = 42")
            assert result.status == "ok" and not result.session_restarted, result.to_json()
        assert len(rogue.seen) <= 1, [(r["user"], r["code"]) for r in rogue.seen]
        assert executor_module.REFUSAL_COOLOFF_S >= 60
