"""What each fixture loads as, in brief (type, shape, dtypes), for the loaders' regression check.

`load_shapes` loads files in the runtime's Python by the registry's loader and describes each
result; `tests/fixtures/base_loads.json` holds the description recorded before the messy-table
work (issue 19), and test_loaders_regression.py checks no file reads worse than that. Run as a
script to record it again (only when a change is meant to move the baseline):

    .venv/bin/python -m tests.sandbox.loadshapes --record
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures import FORMATS, HERE, MANIFEST
from tests.sandbox.loadcheck import LOADERS, REPO, RUNTIME, blob_link, loader_for

BASE = HERE / "base_loads.json"
SHARED = Path(os.environ.get("LABBOT_SHARED_FIXTURES") or "/nonexistent")

SHAPE_RUNNER = r"""
import importlib.util, json, sys, warnings
warnings.simplefilter("ignore")
job = json.load(sys.stdin)
spec = importlib.util.spec_from_file_location("loaders", job["loaders"])
loaders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loaders)

def brief(obj, depth=0):
    kind = type(obj).__name__
    if hasattr(obj, "dtypes") and hasattr(obj, "columns"):
        return {"type": kind, "shape": list(obj.shape),
                "dtypes": {str(c): str(t) for c, t in obj.dtypes.items()}}
    if isinstance(obj, dict) and depth < 2:
        return {"type": "dict", "items": {str(k): brief(v, depth + 1) for k, v in obj.items()}}
    if isinstance(obj, list) and depth < 2:
        return {"type": "list", "items": [brief(v, depth + 1) for v in obj[:20]]}
    return {"type": kind}

out = {}
for key, case in job["cases"].items():
    try:
        out[key] = brief(loaders.load(case["path"], loader=case["loader"], name=case["name"]))
    except Exception as exc:
        out[key] = {"type": "error", "error": type(exc).__name__}
sys.stdout.write(json.dumps(out))
"""


def fixture_files() -> dict[str, Path]:
    """Every in-repo format fixture and, when LABBOT_SHARED_FIXTURES is set, the shared ones."""
    files = {f"formats/{e['file']}": FORMATS / e["file"] for e in MANIFEST}
    if (SHARED / "manifest.tsv").is_file():
        for line in (SHARED / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            rel = line.split("\t", 1)[0]
            if (SHARED / rel).is_file():
                files[f"shared/{rel}"] = SHARED / rel
    return files


def load_shapes(files: dict[str, Path], root: Path) -> dict[str, dict]:
    """Load each file by the registry's loader (default options) in the runtime; describe it."""
    cases = {
        key: {
            "path": blob_link(src, root / key.replace("/", "_")),
            "name": src.name,
            "loader": loader_for(src),
        }
        for key, src in files.items()
    }
    proc = subprocess.run(
        [str(RUNTIME / "bin" / "python"), "-c", SHAPE_RUNNER],
        input=json.dumps({"loaders": str(LOADERS), "cases": cases}),
        capture_output=True,
        text=True,
        timeout=280,
        cwd=root,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(root), "MPLBACKEND": "Agg"},
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return dict(json.loads(proc.stdout))


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shapes = load_shapes(fixture_files(), Path(tmp))
    BASE.write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"recorded {len(shapes)} files into {BASE.relative_to(REPO)}")
