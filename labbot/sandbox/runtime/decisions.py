"""How a table was read, in one line for the model, with the keyword arguments that undo it.

Part of the sandbox loaders (see ``loaders``): every table loader records its decisions in
``df.attrs["labbot"]``; ``describe`` turns them into the line the schema preview shows.
"""

from __future__ import annotations

from typing import Any

_PLAIN = ("utf-8", "ascii")


def describe(decided: dict | None, df: Any = None, width: int = 370) -> str:
    """One line of at most `width` characters: what was decided (trimmed first) and the
    load_file(...) arguments that override it."""
    if not decided:
        return ""
    said: list[str] = []
    undo: list[str] = []
    enc = decided.get("encoding")
    if enc and enc not in _PLAIN:
        said.append(f"read as {enc}")
        undo.append("encoding='utf-8'")
    sep = decided.get("sep")
    if sep and sep != ",":
        said.append(f"sep={sep!r}")
        undo.append("sep=','" if sep != "fixed width" else "sep='\\\\s+'")
    if decided.get("decimal") == ",":
        said.append("decimal=','")
        undo.append("decimal='.'")
    if decided.get("title_rows_skipped"):
        said.append(f"{decided['title_rows_skipped']} title rows skipped")
        undo.append(f"skiprows={decided['title_rows_skipped']} (lines before the header)")
    if decided.get("header_row") is None and "header_row" in decided:
        said.append("no header row")
    if decided.get("header_groups"):
        said.append("two header rows joined")
    if decided.get("dropped_rows"):
        said.append("dropped " + ", ".join(decided["dropped_rows"]))
        undo.append("keep_totals=True")
    if decided.get("bad_lines"):
        said.append(
            f"{decided['bad_lines']} bad lines skipped (lines {decided['bad_line_numbers'][:5]})"
        )
    if decided.get("hidden_sheets"):
        said.append(f"hidden sheets ignored {decided['hidden_sheets']}")
        undo.append(f"sheet={decided['hidden_sheets'][0]!r}")
    if decided.get("other_tables"):
        said.append(f"table {decided['table']} of {len(decided['other_tables']) + 1} on the sheet")
        undo.append("table=0" if decided["table"] else "table=1")
    cols = decided.get("columns") or {}
    if cols:
        said.append("; ".join(_grouped(cols)))
        undo.append("convert=False")
        if any("day first" in h or "month first" in h for h in cols.values()):
            first = any("day first" in h for h in cols.values())
            undo.append(f"dayfirst={not first}")
    for col, why in (decided.get("kept_as_text") or {}).items():
        said.append(f"{col} kept as text: {why}")
    for col, why in (decided.get("kept_numeric") or {}).items():
        said.append(f"{col}: {why}")
        undo.append("apply_value_formats=False")
    if decided.get("missing_codes"):
        said.append(f"declared missing codes as NaN {decided['missing_codes']}")
        undo.append("user_missing=True")
    if not said:
        return ""
    tail = ""
    if undo:
        tail = " — override: load_file(<file>, " + ", ".join(dict.fromkeys(undo)) + ")"
    what = ", ".join(said)
    room = max(width - len("Read: ") - len(tail), 40)
    if len(what) > room:
        what = what[: room - 1] + "…"
    return "Read: " + what + tail


def _grouped(cols: dict[str, str]) -> list[str]:
    """'a, b: how' per distinct conversion, at most three names each (a wide table's forty
    alike columns take one entry)."""
    by_how: dict[str, list[str]] = {}
    for col, how in cols.items():
        by_how.setdefault(how, []).append(col)
    out = []
    for how, names in by_how.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        out.append(f"{shown}: {how}")
    return out
