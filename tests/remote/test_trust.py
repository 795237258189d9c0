"""A control plane that trusts no one, over a real nats-server: a worker is who its subject (and
its credentials) say, never what its message body says; every message is validated on receipt
on both sides, and one that does not validate is dropped or answered with a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nats.aio.client import Client

from labbot.errors import SandboxUnavailable
from labbot.remote import bus
from labbot.remote.executor import RemoteExecutor
from tests.remote.conftest import RemoteFactory, connected_as
from tests.servers import Nats, Process

pytestmark = pytest.mark.usefixtures("workers")


class Watching(RemoteExecutor):
    """A bot process that also reports each heartbeat it has handled, so a test knows when a
    forged beat has been taken into account (or not)."""

    def __init__(self, *args: Any, prefer: str | None = None, sticky: bool = False) -> None:
        super().__init__(*args)
        self.handled: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.prefer, self.sticky = prefer, sticky

    async def _on_heartbeat(self, msg: Any) -> None:
        await super()._on_heartbeat(msg)
        self.handled.put_nowait((msg.subject, msg.data))

    async def _choose(self, exclude: set[str]) -> str:
        """The real choice, unless a test asked for a given host (once, or ``sticky``)."""
        host = await super()._choose(exclude)
        chosen, self.prefer = self.prefer or host, self.prefer if self.sticky else None
        return chosen

    async def handled_one(self, data: bytes) -> None:
        """Wait until a beat with exactly ``data`` has been handled."""
        async with asyncio.timeout(10):
            while (await self.handled.get())[1] != data:
                pass


Watch = Callable[..., contextlib.AbstractAsyncContextManager[Watching]]


@pytest.fixture
def watch(make_remote: RemoteFactory) -> Watch:
    @asynccontextmanager
    async def make(**kwargs: Any) -> AsyncIterator[Watching]:
        async with make_remote() as (base, store):
            watching = Watching(base.settings, store, **kwargs)
            await watching.start()
            try:
                yield watching
            finally:
                await watching.close()

    return make


@asynccontextmanager
async def spamming(nc: Client, subject: str, data: bytes) -> AsyncIterator[None]:
    """Publish ``data`` on ``subject`` again and again (far more often than real beats) while
    the block runs: the attacker's pace, so a real beat never gets the last word."""

    stop = asyncio.Event()

    async def spam() -> None:
        while not stop.is_set():
            await nc.publish(subject, data)
            await nc.flush()
            await asyncio.sleep(0.002)

    # Stopped by an event, not cancel(): Python 3.11's wait_for (inside nc.flush) can swallow a
    # cancellation that lands as the PONG arrives, and the loop would go on forever.
    task = asyncio.create_task(spam())
    try:
        yield
    finally:
        stop.set()
        await task


def conversation() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


def host_of(executor: RemoteExecutor, user: str, conv: str) -> str:
    return executor.placements[bus.session_key(user, conv)].host


async def test_a_worker_cannot_say_another_is_gone(watch: Watch, nats: Nats) -> None:
    """With w1's credentials, beats saying {"host":"w2","gone":true} do not move a
    conversation held by w2: its variables are still there."""
    async with watch(prefer="w2") as executor:
        victim = conversation()
        await executor.run("victim", victim, "secret = 'kept'")
        assert host_of(executor, "victim", victim) == "w2"
        # What a worker's beat looked like, naming another worker.
        beat = {"v": 1, "host": "w2", "slots": 16, "sessions": 0, "free": 0, "running": 0}
        forged = json.dumps({**beat, "warm": 0, "draining": False, "gone": True}).encode()
        async with (
            connected_as(nats, "w1") as w1,
            spamming(w1, bus.heartbeat_subject("w1"), forged),
        ):
            await executor.handled_one(forged)
            result = await executor.run("victim", victim, "secret")
        assert (result.value, result.session_restarted) == ("'kept'", False), result.to_json()
        assert host_of(executor, "victim", victim) == "w2"
        assert not executor.losses


