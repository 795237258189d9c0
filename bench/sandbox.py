"""Code interpreter benchmarks: warm and first executions beside the original design (a fresh
Python per call that imports pandas), a typical analysis step, memory per idle session, and
throughput with 20 users at once.

Run: .venv/bin/python bench/sandbox.py [--quick] [--throughput-only]   (needs the runtime from
`make setup`; --throughput-only runs just the 20-users row, for before/after comparisons)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from labbot.app import open_store
from labbot.config import load_settings
from labbot.sandbox import CodeInterpreter


def stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(ordered):8.1f} ms   p90 {p90:8.1f} ms   (n={len(ordered)})"


async def timed(coro) -> tuple[float, object]:
    start = time.perf_counter()
    result = await coro
    return (time.perf_counter() - start) * 1000, result


def original_design(runtime: Path, runs: int) -> list[float]:
    """The original bot: a fresh Python process per call, importing pandas, running print(1)."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [str(runtime / "bin" / "python"), "-c", "import pandas\nprint(1)"],
            check=True,
            capture_output=True,
        )
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def make_csv(path: Path, megabytes: int) -> None:
    import random

    rng = random.Random(1)
    with path.open("w") as handle:
        handle.write("day,region,units,price,discount\n")
        while handle.tell() < megabytes * 2**20:
            handle.write(
                f"{rng.randint(1, 365)},{rng.choice('NSEW')},{rng.randint(1, 500)},"
                f"{rng.uniform(1, 100):.2f},{rng.random():.3f}\n"
            )


async def throughput(interpreter: CodeInterpreter, seconds: float) -> float:
    """Executions per second: 20 users, each with a warm session, all at once."""
    users = [f"load{n}" for n in range(20)]
    for user in users:
        await interpreter.run(user, "c", "1")
    done = 0
    deadline = time.perf_counter() + seconds

    async def hammer(user: str) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await interpreter.run(user, "c", "print(1)")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(hammer(u) for u in users))
    return done / (time.perf_counter() - start)


async def main(quick: bool, only_throughput: bool = False) -> None:
    runs = 30 if quick else 200
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        settings = load_settings(
            LABBOT_DATA_DIR=tmp,
            SANDBOX_WARM_POOL=2,
            MAX_SESSIONS=32,
            MAX_FILE_SIZE_MB=64,
            SANDBOX_MEMORY_MB=512,  # 20 users at once must fit this machine's memory
        )
        async with open_store(settings) as store:
            interpreter = CodeInterpreter(settings, store)
            await interpreter.start()
            try:
                await interpreter.sessions.wait_for_pool()
                if only_throughput:
                    rate = await throughput(interpreter, 3 if quick else 10)
                    print(f"executions/s, 20 users at once: {rate:8.1f} /s")
                    return
                # First execution of a new session (a warm pooled kernel), then warm print(1).
                first = []
                for n in range(5 if quick else 15):
                    await interpreter.sessions.wait_for_pool()
                    ms, _ = await timed(interpreter.run(f"user{n}", "c", "print(1)"))
                    first.append(ms)
                warm = []
                for _ in range(runs):
                    ms, _ = await timed(interpreter.run("user0", "c", "print(1)"))
                    warm.append(ms)
                rows.append(("print(1), warm session", stats(warm)))
                rows.append(("print(1), first execution of a new session", stats(first)))
                rows.append(
                    (
                        "print(1), original design: fresh python + import pandas",
                        stats(original_design(settings.LABBOT_RUNTIME_DIR, 5 if quick else 15)),
                    )
                )

                # A typical step: load a 10 MB CSV, describe it, plot it.
                csv = Path(tmp) / "sales.csv"
                make_csv(csv, 10)
                from labbot.files import file_chunks

                record = (await store.save("analyst", "sales.csv", file_chunks(csv))).record
                step = (
                    f"df = load_file('{record.id}')\nsummary = df.describe()\n"
                    "df.groupby('region')['units'].sum().plot(kind='bar')\nsummary"
                )
                await interpreter.sessions.wait_for_pool()
                ms_first, result = await timed(interpreter.run("analyst", "c", step))
                assert result.status == "ok" and result.files, result
                ms_second, _ = await timed(interpreter.run("analyst", "c", step))
                rows.append(
                    ("10 MB CSV: load + describe + plot, first time", f"{ms_first:8.1f} ms")
                )
                rows.append(
                    ("10 MB CSV: load + describe + plot, second time", f"{ms_second:8.1f} ms")
                )

                # Memory per idle session (the cgroup's own count when there is one).
                usages = []
                for session in list(interpreter.sessions.sessions.values())[:5]:
                    cgroup = session.kernel.cgroup
                    dirs = getattr(cgroup, "dirs", None)
                    if dirs:
                        usages.append(int((dirs["memory"] / "memory.usage_in_bytes").read_text()))
                if usages:
                    rows.append(
                        (
                            "memory per idle session (cgroup usage)",
                            f"{statistics.median(usages) / 2**20:8.1f} MiB",
                        )
                    )

                # Throughput: 20 users, each with a warm session, all at once.
                rate = await throughput(interpreter, 3 if quick else 10)
                rows.append(("executions/s, 20 users at once (2 cores)", f"{rate:8.1f} /s"))
            finally:
                await interpreter.close()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.throughput_only))
