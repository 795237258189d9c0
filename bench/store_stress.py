"""Processes sharing one data dir: the stress run of tests/files/test_shared_store.py, longer.

The bot (with its sweeper) and two terminal chats (``open_app``), real `labbot files
add/list/rm` commands and `files add` (short-lived files) + `files sweep`, saving, listing,
deleting and sweeping at once; one chat killed with SIGKILL halfway. Then: every acknowledged
save is there with its bytes, `PRAGMA integrity_check`, no call failed. The same on MongoDB
(the in-memory stand-in, tasks in one process; a real server when LABBOT_TEST_MONGODB_URI is
set).

Run: .venv/bin/python bench/store_stress.py [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.backends import REAL_MONGO, mongo_database  # noqa: E402
from tests.files.stress import Counts, run_mongo, run_sqlite  # noqa: E402


def row(backend: str, counts: Counts, wall: float) -> list[str]:
    """One line of the table."""
    return [
        backend,
        f"{wall:.0f} s",
        str(counts.acknowledged),
        str(counts.deleted),
        f"{counts.found}/{counts.expected}",
        f"{counts.intact}/{counts.found}",
        counts.integrity,
        str(len(counts.failures)),
        str(counts.missing_midway),
        f"{counts.ephemeral - counts.ephemeral_left}/{counts.ephemeral}",
        f"{counts.calls} ({counts.cut} cut at the end)",
        f"{counts.killed}, after {counts.killed_after} saves",
    ]


HEADER = [
    "backend",
    "wall",
    "saves acked",
    "deleted",
    "found",
    "bytes intact",
    "integrity",
    "failed calls",
    "missing midway",
    "swept",
    "commands",
    "killed",
]


async def main(seconds: float) -> int:
    rows: list[list[str]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="labbot-stress-") as tmp:
        began = time.monotonic()
        counts = await run_sqlite(Path(tmp) / "sqlite" / "data", seconds)
        rows.append(row("sqlite (processes)", counts, time.monotonic() - began))
        failures += counts.failures
        backends = ["mongo-standin"] + (["mongo"] if REAL_MONGO else [])
        for backend in backends:
            began = time.monotonic()
            async with mongo_database(backend) as database:
                counts = await run_mongo(database, Path(tmp) / backend / "files", seconds)
            rows.append(row(f"{backend} (tasks)", counts, time.monotonic() - began))
            failures += counts.failures
    widths = [max(len(line[i]) for line in [HEADER, *rows]) for i in range(len(HEADER))]
    for line in [HEADER, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    for failure in failures[:10]:
        print("failure:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each run")
    parser.add_argument("--quick", action="store_true", help="10 s runs")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(10.0 if args.quick else args.seconds)))
