"""Code interpreter benchmarks: warm and first executions beside the original design (a fresh
Python per call that imports pandas), a typical analysis step, memory per idle session, and
throughput with 20 users at once.

Memory per idle session is read from the host: USS (pages only this session maps:
Private_Clean + Private_Dirty) and PSS (each shared page divided among its sharers) summed over
every process of the session from /proc/PID/smaps_rollup, beside the session cgroup's usage.
"Idle sessions that fit in 2 GiB" is (2 GiB - what the idle sessions share) / median USS: the
shared part is paid once, each further session adds its USS.

Run: .venv/bin/python bench/sandbox.py [--quick] [--memory-only] [--sessions N]
(needs the runtime from `make setup`; SANDBOX_SHARE_MEMORY=on|off from the environment)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from labbot.app import open_store
from labbot.config import load_settings
from labbot.files import FileStore, file_chunks
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


KSM = Path("/sys/kernel/mm/ksm")
TWO_GIB_MIB = 2048
MERGE_WAIT_S = 600.0  # at most, for KSM's scans


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB counters of one process's /proc/PID/smaps_rollup (empty if it is gone)."""
    counters: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return counters
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            counters[parts[0].rstrip(":")] = int(parts[1])
    return counters


def session_memory(session) -> tuple[float, float, float | None]:
    """USS, PSS (MiB, summed over the session's processes: bubblewrap's monitor outside, the
    kernel and anything it started) and the cgroup's usage (MiB, None without a v1 cgroup)."""
    kernel = session.kernel
    pids = set(kernel.cgroup.pids()) if kernel.cgroup is not None else set()
    pids.add(kernel.process.pid)
    uss = pss = 0
    for pid in pids:
        counters = smaps_rollup(pid)
        uss += counters.get("Private_Clean", 0) + counters.get("Private_Dirty", 0)
        pss += counters.get("Pss", 0)
    usage = None
    dirs = getattr(kernel.cgroup, "dirs", None)
    if dirs and "memory" in dirs:
        usage = int((dirs["memory"] / "memory.usage_in_bytes").read_text()) / 2**20
    return uss / 1024, pss / 1024, usage


def ksm_counter(name: str) -> int:
    """A counter of the kernel's same-page merging (0 where there is none)."""
    try:
        return int((KSM / name).read_text())
    except (OSError, ValueError):
        return 0


def ksm_stat(pid: int) -> dict[str, str]:
    """/proc/PID/ksm_stat (Linux 6.1+): the process's merging counters and flags."""
    try:
        lines = Path(f"/proc/{pid}/ksm_stat").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.replace(":", " ").split(None, 1) for line in lines if line.strip())


def merged_pages(pids: list[int]) -> int:
    """Pages of these processes that KSM merged."""
    return sum(int(ksm_stat(pid).get("ksm_merging_pages", "0")) for pid in pids)


async def wait_for_merging(pids: list[int]) -> str:
    """When KSM runs and the sessions marked pages: wait until the pages merged have not grown
    for 3 full scans (a page merges once it is seen unchanged in two; one that failed is skipped
    for a few), at most MERGE_WAIT_S; a note of what happened."""
    if ksm_counter("run") != 1:
        return "KSM off"
    if not any(ksm_stat(pid).get("ksm_mergeable", "").strip() == "yes" for pid in pids):
        return "KSM on, no page marked"
    began, scans, merged = time.perf_counter(), ksm_counter("full_scans"), -1
    waited = still = 0
    while time.perf_counter() - began < MERGE_WAIT_S:
        await asyncio.sleep(0.5)
        if ksm_counter("full_scans") == scans:
            continue
        scans, waited, now = ksm_counter("full_scans"), waited + 1, merged_pages(pids)
        still = still + 1 if now <= merged else 0
        if waited >= 3 and still >= 3:  # KSM skips pages that failed to merge for a few scans
            break
        merged = max(merged, now)
    return (
        f"KSM on: {waited} full scans in {time.perf_counter() - began:.0f} s, these sessions'"
        f" merged pages {merged_pages(pids)}, machine pages_sharing {ksm_counter('pages_sharing')}"
    )


