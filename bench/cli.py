"""CLI start-up: the wall time of whole `labbot` processes, start to exit (imports included).

Each command runs RUNS times after a warm-up (the median is the figure; min and max show the
spread). With --before SRC the same commands also run on another checkout's code (for example
`git worktree add /tmp/cli-before 73f609f`), taking turns with this one, so both see the same
machine load.

Run: .venv/bin/python bench/cli.py [--runs 7] [--before /tmp/cli-before] [--no-exec]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--version"],
    ["--help"],
    ["files", "list", "--help"],
    ["files", "list", "--user", "bench"],
    ["exec", "--user", "bench", "print(1)"],
]
RUN = "import sys; sys.argv[0] = 'labbot'; from labbot.cli import main; main()"


def timed(src: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one `labbot ARGS` process importing labbot from ``src``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args],
        env=env | {"PYTHONPATH": str(src)},
        cwd=env["LABBOT_DATA_DIR"],
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"labbot {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def row(walls: list[float]) -> str:
    """ "median (min-max)" in seconds."""
    return f"{statistics.median(walls):6.3f} ({min(walls):.3f}-{max(walls):.3f})"


def main() -> None:
    """Time each command on this checkout (and on --before's), print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    parser.add_argument("--no-exec", action="store_true", help="skip `exec` (starts a sandbox)")
    opts = parser.parse_args()
    sources = {"after": REPO} | ({"before": opts.before.resolve()} if opts.before else {})
    commands = [c for c in COMMANDS if not (opts.no_exec and c[0] == "exec")]
    with tempfile.TemporaryDirectory(prefix="labbot-bench-cli-") as data:
        env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
        env |= {"LABBOT_DATA_DIR": data, "LABBOT_RUNTIME_DIR": str(REPO / ".runtime")}
        print(f"wall seconds of whole processes, median (min-max) of {opts.runs} runs")
        print(f"{'command':42} " + " ".join(f"{name:>22}" for name in sources) + "    cpu (med)")
        for args in commands:
            walls: dict[str, list[float]] = {name: [] for name in sources}
            cpus: dict[str, list[float]] = {name: [] for name in sources}
            for src in sources.values():  # a warm-up of each, not counted
                timed(src, args, env)
            for _ in range(opts.runs):  # in turns: the same load for both
                for name, src in sources.items():
                    wall, cpu = timed(src, args, env)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
            shown = "labbot " + " ".join(args)
            cells = " ".join(f"{row(walls[name]):>22}" for name in sources)
            cpu_cells = " / ".join(f"{statistics.median(cpus[n]):.2f}" for n in sources)
            print(f"{shown:42} {cells}    {cpu_cells}")


if __name__ == "__main__":
    main()
