"""Where a table starts in a grid of cells: title rows, group rows, the header, the data; and
spreadsheets read as people make them (merged cells, hidden sheets, several tables a sheet).

Part of the sandbox loaders (see ``loaders``).
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

_UNIT = r"(?:R\$|US\$|CHF|EUR|USD|zł|руб\.?|kr|Kč|[€$£¥₽₺₹₩元円%])"
_NUMBERISH = re.compile(rf"^[-+(−]?\s*{_UNIT}?\s?[-+]?\d[\d.,'\u00a0\u202f ]*\)?-?\s*{_UNIT}?$")
_DATEISH = re.compile(
    r"^(\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{4}年\d{1,2}月\d{1,2}日)([ T]\d{1,2}:\d{2}(:\d{2})?)?$"
)
_DATE_WORDS = re.compile(r"date|datum|fecha|data|дата|日付|日期|jour|day", re.I)


def filled(c: Any) -> bool:
    if c is None:
        return False
    if isinstance(c, float) and c != c:
        return False
    return not (isinstance(c, str) and not c.strip())


def value_like(c: Any) -> bool:
    if isinstance(c, bool):
        return False
    if isinstance(c, int | float | dt.date | dt.time):
        return True
    if isinstance(c, str):
        s = c.strip()
        return bool(s) and bool(_NUMBERISH.match(s) or _DATEISH.match(s))
    return False


def _year(c: Any) -> bool:
    try:
        year = float(str(c).strip())
        return 1900 <= year <= 2100 and year.is_integer()
    except ValueError:
        return False


def _texty(row: list[Any]) -> bool:
    cells = [c for c in row if filled(c)]
    return bool(cells) and all(not value_like(c) or _year(c) for c in cells)


@dataclass
class Layout:
    """The rows of a grid: title rows above, an optional group row, the header, the data."""

    first_data: int
    header: int | None
    group: int | None
    width: int
    names: list[str] | None
    found: bool = True

    @property
    def made_by_hand(self) -> bool:
        """A header was found: rows above it, blank rows and notes under the data may go."""
        return self.found and self.header is not None

    def decisions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        top = self.group if self.group is not None else self.header
        if top:
            out["title_rows_skipped"] = top
        out["header_row"] = self.header
        if self.group is not None:
            out["header_groups"] = "flattened from the row above the header"
        return out

    def decimal_hint(self, grid: list[list[Any]]) -> str | None:
        import column_types

        cells = [c for r in grid[self.first_data : self.first_data + 200] for c in r
                 if isinstance(c, str) and c]  # fmt: skip
        return column_types.text_decimal(cells) if cells else None


def _names(rows: list[list[Any]], header: int, group: int | None, width: int) -> list[str]:
    head = [rows[header][i] if i < len(rows[header]) else None for i in range(width)]
    groups: list[Any] = [None] * width
    if group is not None:
        last = None
        for i in range(width):
            c = rows[group][i] if i < len(rows[group]) else None
            last = c if filled(c) else last
            groups[i] = last
    names: list[str] = []
    taken: set[str] = set()
    suffixes: dict[str, int] = {}  # the last ".k" given to a base: a wide row of one name
    for i, (g, h) in enumerate(zip(groups, head, strict=True)):  # stays linear, not cubic
        h_text = _text(h).lstrip("#").strip() if filled(h) else ""
        g_text = _text(g).strip() if filled(g) else ""
        base = f"{g_text} {h_text}".strip() if g_text != h_text else h_text
        base = base or f"Unnamed: {i}"
        label, k = base, suffixes.get(base, 0)
        while label in taken:
            k += 1
            label = f"{base}.{k}"
        suffixes[base] = k
        names.append(label)
        taken.add(label)
    return names


def _text(c: Any) -> str:
    if isinstance(c, float) and c.is_integer():
        return str(int(c))
    return str(c)


def find_layout(rows: list[list[Any]], header: Any = "auto", skiprows: Any = None) -> Layout:
    """Where the header and the data are in `rows` (header=/skiprows= given by the user win)."""
    start = skiprows if isinstance(skiprows, int) else 0
    n = [sum(1 for c in r if filled(c)) for r in rows]
    if header is None or isinstance(header, int) and header != "auto":
        h = None if header is None else start + int(header)
        width = max((len(r) for r in rows[start:]), default=0)
        names = _names(rows, h, None, width) if h is not None else None
        first = start if h is None else h + 1
        return Layout(first, h, None, width, names)
    data_counts = [n[i] for i in range(start, len(rows)) if n[i] >= 2
                   and any(value_like(c) for c in rows[i])]  # fmt: skip
    if data_counts:
        counts = collections.Counter(data_counts)  # one pass, whatever the widths
        w = max(counts, key=lambda k: (counts[k], k))
        need = max(2, math.ceil(w * 0.6))
        first = next(i for i in range(start, len(rows))
                     if n[i] >= need and any(value_like(c) for c in rows[i]))  # fmt: skip
    else:  # no numbers or dates anywhere: no header can be told from data
        width = max((len(r) for r in rows[start:]), default=0)
        return Layout(start, None, None, width, None, found=False)
    h: int | None = first - 1
    if h is None or h < start or n[h] < max(1, need - 1) or not _texty(rows[h]):
        # No header: nothing shows a layout made by hand, so every row stays as it is.
        width = max((len(r) for r in rows[start:]), default=0)
        return Layout(start, None, None, width, None)
    group = None
    if h is not None and h - 1 >= start:
        g = rows[h - 1]
        values = {_text(c).strip() for c in g if filled(c)}
        if n[h - 1] >= 2 and len(values) >= 2 and n[h - 1] <= n[h] and _texty(g):
            group = h - 1
    width = max((len(r) for r in rows[first : first + 200]), default=0)
    if h is not None:
        width = max(width, max((i + 1 for i, c in enumerate(rows[h]) if filled(c)), default=0))
    names = _names(rows, h, group, width) if h is not None else None
    return Layout(first, h, group, width, names)


# --- spreadsheets ----------------------------------------------------------------------------


def _fill_merged(rows: list[list[Any]], ranges: list[Any]) -> None:
    for (r0, c0), (r1, c1) in ranges:
        if r0 >= len(rows) or c0 >= len(rows[r0]):
            continue
        value = rows[r0][c0]
        for r in range(r0, min(r1, len(rows) - 1) + 1):
            for c in range(c0, min(c1, len(rows[r]) - 1) + 1):
                if not filled(rows[r][c]):
                    rows[r][c] = value


def split_tables(rows: list[list[Any]]) -> list[tuple[int, int]]:
    """Blocks of rows separated by blank rows where the next block starts with a title or a
    header (a blank row inside one table's data does not split it)."""
    blocks: list[tuple[int, int]] = []
    start = None
    for i, r in enumerate([*rows, []]):
        blank = not any(filled(c) for c in r)
        if blank and start is not None:
            blocks.append((start, i))
            start = None
        elif not blank and start is None:
            start = i
    merged: list[tuple[int, int]] = []
    for b in blocks:
        if merged and not _texty(rows[b[0]]):
            merged[-1] = (merged[-1][0], b[1])
        else:
            merged.append(b)
    tables = [b for b in merged if any(
        sum(1 for c in rows[i] if filled(c)) >= 2 and any(value_like(c) for c in rows[i])
        for i in range(*b))]  # fmt: skip
    return tables or merged


def serial_dates(df: Any, decided: dict) -> Any:
    """Columns named like dates holding Excel serial day numbers become dates."""
    import pandas as pd

    for i, col in enumerate(df.columns):
        s = df.iloc[:, i]
        if not _DATE_WORDS.search(str(col)) or not pd.api.types.is_numeric_dtype(s):
            continue
        v = s.dropna()
        if len(v) and ((v > 20000) & (v < 80000)).all() and (v == v.round()).all():
            df.isetitem(i, pd.to_datetime(s, unit="D", origin="1899-12-30"))
            decided.setdefault("columns", {})[str(col)] = "dates from Excel serial numbers"
    return df


def _as_it_is(path: str, sheet_name: str, decided: dict, opts: dict) -> Any:
    """A sheet with no header: its rows as pandas reads them (blank rows and notes kept), the
    first row the header only when it is all text; text columns still converted."""
    import load_tables
    import pandas as pd
    import text_tables

    with open(path, "rb") as fh:
        raw = pd.read_excel(fh, sheet_name=sheet_name, header=None, engine="calamine")
    df = load_tables._promote_header(raw)
    decided["header_row"] = 0 if df is not raw else None
    return text_tables.finish(df, decided, opts)


def read_workbook(path: str, name: str, sheet: Any, table: Any, opts: dict) -> Any:
    """Each visible non-empty sheet's main table (dict when several); decisions attached."""
    import text_tables
    from python_calamine import CalamineWorkbook

    wb = CalamineWorkbook.from_path(path)
    meta = {m.name: m for m in wb.sheets_metadata}
    hidden = [s for s in wb.sheet_names if str(meta[s].visible).lower().endswith("hidden")]
    names = [s for s in wb.sheet_names if s not in hidden] if sheet is None else None
    if sheet is not None:
        names = [wb.sheet_names[sheet] if isinstance(sheet, int) else sheet]
    frames: dict[str, Any] = {}
    for sheet_name in names or []:
        ws = wb.get_sheet_by_name(sheet_name)
        rows = [list(r) for r in ws.to_python(skip_empty_area=False)]
        _fill_merged(rows, ws.merged_cell_ranges or [])
        blocks = split_tables(rows)
        if not blocks:
            continue
        sizes = [b[1] - b[0] for b in blocks]
        pick = sizes.index(max(sizes)) if table is None else int(table)
        decided: dict[str, Any] = {"sheet": sheet_name}
        if hidden:
            decided["hidden_sheets"] = hidden
        if len(blocks) > 1:
            decided["table"] = pick
            decided["other_tables"] = [f"rows {a + 1}-{b}" for i, (a, b) in enumerate(blocks)
                                       if i != pick]  # fmt: skip
        a, b = blocks[pick]
        if table is None and ("header" in opts or "skiprows" in opts):
            a, b = 0, len(rows)  # the user's rows count from the top of the sheet
        user = table is not None or "header" in opts or "skiprows" in opts
        if not user and len(blocks) == 1 and not find_layout(rows[a:b]).made_by_hand:
            frames[sheet_name] = _as_it_is(path, sheet_name, decided, opts)
            continue
        df = text_tables.rows_to_frame(rows[a:b], decided, opts)
        if decided.get("title_rows_skipped") is not None or a:
            decided["title_rows_skipped"] = a + decided.get("title_rows_skipped", 0)
        frames[sheet_name] = df if opts.get("convert") is False else serial_dates(df, decided)
    if not frames:
        import pandas as pd

        return pd.DataFrame()
    return next(iter(frames.values())) if len(frames) == 1 else frames
