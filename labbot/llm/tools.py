"""The model's one tool, execute_python_code: its schema and the text that teaches it."""

from __future__ import annotations

import ast
import json
from functools import cache
from pathlib import Path
from typing import Any

TOOL_NAME = "execute_python_code"
# The most characters of arguments one call may send: well above any cell a person writes, well
# under what the sandbox's channel and the history should carry (data goes in files, not code).
MAX_ARGUMENT_CHARS = 256 * 1024
_LOADERS = Path(__file__).resolve().parents[1] / "sandbox" / "runtime" / "loaders.py"


@cache
def load_file_guide() -> str:
    """What load_file returns per kind: the sandbox loaders' own docstring, so it never drifts."""
    return ast.get_docstring(ast.parse(_LOADERS.read_text())) or ""


@cache
def tool_definition() -> dict[str, Any]:
    """The Chat Completions tool definition of execute_python_code."""
    description = f"""Run Python 3.11 in this conversation's sandboxed session; get a JSON result.

The session works like a notebook: variables, imports and loaded data persist between calls in
this conversation until the session restarts (the result then says so; files are kept). There is
no internet access.

The user's files are read-only. Load one with load_file(file_id) (its original file name works
too); FILES maps file id -> path and list_files() lists id, name, kind and size.
The working directory is writable: every file you save there with a bare name (for example
df.to_csv("result.csv") or fig.savefig("chart.png")) is sent to the user with a new file id, and
every open matplotlib figure is captured as a PNG at the end (plt.show() is enough). The value of
a last bare expression is shown (end with ';' to hide it); print() what else you need to see.
pandas, numpy, scipy, scikit-learn, statsmodels, matplotlib, seaborn and pyarrow are installed;
other approved packages (plotly, sympy, networkx, xgboost, ...) install themselves on import.

The result has status (ok, error, timeout, memory, killed), stdout, stderr, error (with a
traceback whose line numbers are your code's), value, files (id, name, kind, size) and notes. When
the code fails, read the error, fix the code and run it again.

{load_file_guide()}"""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "The Python code to run."},
                },
                "required": ["code"],
                "additionalProperties": False,
            },
        },
    }


def read_call(name: str, arguments: str) -> tuple[str, None] | tuple[None, str]:
    """A call's code, or why it is refused before it runs: ``(code, None)`` or ``(None, why)``."""
    if name != TOOL_NAME:
        return None, f"Not run: there is no tool {name[:64]!r}; call {TOOL_NAME}."
    if len(arguments) > MAX_ARGUMENT_CHARS:
        return None, (
            f"Not run: the arguments are {len(arguments):,} characters, over the limit of"
            f" {MAX_ARGUMENT_CHARS:,}. Send shorter code: read data from the user's files"
            " (load_file) or build it in steps, never paste it into the code."
        )
    try:
        value = json.loads(arguments or "{}")
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        detail = (
            f"{exc.msg} at character {exc.pos}"
            if isinstance(exc, json.JSONDecodeError)
            else type(exc).__name__
        )
        return None, (
            f"Not run: the arguments are not valid JSON ({detail}). Send an object such as"
            ' {"code": "print(1)"}.'
        )
    code = value.get("code") if isinstance(value, dict) else None
    if not isinstance(code, str) or not code.strip():
        return None, f"Not run: call {TOOL_NAME} with a non-empty 'code' string."
    return code, None
