"""Token counting throughput: labbot.llm.tokens beside calling tiktoken's Encoding.encode directly.

Run: .venv/bin/python bench/tokens.py [--quick]
Text is this repository's own source and README (prose + code), repeated to --mb megabytes.
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable
from pathlib import Path

from labbot.llm import tokens

ROOT = Path(__file__).resolve().parents[1]
# A photo kept in the repository (the bench never depends on anything beside the clone).
IMAGE = ROOT / "tests" / "fixtures" / "formats" / "images" / "photo.jpg"


def corpus(megabytes: float) -> str:
    files = [ROOT / "README.md", *sorted((ROOT / "labbot").rglob("*.py"))]
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    target = int(megabytes * 1_000_000)
    return (text * (target // len(text) + 1))[:target]


def conversation(text: str, n: int = 20) -> list[dict]:
    """A chat of n messages of about 1,500 characters each, alternating user/assistant."""
    roles = ("user", "assistant")
    return [
        {"role": roles[i % 2], "content": text[i * 1500 : (i + 1) * 1500]} for i in range(1, n + 1)
    ]


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn, repeated for at least `seconds`."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls / elapsed


def compare(
    ours: Callable[[], object], raw: Callable[[], object], seconds: float, rounds: int = 5
) -> tuple[float, float]:
    """Best calls/s of each, alternating short rounds so machine noise hits both alike."""
    ours(), raw()  # warm up
    best_ours = best_raw = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, rate(ours, seconds / rounds))
        best_raw = max(best_raw, rate(raw, seconds / rounds))
    return best_ours, best_raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--mb", type=float, default=1.0, help="text size in MB")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0

    start = time.perf_counter()
    for model in ("gpt-4o", "gpt-4"):
        tokens.get_encoding(model)
    load_ms = (time.perf_counter() - start) * 1000

    text = corpus(args.mb)
    mb = len(text.encode()) / 1e6
    chat = conversation(text)
    url = "data:image/jpeg;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    with_image = [
        *chat[:2],
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]},
    ]

    rows: list[tuple[str, str, str, float | None]] = []
    for model in ("gpt-4o", "gpt-4"):
        enc = tokens.get_encoding(model)
        ours, raw = compare(
            lambda m=model: tokens.count_text(text, m),
            lambda e=enc: len(e.encode(text, disallowed_special=())),
            seconds,
        )
        label = f"count_text {mb:.1f} MB ({enc.name})"
        rows.append((label, f"{ours * mb:.2f} MB/s", f"{raw * mb:.2f} MB/s", ours / raw))
        ours, raw = compare(
            lambda m=model: tokens.count_messages(chat, m),
            lambda e=enc: [len(e.encode(x["content"], disallowed_special=())) for x in chat],
            seconds,
        )
        n = len(chat)
        label = f"count_messages {n} x 1.5 kB ({enc.name})"
        rows.append((label, f"{ours * n:,.0f} msg/s", f"{raw * n:,.0f} msg/s", ours / raw))
    img = rate(lambda: tokens.count_messages(with_image, "gpt-4o"), seconds)
    rows.append(
        (f"count_messages + {len(url) / 1e6:.2f} MB data-URL JPEG", f"{img:9,.0f} req/s", "-", None)
    )

    print(f"encoding load (o200k_base + cl100k_base, from bundled files, once): {load_ms:.0f} ms")
    print(f"| {'benchmark':<46} | {'labbot.llm.tokens':>17} | {'tiktoken encode':>15} | ratio |")
    print(f"|{'-' * 48}|{'-' * 19}|{'-' * 17}|-------|")
    for name, ours, raw, ratio in rows:
        r = f"{ratio:5.2f}" if ratio is not None else "    -"
        print(f"| {name:<46} | {ours:>17} | {raw:>15} | {r} |")


if __name__ == "__main__":
    main()
