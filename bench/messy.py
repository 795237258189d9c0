"""Messy tables: how many corpus files load right, and how fast a big clean CSV loads.

Run: .venv/bin/python bench/messy.py [--rows 1500000] [--sandbox] [--skip-big]

1. The messy corpus (tests/fixtures/messy, facts in messy_manifest.json) loaded by the sandbox
   loaders in the runtime's Python: N/M overall and per class, and what failed.
2. A clean CSV (default 1.5 M rows × 5 columns, about 100 MB) read four ways, each in a fresh
   runtime process: pandas.read_csv defaults, pyarrow.csv.read_csv(...).to_pandas(),
   read_csv(engine="pyarrow"), and load_file's loader; --rounds fresh processes per reader,
   interleaved, --reads timed reads in each: the median seconds and the peak RSS.
3. With --sandbox, the same corpus and the big CSV through a real sandbox session
   (CodeInterpreter, as `labbot exec` runs code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RUNTIME_PY = Path(os.environ.get("LABBOT_RUNTIME_DIR") or REPO / ".runtime") / "bin" / "python"
FIXTURES = REPO / "tests" / "fixtures"
LOADERS = REPO / "labbot" / "sandbox" / "runtime" / "loaders.py"

CORPUS_RUNNER = r"""
import importlib.util, json, os, sys, warnings
warnings.simplefilter("ignore")
fixtures, loaders_path = sys.argv[1], sys.argv[2]
sys.path.insert(0, fixtures)
spec = importlib.util.spec_from_file_location("loaders", loaders_path)
loaders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loaders)
import messy_check
manifest = json.load(open(os.path.join(fixtures, "messy_manifest.json"), encoding="utf-8"))
out = []
for entry in manifest["files"]:
    path = os.path.join(fixtures, "messy", entry["file"])
    try:
        obj = loaders.load(path, loader=messy_check.loader_for(entry["file"]), name=entry["file"])
        problems = messy_check.check(obj, entry)
        shown = loaders.preview(obj)
    except Exception as exc:
        problems, shown = [f"{type(exc).__name__}: {exc}"[:300]], ""
    out.append({"file": entry["file"], "class": entry["class"], "problems": problems,
                "preview": shown})
print(json.dumps(out))
"""

BIG_RUNNER = r"""
import importlib.util, json, resource, sys, time, warnings
warnings.simplefilter("ignore")
how, path, loaders_path = sys.argv[1], sys.argv[2], sys.argv[3]
import pandas as pd, pyarrow.csv
spec = importlib.util.spec_from_file_location("loaders", loaders_path)
loaders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loaders)
read = {
    "pandas.read_csv": lambda: pd.read_csv(path),
    "pyarrow.csv": lambda: pyarrow.csv.read_csv(path).to_pandas(),
    "engine=pyarrow": lambda: pd.read_csv(path, engine="pyarrow"),
    "load_file": lambda: loaders.load(path, loader="csv", name="big.csv"),
}[how]
times = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    df = read()
    times.append(time.perf_counter() - start)
    shape = df.shape
    del df
