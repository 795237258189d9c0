"""File store benchmarks: ingest speed and memory, list/get latency at scale, sweep time.

Run: make bench   (or: .venv/bin/python bench/files.py [--quick])
Prints a table; figures go into the closing note and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from labbot.app import open_store
from labbot.config import load_settings
from labbot.files.names import new_file_id

MIB = 1024 * 1024


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def ingest(data_dir: Path, total_mib: int) -> None:
    """Child mode: stream ``total_mib`` MiB into the store and print MB/s and peak memory."""
    settings = load_settings(
        LABBOT_DATA_DIR=data_dir,
        MAX_FILE_SIZE_MB=total_mib + 1,
        MAX_STORAGE_MB_PER_USER=total_mib + 1,
    )
    async with open_store(settings) as store:
        chunk = os.urandom(MIB)

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(total_mib):
                yield chunk

        before = peak_rss_mib()
        start = time.perf_counter()
        await store.save("bench", "big.bin", stream())
        seconds = time.perf_counter() - start
        print(f"{total_mib / seconds:.1f} {before:.1f} {peak_rss_mib():.1f}")


def run_ingest(total_mib: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--ingest", str(total_mib), tmp],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    speed, before, peak = map(float, out.split())
    return speed, before, peak


def populate(db_path: Path, users: int, per_user: int, *, expired: bool) -> list[tuple[str, str]]:
    """Insert records straight into SQLite (setup only; the measured calls use the store)."""
    now = datetime.now(UTC)
    expires = now - timedelta(hours=1) if expired else now + timedelta(hours=48)
    created_us = int(now.timestamp() * 1e6)
    expires_us = int(expires.timestamp() * 1e6)
    rows, keys = [], []
    for u in range(users):
        for _ in range(per_user):
            file_id = new_file_id()
            keys.append((f"user{u}", file_id))
            rows.append(
                (
                    file_id,
                    f"user{u}",
                    "data.csv",
                    "csv",
                    1,
                    "0" * 64,
                    "upload",
                    created_us,
                    expires_us,
                    None,
                )
            )
    db = sqlite3.connect(db_path)
    db.executemany(
        "INSERT INTO files (id, user, name, kind, size, sha256, source, created_us, expires_us,"
        " preview) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()
    return keys


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def lookups(users: int, per_user: int, calls: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        settings = load_settings(LABBOT_DATA_DIR=tmp)
        async with open_store(settings) as store:
            keys = populate(settings.database_path, users, per_user, expired=False)
            timings: dict[str, list[float]] = {"list": [], "get": []}
            for _ in range(calls):
                user, file_id = random.choice(keys)
                start = time.perf_counter()
                listed = await store.list(user)
                timings["list"].append((time.perf_counter() - start) * 1000)
                assert len(listed) == per_user
                start = time.perf_counter()
                await store.get(user, file_id)
                timings["get"].append((time.perf_counter() - start) * 1000)
    return timings


async def sweep(files: int) -> float:
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        settings = load_settings(LABBOT_DATA_DIR=tmp)
        async with open_store(settings) as store:
            keys = populate(settings.database_path, files // 20, 20, expired=True)
            for user, file_id in keys:
                path = store.blobs.path(user, file_id)
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(b"x")
            start = time.perf_counter()
            result = await store.sweep()
            seconds = time.perf_counter() - start
            assert result.files == files and not any(store.blobs.root.glob("user*/*"))
    return seconds


async def main(quick: bool) -> None:
    rows = []
    for size in [16, 64] if quick else [100, 1024]:
        speed, before, peak = run_ingest(size)
        rows.append(
            (
                f"ingest {size} MiB stream",
                f"{speed:.0f} MiB/s",
                f"peak RSS {peak:.0f} MiB (before {before:.0f})",
            )
        )
    users = 500 if quick else 10_000
    timings = await lookups(users, 20, 500 if quick else 2000)
    for name, values in timings.items():
        rows.append(
            (
                f"{name} ({users:,} users x 20 files)",
                f"p50 {pct(values, 50):.3f} ms",
                f"p90 {pct(values, 90):.3f} ms",
            )
        )
    files = 5_000 if quick else 100_000
    seconds = await sweep(files)
    rows.append(
        (f"sweep {files:,} expired files", f"{seconds:.2f} s", f"{files / seconds:,.0f} files/s")
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'result':<16}  detail")
    for name, result, detail in rows:
        print(f"{name:<{width}}  {result:<16}  {detail}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--ingest", nargs=2, metavar=("MIB", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest:
        asyncio.run(ingest(Path(args.ingest[1]), int(args.ingest[0])))
    else:
        asyncio.run(main(args.quick))
