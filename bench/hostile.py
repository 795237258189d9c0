"""How long the host's parsers of strangers' bytes take on hostile input: each sniffer path at
8 and 64 KiB (detect_kind on the head), then a ZIP of a million entries (with its path, as the
store calls it) and a PNG that claims 7999 x 7999 pixels (prepared for the model), with CPU
and peak memory. Each call runs in a child process with a ceiling; "> N s" means it was killed.

    .venv/bin/python bench/hostile.py                      # this checkout
    git archive <base> labbot | tar -x -C /tmp/base
    .venv/bin/python bench/hostile.py --src /tmp/base      # another checkout's labbot ("before")
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.files import hostile_inputs  # noqa: E402
from tests.files.sniff_worker import SniffWorker, Timeout  # noqa: E402

SIZES = (8 * 1024, 64 * 1024)
MIB = 1024 * 1024


def timed(worker: SniffWorker, request: dict, ceiling: float) -> dict | None:
    """The answer of the fastest of up to 3 runs (1 when slow), or None when over ceiling."""
    answers = []
    for _ in range(3):
        try:
            answers.append(worker.call(request, timeout=ceiling))
        except Timeout:
            return None
        if answers[-1]["seconds"] > 1:
            break
    return min(answers, key=lambda a: a["seconds"])


def show(answer: dict | None, ceiling: float) -> str:
    return f"> {ceiling:.0f} s" if answer is None else f"{answer['seconds'] * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, help="a checkout whose labbot is measured")
    parser.add_argument("--ceiling", type=float, default=30.0, help="seconds per call")
    args = parser.parse_args()
    print(f"labbot from {args.src or 'this checkout'}; ceiling {args.ceiling:.0f} s per call\n")
    print(f"| path | {' | '.join(f'{s // 1024} KiB' for s in SIZES)} | kind |")
    print("|---|" + "---:|" * len(SIZES) + "---|")
    with SniffWorker(args.src) as worker:
        for label, build in hostile_inputs.PATHS.items():
            cells, kind = [], "-"
            for size in SIZES:
                data = build(size)
                request = {"op": "kind", "name": "upload", "data": base64.b64encode(data).decode()}
                answer = timed(worker, request, args.ceiling)
                cells.append(show(answer, args.ceiling))
                kind = answer["result"] if answer else kind
            print(f"| {label} | {' | '.join(cells)} | {kind} |")
        print("\n| input | wall | CPU | peak RSS rise | result |\n|---|---:|---:|---:|---|")
        with tempfile.TemporaryDirectory() as tmp:
            many = hostile_inputs.million_entry_zip(Path(tmp) / "many.zip")
            png = Path(tmp) / "huge.png"
            png.write_bytes(hostile_inputs.huge_png())
            rows = (
                (f"zip, 1 M entries ({many.stat().st_size / MIB:.0f} MiB)", "kind", many),
                (f"png 7999x7999 ({png.stat().st_size // 1024} KiB)", "prepare", png),
            )
            for label, op, path in rows:
                runs = []
                for _ in range(3):
                    try:
                        request = {"op": op, "name": path.name, "file": str(path)}
                        runs.append(worker.call(request, timeout=args.ceiling))
                    except Timeout:
                        break
                if not runs:
                    print(f"| {label} | > {args.ceiling:.0f} s | | | |")
                    continue
                wall = statistics.median(r["seconds"] for r in runs)
                cpu = statistics.median(r["cpu"] for r in runs)
                rise = max(r["rise"] for r in runs) / MIB
                print(
                    f"| {label} | {wall:.3f} s | {cpu:.3f} s | {rise:.0f} MiB"
                    f" | {runs[0]['result']} |"
                )


if __name__ == "__main__":
    main()
