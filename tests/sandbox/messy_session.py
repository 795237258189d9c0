"""The messy corpus through a real sandbox session, as `labbot exec` and the bot run code.

Every corpus file is uploaded to a real file store (its kind decided by the registry, as for a
user's upload), then ONE sandbox session loads each with load_file in one cell and compares it
with its manifest facts using tests/fixtures/messy_check.py (its source is sent into the cell).
Used by test_loaders_messy.py and bench/messy.py --sandbox.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from labbot.config import load_settings
from labbot.sandbox import CodeInterpreter
from tests.conftest import chunks_of, open_executor
from tests.fixtures import HERE

MESSY = HERE / "messy"
MANIFEST: list[dict] = json.loads((HERE / "messy_manifest.json").read_text(encoding="utf-8"))[
    "files"
]

CELL = """
import json, time
_ns = {}
exec(CHECK_SOURCE, _ns)
_results = []
for _id, _entry in ENTRIES:
    try:
        _obj = load_file(_id)
        _problems = _ns["check"](_obj, _entry)
    except Exception as _exc:
        _problems = [f"{type(_exc).__name__}: {_exc}"[:300]]
    _results.append({"file": _entry["file"], "class": _entry["class"], "problems": _problems})
_big = None
if BIG is not None:
    _start = time.perf_counter()
    _df = load_file(BIG)
    _big = time.perf_counter() - _start
    del _df
print(json.dumps({"results": _results, "big": _big}))
"""


async def run_corpus_in_sandbox(big: Path | None = None) -> tuple[list[dict], float | None]:
    """Upload the corpus (and `big`), load every file in one sandbox cell; per-file problems
    and the seconds load_file took on `big` inside the sandbox."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            LABBOT_DATA_DIR=Path(tmp) / "data",
            SANDBOX_WARM_POOL=0,
            MAX_FILES_PER_USER=len(MANIFEST) + 2,
            MAX_FILE_SIZE_MB=200,
            CODE_EXECUTION_TIMEOUT=240,
            SANDBOX_MEMORY_MB=2048,
        )
        async with open_executor(CodeInterpreter, settings) as (interpreter, store):
            entries = []
            for entry in MANIFEST:
                data = (MESSY / entry["file"]).read_bytes()
                saved = await store.save("u", entry["file"], chunks_of(data))
                entries.append((saved.record.id, entry))
            big_id = None
            if big is not None:
                with big.open("rb") as fh:
                    parts = iter(lambda: fh.read(1 << 20), b"")
                    big_id = (await store.save("u", "big.csv", chunks_of(*parts))).record.id
            code = (
                f"CHECK_SOURCE = {(HERE / 'messy_check.py').read_text(encoding='utf-8')!r}\n"
                f"ENTRIES = {entries!r}\nBIG = {big_id!r}\n" + CELL
            )
            result = await interpreter.run("u", "c", code)
            if result.status != "ok":
                raise RuntimeError(f"the corpus cell failed: {result.error}")
            out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["results"], out["big"]
