"""What the terminal console asks of a session, run as a short cell in the sandbox: completions
of a name or attribute, the variables with their type, shape and memory, and the width
DataFrames are shown at. Also the kernel's traceback filter. Imports nothing of labbot.

The host reads each answer as the cell's value (a repr of plain lists, strings and numbers,
parsed with ast.literal_eval and checked again there)."""

from __future__ import annotations

import keyword
import os
import re
import sys
import traceback
from typing import Any

KERNEL_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
DISPLAY = {"width": 160, "max_columns": 30}  # the kernel's pandas options for a cell's value
MAX_COMPLETIONS = 200
MAX_VARIABLES = 200
MAX_ANSWER_CHARS = 5000  # under the kernel's value cut (6000), so the answer is never cut
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?")


def format_error(exc: BaseException) -> str:
    """The traceback without the kernel's own frames (its cell runner, load_file and its
    loaders), in every chained exception: the user's code, then the libraries it called."""
    error = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    todo, seen = [error], set()
    while todo:
        one = todo.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        kept = [f for f in one.stack if not f.filename.startswith(KERNEL_DIR)]
        one.stack = traceback.StackSummary.from_list(kept)
        todo += [e for e in (one.__cause__, one.__context__) if e is not None]
    return "".join(error.format())


def pandas_display() -> tuple[str, int, str, int]:
    """The pandas options a cell's value is shown with (the terminal's width when told)."""
    return ("display.max_columns", DISPLAY["max_columns"], "display.width", DISPLAY["width"])


def _capped(items: list[Any]) -> list[Any]:
    """As many items as fit in the answer."""
    out, size = [], 2
    for item in items:
        size += len(repr(item)) + 2
        if size > MAX_ANSWER_CHARS:
            break
        out.append(item)
    return out


def complete(text: str, namespace: dict[str, Any]) -> list[str]:
    """Completions of ``text`` (``na``, ``df.co``, ``np.linalg.no``): the whole dotted text
    each completion makes. Only names are looked up (getattr), nothing is called or
    evaluated."""
    if not _DOTTED.fullmatch(text):
        return []
    *path, stem = text.split(".")
    if not path:
        import builtins

        names = [*namespace, *dir(builtins), *keyword.kwlist]
        found = sorted({n for n in names if n.startswith(stem) and not n.startswith("__")})
        return _capped(found[:MAX_COMPLETIONS])
    if path[0] not in namespace:
        return []
    obj = namespace[path[0]]
    for part in path[1:]:
        obj = getattr(obj, part)
    hidden = "_" if not stem.startswith("_") else "__"
    names = sorted({n for n in dir(obj) if n.startswith(stem) and not n.startswith(hidden)})
    prefix = ".".join(path) + "."
    return _capped([prefix + n for n in names[:MAX_COMPLETIONS]])


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        return " x ".join(str(n) for n in shape) or "scalar"
    if isinstance(value, (list, tuple, dict, set, frozenset, str, bytes)):
        return f"len {len(value)}"
    return ""


def _memory(value: Any) -> int:
    """Bytes the value holds: pandas' own count, numpy's nbytes, else sys.getsizeof."""
    usage = getattr(value, "memory_usage", None)
    if callable(usage) and type(value).__module__.startswith("pandas"):
        total = usage(deep=True)
        return int(total.sum()) if hasattr(total, "sum") else int(total)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    return sys.getsizeof(value)


def variables(namespace: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(name, type, shape, bytes) of each user variable (not modules, functions, classes)."""
    import types

    skip = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
    rows = []
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in ("load_file", "list_files", "FILES"):
            continue
        if isinstance(value, skip):
            continue
        try:
            memory = _memory(value)
        except Exception:  # noqa: BLE001 - a variable that cannot say its size is listed
            memory = -1
        rows.append((name, type(value).__name__, _shape(value), memory))
        if len(rows) >= MAX_VARIABLES:
            break
    return _capped(rows)


def set_width(width: int) -> bool:
    """Show DataFrames at ``width`` columns (the terminal's); True once pandas took it."""
    DISPLAY["width"] = max(40, min(int(width), 1000))
    DISPLAY["max_columns"] = max(10, DISPLAY["width"] // 6)
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return False
    pandas.set_option("display.width", DISPLAY["width"])
    pandas.set_option("display.max_columns", DISPLAY["max_columns"])
    return True
