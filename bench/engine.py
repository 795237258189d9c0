"""Engine overhead per turn, with the model and the execution taken out.

A turn runs against the loopback OpenAI-compatible server; the time the LLM client spends in
its request (Completion.duration_ms) is subtracted, leaving what the engine itself costs:
history load, system prompt, token counting and trimming, the ledger and the history writes.

Run: .venv/bin/python bench/engine.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labbot.app import open_app  # noqa: E402
from labbot.config import load_settings  # noqa: E402
from labbot.llm import client as llm_client  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Reply  # noqa: E402


async def main(quick: bool) -> None:
    turns = 50 if quick else 300
    llm_ms: list[float] = []
    original = llm_client.LLMClient.stream

    async def timed_stream(self, *args, **kwargs):  # the model's share, measured where it runs
        start = time.perf_counter()
        async for piece in original(self, *args, **kwargs):
            if not isinstance(piece, str):
                llm_ms.append((time.perf_counter() - start) * 1000)
            yield piece

    llm_client.LLMClient.stream = timed_stream  # type: ignore[method-assign]
    async with FakeOpenAI() as api:
        api.respond_with(lambda body: Reply.text("The answer is 42.", chunks=3))
        with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
            settings = load_settings(
                LABBOT_DATA_DIR=tmp,
                OPENAI_API_KEY="sk-bench",
                OPENAI_BASE_URL=api.base_url,
                DEFAULT_MODEL="gpt-4o",
                SANDBOX_WARM_POOL=0,
            )
            async with open_app(settings) as services:
                engine = services.engine
                assert engine is not None
                overhead, history_sizes = [], []
                for n in range(turns):
                    conversation = f"c{n % 10}"  # histories grow to turns/10 exchanges
                    start = time.perf_counter()
                    async for _ in engine.turn("bench", conversation, f"question {n}"):
                        pass
                    total = (time.perf_counter() - start) * 1000
                    overhead.append(total - llm_ms[-1])
                    history_sizes.append(n // 10)
    ordered = sorted(overhead)
    p90 = ordered[int(len(ordered) * 0.9)]
    print(
        f"engine overhead per turn: median {statistics.median(ordered):.2f} ms, p90 "
        f"{p90:.2f} ms (n={turns}, histories up to {max(history_sizes) * 2 + 1} messages)"
    )
    print(f"model request (loopback server): median {statistics.median(llm_ms):.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
