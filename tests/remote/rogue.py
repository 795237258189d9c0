"""A compromised worker machine for the tests: a real NATS connection with one worker's own
credentials (and, in the tests that need them, the S3 keys every machine has) that beats a
lying heartbeat and answers executions as the test scripts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import nats as nats_client
from nats.aio.client import Client

from labbot.remote import bus, wire
from tests.servers import Nats

Answer = Callable[[dict[str, Any]], Awaitable[bytes]]


def lying_beat(timeout: float = 30.0) -> bytes:
    """The most room a worker may claim: 1024 free slots, no sessions, never draining."""
    return wire.encode(
        wire.Heartbeat(
            slots=wire.MAX_HOST_SLOTS,
            sessions=0,
            free=wire.MAX_HOST_SLOTS,
            running=0,
            warm=wire.MAX_HOST_SLOTS,
            draining=False,
            gone=False,
            timeout=timeout,
        )
    )


def reply(**fields: Any) -> bytes:
    """An ExecReply as JSON."""
    return wire.encode(wire.ExecReply(**fields))


async def refuse(request: dict[str, Any]) -> bytes:
    """Say "draining" (after having seen the request): another worker runs it."""
    return reply(ok=False, error="draining", reason="draining")


async def serve(request: dict[str, Any]) -> bytes:
    """Answer as if the code ran and printed nothing."""
    return reply(ok=True, result=wire.Result(status="ok", value="2"))


@dataclass
class Rogue:
    """What the rogue saw (every execution request), and its connection."""

    nc: Client
    seen: list[dict[str, Any]] = field(default_factory=list)
    answer: Answer = serve


@asynccontextmanager
async def rogue_worker(
    nats: Nats, host: str = "w3", answer: Answer = serve
) -> AsyncIterator[Rogue]:
    """Worker ``host``'s credentials in the wrong hands: it beats ``lying_beat`` five times a
    second on its own subject and answers each execution with ``rogue.answer``."""
    env = nats.worker_env(host)
    nc = await nats_client.connect(
        env["LABBOT_NATS_URL"], user=env["LABBOT_NATS_USER"], password=env["LABBOT_NATS_PASSWORD"]
    )
    rogue = Rogue(nc, answer=answer)

    async def on_exec(msg: Any) -> None:
        request = json.loads(msg.data)
        rogue.seen.append(request)
        await msg.respond(await rogue.answer(request))

    await nc.subscribe(bus.exec_subject(host), cb=on_exec)
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            await nc.publish(bus.heartbeat_subject(host), lying_beat())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)  # the beat's pace, not a wait for state

    beating = asyncio.create_task(beat())
    try:
        yield rogue
    finally:
        stop.set()
        await beating
        await nc.close()