print(json.dumps({"times": times, "shape": list(shape),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def corpus_results() -> list[dict]:
    """Load every corpus file in the runtime's Python; each file's problems (empty = right)."""
    proc = subprocess.run(
        [str(RUNTIME_PY), "-c", CORPUS_RUNNER, str(FIXTURES), str(LOADERS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(proc.stdout))


def print_corpus(results: list[dict], title: str) -> None:
    classes: dict[str, list[bool]] = {}
    for r in results:
        classes.setdefault(r["class"], []).append(not r["problems"])
    ok = sum(not r["problems"] for r in results)
    print(f"\n{title}: {ok}/{len(results)} files load right")
    print(f"  {'class':<18} {'right':>7}")
    for cls, marks in sorted(classes.items()):
        print(f"  {cls:<18} {sum(marks):>3}/{len(marks):<3}")
    for r in results:
        if r["problems"]:
            print(f"  FAIL {r['file']}: {'; '.join(r['problems'])[:400]}")


def write_big_csv(path: Path, rows: int) -> None:
    """A clean CSV: id, two floats, a text column, a count (about 66 bytes a row)."""
    import random

    rng = random.Random(7)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    with path.open("w", encoding="utf-8") as fh:
        fh.write("id,price,weight,label,count\n")
        chunk = []
        for i in range(rows):
            price, weight = rng.uniform(0, 10_000), rng.uniform(-500, 500)
            label = f"{rng.choice(words)}_{rng.randrange(1000)}_{rng.choice(words)}_{i % 97}"
            label += f"_{rng.choice(words)}_{rng.choice(words)}"
            chunk.append(f"{i},{price:.6f},{weight:.6f},{label},{rng.randrange(100000)}\n")
            if len(chunk) == 100_000:
                fh.write("".join(chunk))
                chunk = []
        fh.write("".join(chunk))


READERS = ("pandas.read_csv", "pyarrow.csv", "engine=pyarrow", "load_file")


def bench_big(path: Path, rounds: int, reads: int) -> list[tuple[str, dict]]:
    """Each reader in a fresh process per round, the rounds interleaved (a loaded machine slows
    all four alike); the median of every timed read and the largest peak RSS."""
    got: dict[str, dict] = {how: {"times": [], "peak_mib": 0.0} for how in READERS}
    for _ in range(rounds):
        for how in READERS:
            proc = subprocess.run(
                [str(RUNTIME_PY), "-c", BIG_RUNNER, how, str(path), str(LOADERS), str(reads)],
                capture_output=True,
                text=True,
                check=True,
            )
            one = json.loads(proc.stdout)
            got[how]["times"] += one["times"]
            got[how]["shape"] = one["shape"]
            got[how]["peak_mib"] = max(got[how]["peak_mib"], one["peak_mib"])
    for r in got.values():
        r["seconds"] = statistics.median(r["times"])
    return list(got.items())


def print_big(path: Path, results: list[tuple[str, dict]], title: str) -> None:
    fastest = min(r["seconds"] for _, r in results if _ != "load_file")
    size = path.stat().st_size / 1024 / 1024
    print(f"\n{title}: {path.name}, {size:.0f} MiB, shape {results[0][1]['shape']}")
    print(f"  {'reader':<18} {'median s':>8} {'× fastest':>10} {'peak MiB':>9}  (min, max; n)")
    for how, r in results:
        ratio = r["seconds"] / fastest
        spread = f"({min(r['times']):.3f}, {max(r['times']):.3f}; {len(r['times'])})"
        print(f"  {how:<18} {r['seconds']:>8.3f} {ratio:>10.2f} {r['peak_mib']:>9.0f}  {spread}")


async def sandbox_run(big: Path | None, rounds: int) -> None:
    """The corpus (and the big CSV) through a real sandbox session, as `labbot exec` runs it."""
    from tests.sandbox.messy_session import run_corpus_in_sandbox

    results, big_seconds = await run_corpus_in_sandbox(big, rounds)
    print_corpus(results, "Messy corpus through the real sandbox")
    if big_seconds:
        fastest = min(v for k, v in big_seconds.items() if k != "load_file")
        print(f"\nBig clean CSV inside one sandbox cell (median of {rounds} reads, interleaved):")
        for how, seconds in big_seconds.items():
            print(f"  {how:<18} {seconds:>8.3f} s {seconds / fastest:>6.2f}× fastest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--sandbox", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per reader")
    parser.add_argument("--reads", type=int, default=3, help="timed reads per process")
    args = parser.parse_args()
    print_corpus(corpus_results(), "Messy corpus in the runtime's Python")
    with tempfile.TemporaryDirectory() as tmp:
        big = None
        if not args.skip_big:
            big = Path(tmp) / "big.csv"
            write_big_csv(big, args.rows)
            print_big(
                big,
                bench_big(big, args.rounds, args.reads),
                "Big clean CSV, in the runtime's Python",
            )
        if args.sandbox:
            asyncio.run(sandbox_run(big, min(args.rounds * args.reads, 5)))


if __name__ == "__main__":
    main()
