"""Scale-out benchmarks: the round trip NATS adds to an execution, throughput with 1, 2 and 4
worker hosts of a quarter core each, and how fast a lost host is noticed and replaced.

Run: .venv/bin/python bench/scaleout.py [--no-cluster]
The host part needs root (network namespaces, cgroups); without it only the round trip runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labbot.app import open_store  # noqa: E402
from labbot.config import load_settings  # noqa: E402
from labbot.remote.executor import RemoteExecutor  # noqa: E402
from labbot.sandbox import CodeInterpreter  # noqa: E402
from tests.remote.cluster import Cluster, can_build  # noqa: E402
from tests.servers import nats_server, seaweedfs, start_worker  # noqa: E402


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def pool_refilled(executor) -> None:  # type: ignore[no-untyped-def]
    """Wait until the warm pool has replaced the kernel the first run took (its start would
    otherwise compete with the timed runs)."""
    if isinstance(executor, CodeInterpreter):
        await executor.sessions.wait_for_pool()
        return
    after = time.monotonic() + 0.2
    while not any(s.seen > after and s.warm >= 1 for s in executor.hosts.values()):
        executor._any_beat.clear()
        await executor._any_beat.wait()


async def timed_runs(executor, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    await executor.run("bench", "rt", "1")  # the session exists from here on
    await pool_refilled(executor)
    for _ in range(20):
        await executor.run("bench", "rt", "1")
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        result = await executor.run("bench", "rt", "1")
        samples.append(time.perf_counter() - started)
        assert result.value == "1", result.to_json()
    return samples


async def raw_nats(nats, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    import nats as nats_client

    env = nats.worker_env("w2")
    responder = await nats_client.connect(
        env["LABBOT_NATS_URL"], user=env["LABBOT_NATS_USER"], password=env["LABBOT_NATS_PASSWORD"]
    )

    async def echo(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(b"{}")

    await responder.subscribe("labbot.exec.w2", cb=echo)
    await responder.flush()
    env = nats.bot_env()
    caller = await nats_client.connect(
        env["LABBOT_NATS_URL"], user="bot", password=env["LABBOT_NATS_PASSWORD"]
    )
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await caller.request("labbot.exec.w2", b"{}", timeout=5)
        samples.append(time.perf_counter() - started)
    await caller.close()
    await responder.close()
    return samples


def round_trip(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with nats_server(root / "nats", ["w1", "w2"]) as nats, seaweedfs(root / "s3") as s3:
            worker = start_worker("w1", nats, s3, root / "w1")
            try:

                async def measure() -> tuple[list[float], list[float], list[float]]:
                    raw = await raw_nats(nats, n)
                    remote_settings = load_settings(
                        LABBOT_DATA_DIR=root / "bot",
                        LABBOT_EXECUTOR="nats",
                        **nats.bot_env(),
                        **s3.env(),
                    )
                    async with open_store(remote_settings) as store:
                        remote = RemoteExecutor(remote_settings, store)
                        await remote.start()
                        try:
                            over_nats = await timed_runs(remote, n)
                        finally:
                            await remote.close()
                    local_settings = load_settings(LABBOT_DATA_DIR=root / "local")
                    async with open_store(local_settings) as store:
                        local = CodeInterpreter(local_settings, store)
                        await local.start()
                        try:
                            here = await timed_runs(local, n)
                        finally:
                            await local.close()
                    return raw, over_nats, here

                raw, over_nats, here = asyncio.run(measure())
            finally:
                worker.stop()
    print(f"## Round trip (n={n}, `1` in a warm session, one machine, loopback)\n")
    print("| path | p50 | p90 |")
    print("|---|---|---|")
    for name, samples in (
        ("NATS request-reply alone (no-op responder)", raw),
        ("CodeInterpreter.run on this machine", here),
        ("RemoteExecutor.run via NATS and `labbot worker`", over_nats),
    ):
        ordered = sorted(samples)
        p90 = ordered[int(len(ordered) * 0.9)] * 1000
        print(f"| {name} | {p50(samples):.2f} ms | {p90:.2f} ms |")
    print(f"\nOverhead of going remote at p50: {p50(over_nats) - p50(here):.2f} ms\n")


def hosts(seconds: int) -> None:
    job = {"conversations": 16, "pool": 6}
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp), cpu_quota=0.25) as cluster:
        rows = []
        for added in (["w1"], ["w2"], ["w3", "w4"]):
            for name in added:
                cluster.add_worker(name, SANDBOX_WARM_POOL="6")
            rows.append(cluster.drive(mode="throughput", seconds=seconds, **job))
        lost = cluster.drive(
            mode="failover", seconds=15, strike_after=4, kill="w2", cut="w3", **job
        )
    base = rows[0]["per_second"]
    print("## Hosts of a quarter core each (16 conversations, ~10 ms of CPU per cell)\n")
    print("| worker hosts | executions/s | vs 1 host | p50 latency | gaps |")
    print("|---|---|---|---|---|")
    for count, row in zip((1, 2, 4), rows, strict=True):
        print(
            f"| {count} | {row['per_second']:.1f} | {row['per_second'] / base:.2f}x"
            f" | {row['p50_ms']:.0f} ms | {row['gaps']} |"
        )
    detect = [t for _, t in lost["detect_s"]]
    print("\n## A host killed (kill -9) and another cut off, 16 conversations running\n")
    print(f"- conversations on the lost hosts: {lost['affected']}, told: {lost['reported']}")
    print(f"- loss noticed after: {min(detect):.2f}–{max(detect):.2f} s")
    print(
        f"- code running again elsewhere, result back: {min(lost['report_s']):.2f}–"
        f"{max(lost['report_s']):.2f} s"
    )
    print(f"- other conversations with a wrong count: {len(lost['wrong'])}")
    print(f"- acknowledged outputs: {lost['acknowledged']}, lost: {lost['lost_outputs']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-cluster", action="store_true", help="only the round trip")
    parser.add_argument("-n", type=int, default=300, help="round trips to time")
    parser.add_argument("--seconds", type=int, default=10, help="per throughput window")
    args = parser.parse_args()
    round_trip(args.n)
    reason = can_build()
    if args.no_cluster or reason:
        print(f"(hosts part skipped: {reason or '--no-cluster'})")
        return
    hosts(args.seconds)


if __name__ == "__main__":
    main()