async def test_a_worker_cannot_claim_impossible_capacity(watch: Watch, nats: Nats) -> None:
    """Beats from w1 saying free=1000000 neither draw every new session to w1 nor enter the
    bot's table unclamped: free <= slots <= the most a worker may hold."""
    async with watch() as executor:
        literal = json.dumps({"host": "w1", "free": 1_000_000}).encode()
        async with (
            connected_as(nats, "w1") as w1,
            spamming(w1, bus.heartbeat_subject("w1"), literal),
        ):
            await executor.handled_one(literal)
            convs = [conversation() for _ in range(8)]
            for c in convs:
                await executor.run("newcomer", c, "1")
            assert {host_of(executor, "newcomer", c) for c in convs} == {"w1", "w2"}
            state = executor.hosts["w1"]
            assert state.free <= 16, state
        from labbot.remote import wire

        claim = wire.Heartbeat(
            slots=10**6,
            sessions=0,
            free=10**6,
            running=0,
            warm=10**6,
            draining=False,
            gone=False,
            timeout=30.0,
        )
        data = wire.encode(claim)
        async with connected_as(nats, "w1") as w1, spamming(w1, bus.heartbeat_subject("w1"), data):
            await executor.handled_one(data)
            state = executor.hosts["w1"]
            assert state.free <= state.slots <= wire.MAX_HOST_SLOTS, state
            assert state.warm <= state.slots


async def test_made_up_hosts_never_enter_the_table(watch: Watch, nats: Nats) -> None:
    """A beat naming a host that does not exist ("ghost.>") adds nothing to the bot's table,
    and a worker cannot beat on another host's subject at all."""
    async with watch() as executor:
        ghost = json.dumps({"host": "ghost.>", "free": 16, "slots": 16}).encode()
        refused: asyncio.Queue[str] = asyncio.Queue()
        async with connected_as(nats, "w1", refused) as w1:
            await w1.publish(bus.heartbeat_subject("w1"), ghost)
            await w1.publish(bus.heartbeat_subject("ghost"), ghost)  # refused by the server
            await w1.flush()
            await executor.handled_one(ghost)
            assert "permissions violation" in (await asyncio.wait_for(refused.get(), 5)).lower()
        assert set(executor.hosts) <= {"w1", "w2"}, set(executor.hosts)


async def call(nc: Client, subject: str, data: bytes) -> dict[str, Any]:
    msg = await nc.request(subject, data, timeout=15)
    reply = json.loads(msg.data)
    assert isinstance(reply, dict)
    return reply


GOOD_FILE = {"id": "a" * 26, "name": "x.csv", "kind": "csv", "size": 1, "sha256": "0" * 64}


def exec_request(**fields: Any) -> dict[str, Any]:
    from labbot.remote import wire

    base = {
        "v": wire.PROTOCOL,
        "user": "u1",
        "conversation": conversation(),
        "code": "1 + 1",
        "files": [],
        "stream": None,
        "timeout": 30.0,
    }
    return {**base, **fields}


MALFORMED_EXEC: list[bytes | dict[str, Any]] = [
    b"not json",
    b"[1, 2]",
    b'"a string"',
    {"user": "u1"},  # missing everything else
    exec_request(user="../victim"),
    exec_request(user=42),
    exec_request(code=["print(1)"]),
    exec_request(conversation="c" * 10_000),
    exec_request(files=[{**GOOD_FILE, "id": "../victim/" + "a" * 26}]),
    exec_request(files=[{**GOOD_FILE, "size": "1"}]),
    exec_request(stream="labbot.exec.w2"),
    exec_request(timeout="300"),
    exec_request(extra="field"),
    exec_request(v=1),
]


