"""One helper for every loader test: load files in the sandbox runtime's Python and report.

The loaders need the data stack, which only the sandbox runtime has, so one subprocess of the
runtime Python loads a batch of cases and answers, for each: the LoadError (if any), the result
of each check expression, and (when asked) a JSON description of the loaded object that
`mismatches` compares with the facts a manifest expects. Files are loaded through
extension-less links, as the file store keeps them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labbot.files.kinds import HEAD_BYTES, detect_kind

REPO = Path(__file__).resolve().parents[2]
RUNTIME = Path(os.environ.get("LABBOT_RUNTIME_DIR") or REPO / ".runtime")
LOADERS = REPO / "labbot" / "sandbox" / "runtime" / "loaders.py"

RUNNER = r"""
import datetime, decimal, importlib.util, json, os, sys, traceback, warnings
warnings.simplefilter("ignore")
job = json.load(sys.stdin)
spec = importlib.util.spec_from_file_location("loaders", job["loaders"])
loaders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loaders)
heavy = sorted(m for m in ("pandas", "numpy", "geopandas", "scipy") if m in sys.modules)
import numpy as np, pandas as pd

def truth(value):
    return isinstance(value, (bool, np.bool_)) and bool(value)

def deep(x):
    return [deep(v) for v in x] if isinstance(x, (list, np.ndarray)) else x

def md_tables(text):
    shapes, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line.count(" | ") + 1)
        elif rows:
            shapes.append((len(rows), rows[0]))
            rows = []
    return shapes

def fixture(rel, loader, **options):
    path = os.path.join(job["fixtures"], rel)
    return loaders.load(path, loader=loader, name=os.path.basename(rel), **options)

def plain(v):
    # JSON-safe plain data, or raise TypeError for anything that needs describe().
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return None if v != v else v
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()  # pd.Timestamp is a datetime
    if v is pd.NaT:
        return None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    raise TypeError(type(v).__name__)

