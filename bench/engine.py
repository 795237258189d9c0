"""Engine overhead per turn, with the model and the execution taken out, by history length.

A turn runs against the loopback OpenAI-compatible server; the time the LLM client spends in
its request (Completion.duration_ms) is subtracted, leaving what the engine itself costs:
history load, system prompt, token counting and trimming, the ledger and the history writes.
Each row is one conversation whose stored history holds N earlier turns (each a question, a
tool call with its code, a 4,000-character result and an answer: about 1,300 tokens, so a
128k-token window holds about 95 of them); the preparation of the next requests is timed.

Run: .venv/bin/python bench/engine.py [--quick] [--turns 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labbot.app import open_app  # noqa: E402
from labbot.config import load_settings  # noqa: E402
from labbot.llm import client as llm_client  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Reply  # noqa: E402


def past_turn(n: int) -> list[dict[str, Any]]:
    """One earlier turn as history stores it: question, call, result, answer."""
    call_id = f"call_{n}"
    code = f"df = load_file('sales.csv')\nprint(df.groupby('region')['amount'].sum())  # {n}\n"
    result = {"status": "ok", "stdout": f"region {n}\n" + "north 10.0\nsouth 20.0\n" * 180}
    return [
        {"role": "user", "content": f"Question {n}: which region sold most in month {n}? " * 4},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": "execute_python_code",
                        "arguments": json.dumps({"code": code * 3}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
        {"role": "assistant", "content": f"In month {n} the south sold most (20.0). " * 12},
    ]


async def main(quick: bool, lengths: list[int], rounds: int) -> None:
    llm_ms: list[float] = []
    original = llm_client.LLMClient.stream

    async def timed_stream(self, *args, **kwargs):  # the model's share, measured where it runs
        start = time.perf_counter()
        async for piece in original(self, *args, **kwargs):
            if not isinstance(piece, str):
                llm_ms.append((time.perf_counter() - start) * 1000)
            yield piece

    llm_client.LLMClient.stream = timed_stream  # type: ignore[method-assign]
    print("| history (turns) | engine overhead per turn, median | max | messages sent |")
    print("|---:|---:|---:|---:|", flush=True)
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
                async for _ in engine.turn("bench", "warm-up", "hello"):
                    pass  # the tokenizer and the first connection load outside the rows
                for length in lengths:
                    conversation = f"c{length}"
                    for n in range(length):
                        await services.conversations.append("bench", conversation, past_turn(n))
                    overhead = []
                    for n in range(1 if quick else rounds):
                        start = time.perf_counter()
                        async for _ in engine.turn("bench", conversation, f"question {n}"):
                            pass
                        overhead.append((time.perf_counter() - start) * 1000 - llm_ms[-1])
                    sent = len(api.requests[-1]["messages"])
                    median, worst = statistics.median(overhead), max(overhead)
                    row = f"| {length:,} | {median:,.1f} ms | {worst:,.1f} ms | {sent} |"
                    print(row, flush=True)
    print(f"model request (loopback server): median {statistics.median(llm_ms):.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one turn per row")
    parser.add_argument("--turns", default="10,100,1000", help="history lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="turns timed per row")
    args = parser.parse_args()
    asyncio.run(main(args.quick, [int(t) for t in args.turns.split(",")], args.rounds))
