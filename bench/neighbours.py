"""Noisy neighbours: a victim user's warm print(1) and first execution (median and p90), alone
and with each attack running in another user's session beside it, as ratios measured in one
run. Goal: every ratio <= 1.5.

Run: .venv/bin/python bench/neighbours.py [--quick] [--only WORD] [--warm N --first N]
[--rounds N] (needs the runtime from `make setup`). With --rounds N each attack is measured N
times, each time just after the victim alone, and the samples of each side are pooled: on a
shared machine the ratios then drift less with other load. "host ms/s" is the bot process's
own CPU time per second of wall time while the victim was measured: what an attack costs the
bot's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from labbot.app import open_store
from labbot.config import load_settings
from labbot.sandbox import CodeInterpreter

# Each attack runs until it is stopped; it prints "running" once it is under way.
ATTACKS = {
    "CPU-bound loop": "print('running', flush=True)\nwhile True:\n    pass\n",
    "sleep holding a slot": "import time\nprint('running', flush=True)\ntime.sleep(3600)\n",
    "fork storm to its process limit": (
        "import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3600)\n"
        "        os._exit(0)\n    n += 1\nprint('running', n, flush=True)\ntime.sleep(3600)\n"
    ),
    # Near its limit (SANDBOX_MEMORY_MB=512 here): at the limit the kernel is killed.
    "memory hog to its limit": (
        "chunks = [bytearray(16 * 2**20) for _ in range(26)]\n"
        "print('running', len(chunks), flush=True)\nwhile True:\n"
        "    for c in chunks:\n        c[::4096] = b'x' * len(c[::4096])\n"
    ),
    "output flood": "import sys\nwhile True:\n    sys.stdout.write('running ' * 1000 + '\\n')\n",
    "epoll watches": (
        "import os, select, socket, time\nsocks, polls = [], []\n"
        "print('running', flush=True)\ntry:\n    while True:\n"
        "        a, b = socket.socketpair()\n        socks += [a, b]\n"
        "        for _ in range(200):\n            e = select.epoll()\n"
        "            e.register(a.fileno())\n            polls.append(e)\n"
        "except OSError as exc:\n    print('stopped at', len(polls), exc, flush=True)\n"
        "time.sleep(3600)\n"
    ),
    "idle pipes": (
        "import os, time\npipes = []\nprint('running', flush=True)\ntry:\n    while True:\n"
        "        pipes.append(os.pipe())\nexcept OSError as exc:\n"
        "    print('pipes', len(pipes), exc, flush=True)\ntime.sleep(3600)\n"
    ),
    "fds in flight": (
        "import os, socket, time\nprint('running', flush=True)\nkept = []\nr, w = os.pipe()\n"
        "try:\n    while True:\n        a, b = socket.socketpair(socket.AF_UNIX)\n"
        "        kept += [a, b]\n        for _ in range(200):\n"
        "            socket.send_fds(a, [b'x'], [r, w])\nexcept OSError as exc:\n"
        "    print('in flight stopped', exc, flush=True)\ntime.sleep(3600)\n"
    ),
}


def quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


class Samples:
    """One side's samples: warm and first execution times (ms), the bot's CPU and wall time."""

    def __init__(self) -> None:
        self.warm: list[float] = []
        self.first: list[float] = []
        self.cpu = self.wall = 0.0

    def summary(self) -> tuple[tuple[float, float], tuple[float, float], float]:
        return quantiles(self.warm), quantiles(self.first), self.cpu * 1000 / self.wall


async def measure(
    interpreter: CodeInterpreter, label: str, warm: int, first: int, into: Samples
) -> None:
    """The victim's warm print(1) and first executions of new sessions (ms), and the bot
    process's CPU time meanwhile, added to ``into``."""
    warm_ms, first_ms = into.warm, into.first
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(warm):
        start = time.perf_counter()
        result = await interpreter.run("victim", "warm", "print(1)")
        warm_ms.append((time.perf_counter() - start) * 1000)
        assert result.stdout == "1\n", result
    for n in range(first):
        async with asyncio.timeout(120):
            await interpreter.sessions.wait_for_pool()
        start = time.perf_counter()
        result = await interpreter.run(f"victim-{label}-{n}", "c", "print(1)")
        first_ms.append((time.perf_counter() - start) * 1000)
        await interpreter.reset(f"victim-{label}-{n}", "c")  # room for the next
    into.cpu += time.process_time() - cpu
    into.wall += time.perf_counter() - wall