def describe(obj):
    if isinstance(obj, np.generic):
        obj = obj.item()
    kind = type(obj).__name__
    if isinstance(obj, pd.DataFrame):
        geo = getattr(obj, "_geometry_column_name", None) if kind == "GeoDataFrame" else None
        out = {"type": kind, "shape": list(obj.shape), "rows": len(obj),
               "columns": [c if isinstance(c, (int, str)) else str(c) for c in obj.columns]}
        if len(obj) <= 50:
            out["values"] = {str(c): plain(obj[c].tolist()) for c in obj.columns if c != geo}
        if geo is not None:
            out["crs"] = obj.crs.to_epsg() if obj.crs is not None else None
            out["geom_types"] = [None if t is None else str(t) for t in obj.geom_type]
        if obj.attrs:
            out["attrs"] = plain(obj.attrs)
        return out
    if isinstance(obj, str):
        return {"type": "str", "pages": [p.splitlines() for p in obj.split("\f")]}
    if isinstance(obj, bytes):
        return {"type": "bytes", "value": obj[:2000].decode("latin-1")}
    if isinstance(obj, np.ndarray):
        out = {"type": "ndarray", "shape": list(obj.shape), "dtype": obj.dtype.str
               if obj.dtype.byteorder == ">" else str(obj.dtype)}
        if obj.size <= 200:
            out["values"] = plain(obj.tolist())
        return out
    if type(obj).__module__.startswith("PIL"):
        return {"type": "image", "format": obj.format, "size": list(obj.size), "mode": obj.mode,
                "frames": getattr(obj, "n_frames", 1)}
    if kind == "Dataset" and hasattr(obj, "data_vars"):
        return {"type": "Dataset", "dims": {str(k): int(v) for k, v in obj.sizes.items()},
                "vars": {str(k): describe(v.values) for k, v in obj.data_vars.items()}}
    try:
        return {"type": kind, "value": plain(obj)}
    except TypeError:
        pass
    if isinstance(obj, dict):
        return {"type": "dict", "keys": [str(k) for k in obj],
                "items": {str(k): describe(v) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"type": kind, "len": len(obj), "items": [describe(v) for v in obj[:50]]}
    return {"type": kind, "repr": repr(obj)[:200]}

def run(case):
    path, loader, name = case["path"], case["loader"], case["name"]
    def again(**options):
        return loaders.load(path, loader=loader, name=name, **{**case["options"], **options})
    def load_as(other, **options):
        return loaders.load(path, loader=other, name=name, **options)
    out = {"error": None, "checks": []}
    try:
        obj = loaders.load(path, loader=loader, name=name, **case["options"])
    except loaders.LoadError as exc:
        out["error"] = str(exc)
        return out
    except Exception:
        out["error"] = "NOT A LoadError: " + traceback.format_exc(limit=3)
        return out
    out["preview"] = loaders.preview(obj)
    if case.get("describe"):
        try:
            out["described"] = describe(obj)
        except Exception as exc:
            out["described"] = {"describe failed": f"{type(exc).__name__}: {exc}"}
    ns = dict(globals(), obj=obj, again=again, load_as=load_as, path=path, name=name)
    for expr in case.get("checks", []):
        try:
            ok, detail = truth(eval(expr, ns)), None
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        out["checks"].append([expr, ok, detail])
    return out

class Boom:
    def __repr__(self):
        raise RuntimeError("no repr")

df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
wide = pd.DataFrame({f"column_{i}": [i] for i in range(300)})
previews = []
for expr in job["previews"]:
    try:
        previews.append([expr, truth(eval(expr, dict(globals(), preview=loaders.preview)))])
    except Exception as exc:
        previews.append([expr, f"{type(exc).__name__}: {exc}"])
results = {key: run(case) for key, case in job["cases"].items()}
names = sorted(loaders._LOADERS)
out = {"heavy_on_import": heavy, "names": names, "previews": previews, "cases": results}
sys.stdout.write(json.dumps(out))
"""


def blob_link(src: Path, dest_dir: Path) -> str:
    """An extension-less link to `src`, as the file store names blobs; sidecars beside it."""
    dest_dir.mkdir(parents=True)
    blob = dest_dir / "blob"
    blob.symlink_to(src)
    if src.suffix == ".shp":
        for side in (".shx", ".dbf", ".prj", ".cpg"):
            if src.with_suffix(side).exists():
                (dest_dir / f"blob{side}").symlink_to(src.with_suffix(side))
    return str(blob)


def loader_for(path: Path) -> str:
    """The loader the bot's registry picks for this file (name and leading bytes)."""
    with path.open("rb") as fh:
        return detect_kind(path.name, fh.read(HEAD_BYTES), path).loader


def file_case(src: Path, root: Path, key: str, options: dict, **extra: Any) -> dict:
    """A case loading fixture `src` by its registry loader through an extension-less link."""
    return {
        "path": blob_link(src, root / key),
        "name": src.name,
        "loader": loader_for(src),
        "options": options,
        **extra,
    }


def run_cases(
    cases: dict[str, dict], fixtures: Path, cwd: Path, previews: list[str] | None = None
) -> dict:
    """Load every case once in the runtime Python and return the runner's JSON answer."""
    python = RUNTIME / "bin" / "python"
    if not python.exists():
        pytest.fail(f"sandbox runtime not built at {RUNTIME}: run `make` or set LABBOT_RUNTIME_DIR")
    job = {
        "loaders": str(LOADERS),
        "fixtures": str(fixtures),
        "cases": cases,
        "previews": previews or [],
    }
    proc = subprocess.run(
        [str(python), "-c", RUNNER],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=110,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def assert_case(result: dict, raises: list[str], file: str, expect: dict | None = None) -> None:
    """The load raised a LoadError naming every part of `raises`, or it passed its checks and
    its description matches `expect`."""
    if raises:
        assert result["error"] is not None, f"{file} loaded but should raise LoadError"
        assert not result["error"].startswith("NOT A LoadError"), result["error"]
        for part in raises:
            assert part in result["error"], f"{part!r} not in {result['error']!r}"
        return
    assert result["error"] is None, result["error"]
    failed = [(expr, detail) for expr, ok, detail in result["checks"] if not ok]
    assert not failed, f"{file}: failed checks {failed}\npreview: {result.get('preview')}"
    if expect is not None:
        wrong = mismatches(expect, result.get("described"))
        assert not wrong, f"{file}: " + "; ".join(wrong) + f"\npreview: {result.get('preview')}"


def mismatches(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where `actual` differs from `expected`: every key `expected` names must match (dicts may
    hold more), lists match item by item, floats to 1e-9 relative."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where or '.'}: expected a mapping, got {actual!r}"]
        return [
            problem
            for key, value in expected.items()
            for problem in (
                mismatches(value, actual[key], f"{where}.{key}")
                if key in actual
                else [f"{where}.{key}: missing (have {sorted(actual)})"]
            )
        ]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {expected!r}, got {actual!r}"]
        return [
            p for i, e in enumerate(expected) for p in mismatches(e, actual[i], f"{where}[{i}]")
        ]
    if isinstance(expected, float) and isinstance(actual, int | float) and expected == expected:
        same = math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
        return [] if same else [f"{where}: expected {expected!r}, got {actual!r}"]
    return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]
