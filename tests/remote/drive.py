"""The bot engine of the multi-host test: runs on the control host, drives conversations through
a RemoteExecutor and prints one JSON line of what happened.

    python -m tests.remote.drive '{"mode": "throughput", "conversations": 16, "seconds": 8}'
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from labbot.config import load_settings
from labbot.remote.executor import HOST_LOST_NOTE, RemoteExecutor
from labbot.remote.rpc import HOST_LOST_RESTORED_NOTE
from tests.conftest import make_store

# About 10 ms of CPU on this machine; x counts the cell's executions in its session.
CELL = "x = globals().get('x', 0) + 1\n_ = sum(i * i for i in range({work}))\nx"
WORK = 120_000


async def main(job: dict[str, Any]) -> dict[str, Any]:
    settings = load_settings(CODE_EXECUTION_TIMEOUT=120)
    store = make_store(settings)
    await store.start()
    executor = RemoteExecutor(settings, store)
    await executor.start()
    try:
        if job["mode"] == "throughput":
            return await throughput(executor, job)
        return await failover(executor, store, job)
    finally:
        await executor.close()
        await store.close()


def users(n: int) -> list[tuple[str, str]]:
    run = uuid.uuid4().hex[:6]
    return [(f"user{i}", f"{run}-{i}") for i in range(n)]


def set_quota(job: dict[str, Any], quota: float | None) -> None:
    """The worker hosts' CPU quota (None: unlimited), on the host's group and every group under
    it. Cgroup v1 refuses a parent quota below a child's: lower deepest first, raise top down."""
    value = -1 if quota is None else int(quota * 100_000)
    for root in job.get("cgroups", {}).values():
        groups = sorted(
            (d for d, _, files in os.walk(root) if "cpu.cfs_quota_us" in files),
            key=lambda d: d.count(os.sep),
            reverse=value != -1,
        )
        for group in groups:
            path = os.path.join(group, "cpu.cfs_quota_us")
            with open(path) as f:
                current = int(f.read())
            if value == -1 or current == -1 or current > value:
                with open(path, "w") as f:
                    f.write(str(value))


async def warm_up(
    executor: RemoteExecutor, convs: list[tuple[str, str]], job: dict[str, Any]
) -> None:
    """Start every session and refill the warm pools with the CPU limits lifted (a kernel start
    takes seconds at a quarter core), then put the limits on for the measurement."""
    set_quota(job, None)
    results = await asyncio.gather(*(executor.run(u, c, "x = 0") for u, c in convs))
    bad = [r.to_json() for r in results if r.status != "ok"]
    if bad:
        raise RuntimeError(f"warm-up failed: {bad[:2]}")
    # Wait for full pools, as told by heartbeats sent after the sessions started.
    hosts, pool = job.get("pids", {}).keys(), job.get("pool", 0)
    after = time.monotonic() + 0.2

    def ready(host: str) -> bool:
        state = executor.hosts.get(host)
        return state is not None and state.seen > after and state.warm >= pool

    async with asyncio.timeout(180):
        while not all(ready(h) for h in hosts):
            executor._any_beat.clear()
            await executor._any_beat.wait()
    set_quota(job, job.get("quota"))


async def throughput(executor: RemoteExecutor, job: dict[str, Any]) -> dict[str, Any]:
    convs = users(job["conversations"])
    await warm_up(executor, convs, job)
    cell = CELL.format(work=job.get("work", WORK))
    counts = dict.fromkeys(convs, 0)
    latencies: list[float] = []
    gaps = 0
    end = time.monotonic() + job["seconds"]

    async def loop(conv: tuple[str, str]) -> None:
        nonlocal gaps
        while time.monotonic() < end:
            started = time.perf_counter()
            result = await executor.run(*conv, cell)
            latencies.append(time.perf_counter() - started)
            counts[conv] += 1
            if result.value != str(counts[conv]) or result.session_restarted:
                gaps += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(c) for c in convs))
    elapsed = time.monotonic() - started
    hosts = {executor.placements[_key(*c)].host for c in convs}
    await asyncio.gather(*(executor.reset(*c) for c in convs))
    return {
        "executions": sum(counts.values()),
        "per_second": sum(counts.values()) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "gaps": gaps,
        "hosts": sorted(hosts),
    }


def _key(user: str, conversation: str) -> str:
    from labbot.remote.bus import session_key

    return session_key(user, conversation)


async def failover(executor: RemoteExecutor, store: Any, job: dict[str, Any]) -> dict[str, Any]:
    convs = users(job["conversations"])
    await warm_up(executor, convs, job)
    placed = {c: executor.placements[_key(*c)].host for c in convs}
    kill, cut = job["kill"], job["cut"]
    cell = CELL.format(work=job.get("work", WORK))
    expected = dict.fromkeys(convs, 0)
    hit_at = 0.0
    reported: dict[tuple[str, str], float] = {}
    wrong: list[str] = []
    pools: dict[str, tuple[int, int]] = {}
    acknowledged: list[tuple[str, str, bytes]] = []
    end = time.monotonic() + job["seconds"]

    async def loop(conv: tuple[str, str]) -> None:
        n = 0
        while time.monotonic() < end:
            n += 1
            code = cell
            if n % 5 == 0:  # now and then, an output file
                code = f"open('out{n}.txt', 'w').write('{conv[1]}:{n}')\n" + cell
            result = await executor.run(*conv, code)
            if result.session_restarted:
                lost = HOST_LOST_NOTE in result.notes or HOST_LOST_RESTORED_NOTE in result.notes
                if not lost or conv in reported:
                    wrong.append(f"{conv}: unexpected restart {result.notes}")
                reported[conv] = time.monotonic() - hit_at
                if HOST_LOST_RESTORED_NOTE not in result.notes:
                    expected[conv] = 0  # no checkpoint: a fresh interpreter
                # else: x came back from the checkpoint of the last acknowledged cell
            expected[conv] += 1
            if result.value != str(expected[conv]):
                wrong.append(f"{conv}: x={result.value}, expected {expected[conv]}")
            for f in result.files:
                acknowledged.append((conv[0], f.id, f"{conv[1]}:{n}".encode()))

    async def strike() -> None:
        nonlocal hit_at
        await asyncio.sleep(job["strike_after"])
        pools.update({h: (s.warm, s.sessions) for h, s in executor.hosts.items()})
        os.killpg(job["pids"][kill], signal.SIGKILL)  # the worker agent and its sandboxes
        cut_link = ["ip", "link", "set", job["veths"][cut], "down"]
        await asyncio.to_thread(subprocess.run, cut_link, check=True)
        hit_at = time.monotonic()

    await asyncio.gather(strike(), *(loop(c) for c in convs))
    affected = {c for c in convs if placed[c] in (kill, cut)}
    lost_outputs = 0
    for user, file_id, content in acknowledged:
        try:
            if await store.read_bytes(user, file_id) != content:
                lost_outputs += 1
        except Exception:
            lost_outputs += 1
    return {
        "affected": len(affected),
        "reported": len(reported),
        "unexpected": sorted(f"{c}" for c in set(reported) - affected),
        "report_s": sorted(reported.values()),
        "detect_s": [(h, round(t - hit_at, 2)) for h, t in executor.losses if t >= hit_at],
        "wrong": wrong[:10],
        "acknowledged": len(acknowledged),
        "lost_outputs": lost_outputs,
        "placed": sorted(set(placed.values())),
        "pools": pools,
    }


if __name__ == "__main__":
    outcome = asyncio.run(main(json.loads(sys.argv[1])))
    print(json.dumps(outcome))