def ksmd_cpu_seconds() -> float:
    """CPU seconds the KSM scanner thread (ksmd) has used so far (0 when there is none)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if fields[0].endswith("(ksmd"):
            utime, stime = fields[1].split()[11:13]
            return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")
    return 0.0


def memory_rows(
    label: str, measured: list[tuple[float, float, float | None]]
) -> list[tuple[str, str]]:
    """USS, PSS and cgroup rows for sessions in one state, and how many fit in 2 GiB."""
    uss = statistics.median(m[0] for m in measured)
    pss = statistics.median(m[1] for m in measured)
    shared = max(sum(m[1] for m in measured) - sum(m[0] for m in measured), 0.0)
    fit = int((TWO_GIB_MIB - shared) / uss) if uss > 0 else 0
    rows = [
        (f"{label}: USS (median of {len(measured)})", f"{uss:8.1f} MiB"),
        (f"{label}: PSS", f"{pss:8.1f} MiB"),
    ]
    usages = [m[2] for m in measured if m[2] is not None]
    rows.append((f"{label}: shared among them (sum PSS - sum USS)", f"{shared:8.1f} MiB"))
    rows.append((f"{label}: sessions that fit in 2 GiB", f"{fit:8d}   ((2048 - shared) / USS)"))
    if usages:  # a merged page stays charged to one cgroup: the mean is the fair figure
        mean = sum(usages) / len(usages)
        rows[2:2] = [
            (
                f"{label}: cgroup usage",
                f"{mean:8.1f} MiB mean   (median {statistics.median(usages):.1f} MiB)",
            )
        ]
        rows.append(
            (
                f"{label}: sessions that fit in 2 GiB by cgroup usage",
                f"{int(TWO_GIB_MIB / mean):8d}   (2048 / mean; page tables and /tmp included)",
            )
        )
    return rows


async def idle_memory(interpreter: CodeInterpreter, count: int) -> list[tuple[str, str]]:
    """Open ``count`` sessions (one cell each), let them idle (and merge, when KSM runs), and
    measure them; then run one more cell in each (its latency) and measure them again."""
    users = [f"idle{n}" for n in range(count)]
    for user in users:
        result = await interpreter.run(user, "c", "1")
        assert result.status == "ok", result
    sessions = [s for s in interpreter.sessions.sessions.values() if s.user in users]
    pids = [p for s in sessions if s.kernel.cgroup for p in s.kernel.cgroup.pids()]
    cpu, began = ksmd_cpu_seconds(), time.perf_counter()
    note = await wait_for_merging(pids)
    ksmd = (ksmd_cpu_seconds() - cpu) / (time.perf_counter() - began) * 100
    share = getattr(interpreter.jail, "share_memory", "n/a (a labbot before the setting)")
    rows = [("idle sessions: memory sharing", f"{share}; {note}; ksmd CPU {ksmd:.1f}%")]
    rows += memory_rows("idle session", [session_memory(s) for s in sessions])
    again = []
    for user in users:
        ms, result = await timed(interpreter.run(user, "c", "print(1)"))
        assert result.status == "ok", result
        again.append(ms)
    rows.append(("print(1) in each idle session, after the wait", stats(again)))
    rows += memory_rows("after that cell", [session_memory(s) for s in sessions])[:1]
    return rows


async def typical_step(
    interpreter: CodeInterpreter, store: FileStore, tmp: Path
) -> list[tuple[str, str]]:
    """A typical step: load a 10 MB CSV, describe it, plot it (first and second time)."""
    csv = tmp / "sales.csv"
    make_csv(csv, 10)
    record = (await store.save("analyst", "sales.csv", file_chunks(csv))).record
    step = (
        f"df = load_file('{record.id}')\nsummary = df.describe()\n"
        "df.groupby('region')['units'].sum().plot(kind='bar')\nsummary"
    )
    await interpreter.sessions.wait_for_pool()
    ms_first, result = await timed(interpreter.run("analyst", "c", step))
    assert result.status == "ok" and result.files, result
    ms_second, _ = await timed(interpreter.run("analyst", "c", step))
    return [
        ("10 MB CSV: load + describe + plot, first time", f"{ms_first:8.1f} ms"),
        ("10 MB CSV: load + describe + plot, second time", f"{ms_second:8.1f} ms"),
    ]


async def throughput(interpreter: CodeInterpreter, seconds: int) -> tuple[str, str]:
    """Executions per second with 20 users, each with a warm session, all at once."""
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
    rate = done / (time.perf_counter() - start)
    return ("executions/s, 20 users at once (2 cores)", f"{rate:8.1f} /s")


async def main(
    quick: bool, memory_only: bool, idle_sessions: int, only_throughput: bool = False
) -> None:
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
                if only_throughput:
                    rows.append(await throughput(interpreter, 3 if quick else 10))
                    return _print(rows)
                await interpreter.sessions.wait_for_pool()
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
                if not memory_only:
                    rows.append(
                        (
                            "print(1), original design: fresh python + import pandas",
                            stats(original_design(settings.LABBOT_RUNTIME_DIR, 5 if quick else 15)),
                        )
                    )
                rows += await idle_memory(interpreter, idle_sessions)
                if not memory_only:
                    rows += await typical_step(interpreter, store, Path(tmp))
                    rows.append(await throughput(interpreter, 3 if quick else 10))
            finally:
                await interpreter.close()
    _print(rows)


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="latency and memory rows only")
    parser.add_argument("--sessions", type=int, default=8, help="idle sessions to measure")
    parser.add_argument("--throughput-only", action="store_true", help="the 20-users row only")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.memory_only, args.sessions, args.throughput_only))
