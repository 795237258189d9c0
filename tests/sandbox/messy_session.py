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
    import pandas as _pd, pyarrow.csv as _pacsv, statistics as _st
    _path = FILES[BIG]
    _readers = {
        "pandas.read_csv": lambda: _pd.read_csv(_path),
        "pyarrow.csv": lambda: _pacsv.read_csv(_path).to_pandas(),
        "engine=pyarrow": lambda: _pd.read_csv(_path, engine="pyarrow"),
        "load_file": lambda: load_file(BIG),
    }
    _times = {k: [] for k in _readers}
    for _ in range(BIG_ROUNDS):
        for _how, _read in _readers.items():
            _start = time.perf_counter()
            _df = _read()
            _times[_how].append(time.perf_counter() - _start)
            del _df
    _big = {k: _st.median(v) for k, v in _times.items()}
print(json.dumps({"results": _results, "big": _big}))
"""


async def run_corpus_in_sandbox(
    big: Path | None = None, rounds: int = 3
) -> tuple[list[dict], dict[str, float] | None]:
    """Upload the corpus (and `big`), load every file in one sandbox cell; per-file problems
    and, for `big`, the median seconds of load_file and the three plain readers beside it
    (`rounds` reads each, interleaved)."""
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
                f"ENTRIES = {entries!r}\nBIG = {big_id!r}\nBIG_ROUNDS = {rounds}\n" + CELL
            )
            result = await interpreter.run("u", "c", code)
            if result.status != "ok":
                raise RuntimeError(f"the corpus cell failed: {result.error}")
            out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["results"], out["big"]