async def attack(
    interpreter: CodeInterpreter,
    name: str,
    code: str,
    label: str,
    shape: tuple[int, int],
    into: Samples,
) -> None:
    """Measure the victim while ``code`` runs in the attacker's session, then stop it."""
    running = asyncio.Event()

    async def on_output(stream: str, text: str) -> None:
        running.set()

    task = asyncio.create_task(interpreter.run("attacker", "c", code, on_output=on_output))
    try:
        waiter = asyncio.ensure_future(running.wait())
        await asyncio.wait({waiter, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():  # the attack ended itself (e.g. killed at its memory limit)
            print(f"{name}: ended before measuring: {task.result().status}", flush=True)
        await measure(interpreter, label, *shape, into)
    finally:
        await interpreter.stop("attacker", "c")
        await task
        await interpreter.reset("attacker", "c")  # a fresh session for the next attack


async def main(
    quick: bool, only: list[str], warm: int | None, first: int | None, rounds: int = 1
) -> None:
    warm = warm or (20 if quick else 60)
    first = first or (3 if quick else 6)
    attacks = {n: c for n, c in ATTACKS.items() if not only or any(w in n for w in only)}
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        settings = load_settings(
            LABBOT_DATA_DIR=tmp,
            SANDBOX_WARM_POOL=2,
            MAX_SESSIONS=12,
            SANDBOX_MEMORY_MB=512,
            CODE_EXECUTION_TIMEOUT=600,
        )
        async with open_store(settings) as store:
            interpreter = CodeInterpreter(settings, store)
            await interpreter.start()
            try:
                await interpreter.run("victim", "warm", "1")
                sides = {name: (Samples(), Samples()) for name in attacks}
                for n in range(rounds):
                    for name, code in attacks.items():
                        # The victim alone just before each attack: the machine is shared, so
                        # each ratio compares measurements a few seconds apart.
                        print(f"{name} ({n + 1}/{rounds}) ...", flush=True)
                        attacked, alone = sides[name]
                        await measure(interpreter, f"base{n}", warm, first, alone)
                        shape = (warm, first)
                        await attack(interpreter, name, code, f"a{n}", shape, attacked)
                rows = [(name, a.summary(), b.summary()) for name, (a, b) in sides.items()]
            finally:
                await interpreter.close()
    head = (
        f"{'beside the victim':<32} {'warm p50':>9} {'p90':>7} {'ratio':>11}"
        f" {'first p50':>10} {'p90':>7} {'ratio':>11} {'host ms/s':>9}"
        "   alone: warm p50/p90, first p50/p90, host ms/s"
    )
    print(head)
    for name, ((w50, w90), (f50, f90), host), ((bw50, bw90), (bf50, bf90), bhost) in rows:
        print(
            f"{name:<32} {w50:7.1f}ms {w90:5.1f}ms {w50 / bw50:5.2f}/{w90 / bw90:<5.2f}"
            f" {f50:8.1f}ms {f90:5.0f}ms {f50 / bf50:5.2f}/{f90 / bf90:<5.2f} {host:9.0f}"
            f"   {bw50:.1f}/{bw90:.1f} ms, {bf50:.1f}/{bf90:.0f} ms, {bhost:.0f}"
        )
    print("ratios: p50/p90 against the victim alone just before; goal: every ratio <= 1.5")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--only", action="append", default=[], help="attacks whose name has WORD")
    parser.add_argument("--warm", type=int, help="warm samples per measurement")
    parser.add_argument("--first", type=int, help="first-execution samples per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="alone/attacked pairs per attack")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.only, args.warm, args.first, args.rounds))
