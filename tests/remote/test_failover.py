"""Worker machines that die, go silent, drain or race: what the bot sees, over real NATS."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from labbot.errors import SandboxUnavailable
from labbot.remote import bus
from labbot.remote.executor import RemoteExecutor
from labbot.remote.rpc import HOST_LOST_RESTORED_NOTE
from tests.remote.conftest import RemoteFactory, connected_as
from tests.sandbox.test_checkpoints import MAKE_DF, SAME_DF
from tests.servers import S3, Nats, Process, workers_running

LOST_WITHIN = 5.0  # seconds from a worker's death to the conversation running elsewhere


@pytest.fixture
def pair(nats: Nats, s3_server: S3, tmp_path: Path) -> Iterator[dict[str, Process]]:
    """Fresh workers w3 and w4 for a test that hurts them, each with three warm kernels: the
    survivor has one ready for a re-placed session even just after its two new sessions took
    the others (a kernel start alone can take seconds on a busy machine)."""
    with workers_running(("w3", "w4"), nats, s3_server, tmp_path, SANDBOX_WARM_POOL="3") as started:
        yield started


def host_of(executor: RemoteExecutor, user: str, conversation: str) -> str:
    return executor.placements[bus.session_key(user, conversation)].host


async def _lose_a_worker(make_remote: RemoteFactory, pair: dict[str, Process], how: str) -> None:
    async with make_remote() as (executor, store):
        # Four users, one conversation each: a moved session never pushes out another of the
        # same user (each keeps at most MAX_SESSIONS_PER_USER on a worker).
        convs = [f"c-{uuid.uuid4().hex[:6]}" for _ in range(4)]
        owner = {c: f"u{i}" for i, c in enumerate(convs)}
        for i, c in enumerate(convs):
            code = f"x = {i}\nprint(x)\n" + (MAKE_DF if i == 0 else "")
            assert (await executor.run(owner[c], c, code)).status == "ok"
        hosts = {c: host_of(executor, owner[c], c) for c in convs}
        assert set(hosts.values()) == {"w3", "w4"}  # spread by the sessions each holds
        victim = hosts[convs[0]]
        survivor = next(c for c in convs if hosts[c] != victim)
        victim_user = owner[convs[0]]
        before = await executor.run(
            victim_user, convs[0], "open('kept.txt', 'w').write('acknowledged')"
        )
        kept_id = before.files[0].id

        rerun = asyncio.Event()
        hit: list[float] = []

        async def on_output(name: str, text: str) -> None:
            if "start" in text and hit:
                rerun.set()  # the second start: the code runs again, elsewhere
            if "start" in text and not hit:
                hit.append(0.0)
                started.set()

        started = asyncio.Event()
        code = f"print('start', flush=True)\nimport time\ntime.sleep(3)\n({SAME_DF}, x)"
        run = asyncio.create_task(executor.run(victim_user, convs[0], code, on_output=on_output))
        async with asyncio.timeout(20):
            await started.wait()
        proc = pair[victim].proc
        if how == "kill":
            os.killpg(proc.pid, signal.SIGKILL)  # the agent and its sandboxes, by PID
        else:
            os.killpg(proc.pid, signal.SIGSTOP)  # alive but silent: a cut link
        hit_at = time.monotonic()
        async with asyncio.timeout(LOST_WITHIN):
            await rerun.wait()
        detected = time.monotonic() - hit_at
        result = await asyncio.wait_for(run, 20)
        # A fresh interpreter on another worker, given the checkpoint the bot kept: the
        # DataFrame is back, equal to the one before, and the model is told.
        assert result.session_restarted and result.notes[0] == HOST_LOST_RESTORED_NOTE
        assert result.notes[1].startswith("The session was restarted: restored 3 variables")
        assert result.value == "(True, 0)", result
        assert host_of(executor, victim_user, convs[0]) != victim
        # The other worker's conversations kept their variables.
        for c in convs:
            if hosts[c] != victim:
                assert (await executor.run(owner[c], c, "x")).value == str(convs.index(c))
        assert (await executor.run(owner[survivor], survivor, "x")).status == "ok"
        # Output acknowledged before the loss is still there, bytes and metadata.
        assert await store.read_bytes(victim_user, kept_id) == b"acknowledged"
        print(f"{how}: rerun started {detected:.2f} s after the worker was hit")


async def test_killed_worker_is_replaced_within_5_s(
    make_remote: RemoteFactory, pair: dict[str, Process]
) -> None:
    await _lose_a_worker(make_remote, pair, "kill")


async def test_silent_worker_is_replaced_within_5_s(
    make_remote: RemoteFactory, pair: dict[str, Process]
) -> None:
    await _lose_a_worker(make_remote, pair, "stop")


class Stubborn(RemoteExecutor):
    """A bot process that would place every new session on one given worker."""

    def __init__(self, *args: object, prefer: str) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.prefer = prefer

    async def _choose(self, exclude: set[str]) -> str:
        await super()._choose(exclude)  # waits for heartbeats like the real one
        return self.prefer


async def test_two_bots_never_place_one_session_twice(
    make_remote: RemoteFactory, pair: dict[str, Process]
) -> None:
    async with make_remote() as (first, store):
        a = Stubborn(first.settings, store, prefer="w3")
        b = Stubborn(first.settings, store, prefer="w4")
        await a.start()
        await b.start()
        try:
            c = f"race-{uuid.uuid4().hex[:6]}"
            ra, rb = await asyncio.gather(
                a.run("u", c, "import os\nos.getpid()"), b.run("u", c, "import os\nos.getpid()")
            )
            assert host_of(a, "u", c) == host_of(b, "u", c)
            assert ra.value == rb.value  # one interpreter answered both
        finally:
            await a.close()
            await b.close()


async def test_a_restarted_bot_finds_its_sessions(
    make_remote: RemoteFactory, pair: dict[str, Process]
) -> None:
    c = f"c-{uuid.uuid4().hex[:6]}"
    async with make_remote() as (executor, _):
        await executor.run("u", c, "z = 'still here'")
    async with make_remote() as (executor, _):  # a new bot process: only the KV remembers
        result = await executor.run("u", c, "z")
        assert result.value == "'still here'" and not result.session_restarted


async def test_drained_worker_takes_no_new_sessions_and_exits_when_idle(
    make_remote: RemoteFactory, pair: dict[str, Process]
) -> None:
    async with make_remote() as (executor, _):
        old = f"c-{uuid.uuid4().hex[:6]}"
        await executor.run("u", old, "v = 1")
        drained = host_of(executor, "u", old)
        assert await executor.drain(drained) == 1
        for _ in range(3):
            new = f"c-{uuid.uuid4().hex[:6]}"
            await executor.run("u", new, "1")
            assert host_of(executor, "u", new) != drained
        assert (await executor.run("u", old, "v")).value == "1"  # still served there
        assert await executor.reset("u", old)  # its last session ends ...
        returncode = await asyncio.to_thread(pair[drained].proc.wait, 15)
        assert returncode == 0  # ... and it exits on its own


async def test_no_worker_is_a_clear_error(make_remote: RemoteFactory) -> None:
    async with make_remote(LABBOT_HOST_DEAD_AFTER_S=1) as (executor, _):
        started = time.monotonic()
        with pytest.raises(SandboxUnavailable, match="No worker machine"):
            await executor.run("u", "nobody-home", "1")
        assert time.monotonic() - started < 5


async def test_a_worker_may_only_use_its_own_subjects(nats: Nats) -> None:
    violations: asyncio.Queue[str] = asyncio.Queue()
    async with connected_as(nats, "w1", violations) as nc:
        await nc.subscribe(bus.exec_subject("w1"))  # its own: fine
        await nc.flush()
        assert violations.empty()
        await nc.subscribe(bus.exec_subject("w2"))  # another worker's work
        await nc.publish(bus.exec_subject("w2"), b"{}")  # calling another worker
        await nc.flush()
        found = [await asyncio.wait_for(violations.get(), 5) for _ in range(2)]
        assert all("permissions violation" in f.lower() for f in found), found
    env = nats.worker_env("w1")
    refused = Client()
    try:
        with pytest.raises(Exception, match="(?i)authorization"):
            await refused.connect(
                env["LABBOT_NATS_URL"], user="worker-w1", password="wrong", allow_reconnect=False
            )
    finally:
        await refused.close()
