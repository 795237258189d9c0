"""Checkpoint benchmarks on the real sandbox: what the checkpoint after a cell costs when the
cell changes nothing (a session holding a 100 MB DataFrame and a few small variables), and the
save and restore of that 100 MB DataFrame.

"in sandbox" is the kernel's own measure of the checkpoint step (pickling, and sending the
bytes to the host, which stores them as they come: the kernel waits for the host to read);
"cell" is the whole execution as the caller sees it.

Run: .venv/bin/python bench/checkpoint.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

from labbot.app import open_store
from labbot.config import load_settings
from labbot.sandbox import CodeInterpreter

MAKE_DF = (
    "import numpy as np, pandas as pd\n"
    "df = pd.DataFrame(np.random.default_rng(1).random((1_310_720, 10)),"
    " columns=[f'c{i}' for i in range(10)])\n"
    "small = {'a': 1}\nname = 'x'\n"
    "print(round(df.memory_usage(index=False).sum() / 2**20))"
)


class Seconds(logging.Handler):
    """Collects the kernel's own checkpoint and restore seconds from the host's log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.saved: list[tuple[int, float]] = []
        self.restored: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if match := re.match(r"checkpoint\.saved .*bytes=(\d+) .*seconds=([\d.]+)", text):
            self.saved.append((int(match[1]), float(match[2])))
        elif match := re.match(r"checkpoint\.restored .*seconds=([\d.]+)", text):
            self.restored.append(float(match[1]))


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:8.1f} ms  max {max(values) * 1000:8.1f} ms"


async def main(runs: int) -> None:
    seconds = Seconds()
    logger = logging.getLogger("labbot.sandbox.checkpoints")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            LABBOT_DATA_DIR=Path(tmp) / "data",
            SANDBOX_WARM_POOL=0,
            MAX_STORAGE_MB_PER_USER=2048,
            CODE_EXECUTION_TIMEOUT=120,
        )
        async with open_store(settings) as store:
            interpreter = CodeInterpreter(settings, store)
            await interpreter.start()
            try:
                made = await interpreter.run("u", "c", MAKE_DF)
                assert made.status == "ok", made
                size, save = seconds.saved[-1]
                print(f"a {made.stdout.strip()} MiB DataFrame; its piece {size / 2**20:.1f} MiB")
                print(
                    f"save of the 100 MB DataFrame (its first):  in sandbox {save * 1000:8.1f} ms"
                )
                saves, cells = [], []
                for _ in range(runs):
                    started = time.perf_counter()
                    await interpreter.run("u", "c", "df['c0'] *= 1.0")  # in place: same object
                    cells.append(time.perf_counter() - started)
                    saves.append(seconds.saved[-1][1])
                print(f"save after an in-place change:  in sandbox {ms(saves)}  cell {ms(cells)}")
                unchanged, nothing = [], []
                for _ in range(runs * 5):
                    started = time.perf_counter()
                    await interpreter.run("u", "c", "1 + 1")
                    nothing.append(time.perf_counter() - started)
                    unchanged.append(seconds.saved[-1][1])
                    assert seconds.saved[-1][0] == 0  # nothing was sent
                print(f"no change:  in sandbox {ms(unchanged)}  cell {ms(nothing)}")
                restores, firsts = [], []
                for _ in range(runs):
                    await interpreter.sessions.sessions[("u", "c")].kernel.kill()
                    started = time.perf_counter()
                    back = await interpreter.run("u", "c", "df.shape")
                    firsts.append(time.perf_counter() - started)
                    assert back.value == "(1310720, 10)", back
                    restores.append(seconds.restored[-1])
                print(f"restore of the 100 MB DataFrame:  in sandbox {ms(restores)}")
                print(f"  first cell of the new session, sandbox start included: {ms(firsts)}")
                plain = []
                for _ in range(runs):  # the same without a checkpoint to restore
                    await interpreter.reset("u", "c")
                    started = time.perf_counter()
                    await interpreter.run("u", "c", "1")
                    plain.append(time.perf_counter() - started)
                print(f"  first cell of a new session with nothing to restore:   {ms(plain)}")
            finally:
                await interpreter.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