async def test_malformed_requests_get_a_clear_error_and_the_worker_keeps_serving(
    nats: Nats, workers: dict[str, Process]
) -> None:
    """Each malformed execution or control request gets an error reply that says what is
    wrong (never a crash or a silent drop), and the worker still runs good requests."""
    async with connected_as(nats, "bot") as bot:
        for request in MALFORMED_EXEC:
            data = request if isinstance(request, bytes) else json.dumps(request).encode()
            reply = await call(bot, bus.exec_subject("w1"), data)
            assert reply["ok"] is False and reply["error"], (request, reply)
        old = await call(bot, bus.exec_subject("w1"), json.dumps(exec_request(v=1)).encode())
        assert "protocol" in old["error"], old
        bad_ctl = [
            {"op": "stop"},
            {"op": "explode"},
            {"op": "reset", "user": "../x", "conversation": "c"},
            {"op": ["drain"]},
        ]
        for request in bad_ctl:
            reply = await call(bot, bus.ctl_subject("w1"), json.dumps(request).encode())
            assert reply["ok"] is False and reply["error"], (request, reply)
        good = await call(bot, bus.exec_subject("w1"), json.dumps(exec_request()).encode())
        assert good["ok"] is True and good["result"]["value"] == "2", good
    assert workers["w1"].proc.poll() is None


async def test_a_hostile_workers_replies_and_output_are_refused(watch: Watch, nats: Nats) -> None:
    """A process with w3's credentials that beats properly but answers with malformed replies
    and stream parts: the bot drops the bad parts (and oversize text), and a reply it cannot
    read is a clear error, never a half-understood result."""
    from labbot.remote import wire

    replies: asyncio.Queue[bytes] = asyncio.Queue()

    async with connected_as(nats, "w3") as w3, watch(prefer="w3", sticky=True) as executor:

        async def serve(msg: Any) -> None:
            request = json.loads(msg.data)
            for part in (
                {"n": 1, "name": "stdout", "text": "fine\n"},
                {"n": "2"},
                {"n": 3, "name": "stdout", "text": "A" * 1_000_000},
                {"n": 4, "name": "/etc/passwd", "text": "x"},
            ):
                await w3.publish(request["stream"], json.dumps(part).encode())
            await msg.respond(await replies.get())

        await w3.subscribe(bus.exec_subject("w3"), cb=serve)
        beat = wire.encode(
            wire.Heartbeat(
                slots=4,
                sessions=0,
                free=4,
                running=0,
                warm=0,
                draining=False,
                gone=False,
                timeout=30.0,
            )
        )
        async with spamming(w3, bus.heartbeat_subject("w3"), beat):
            await executor.handled_one(beat)
            seen: list[str] = []

            async def on_output(name: str, text: str) -> None:
                seen.append(text)

            ok = {"v": wire.PROTOCOL, "ok": True, "result": {"status": "ok"}, "streamed": 4}
            replies.put_nowait(json.dumps(ok).encode())
            result = await executor.run("u", conversation(), "1", on_output=on_output)
            assert result.status == "ok" and seen == ["fine\n"], [s[:20] for s in seen]
            bad = [
                {**ok, "result": {"status": "ok", "stdout": ["x"]}},
                {**ok, "streamed": "4"},
                {**ok, "result": None},
                {**ok, "result": {"status": "ok", "files": [{**GOOD_FILE, "id": "../../v/x"}]}},
                {**ok, "result": {"status": "ok", "stdout": "x" * 600_000}},
                {**ok, "v": 99},
            ]
            for reply in bad:
                replies.put_nowait(json.dumps(reply).encode())
                seen.clear()
                with pytest.raises(SandboxUnavailable) as caught:
                    await executor.run("u", conversation(), "1", on_output=on_output)
                assert set(seen) <= {"fine\n"}, (reply, [s[:20] for s in seen])
                assert "protocol" in str(caught.value) or "cannot read" in str(caught.value)
                assert "w3" not in str(caught.value)  # host ids (host names) stay in the log
