"""Turn text columns into the numbers and dates they hold, only when the whole column converts.

Part of the sandbox loaders (see ``loaders``). Each conversion is recorded as a decision (see
``decisions``): decimal and thousands separators, units (currency, percent), missing-value
markers, date order. A column that does not convert wholly stays as it was, with the reason.
"""

from __future__ import annotations

import re
from typing import Any

MISSING = frozenset(
    ["", "-", "--", "—", "–", "?", "n/a", "N/A", "na", "NA", "n.a.", "N.A.", "NULL", "null",
     "None", "none", "nan", "NaN", "#N/A", "#NV", "..", "...", ".", "k.A.", "n.v.", "н/д", "-/-",
     "x", "X", "－", "#DIV/0!", "#VALUE!"]
)  # fmt: skip
CURRENCY = re.compile(
    r"R\$|US\$|CHF|EUR|USD|GBP|PLN|RUB|JPY|CNY|SEK|NOK|DKK|CZK|BRL|zł|руб\.?|Kč|kr\.?|"
    r"[€$£¥₽₺₹₩元円₴]"
)
SPACES = "\u00a0\u202f\u2009 "
_SEPS = {",": ",", ".": r"\.", " ": f"[{SPACES}]", "'": "['’]", "": ""}
_CANDIDATES = [(".", ""), (",", ""), (".", ","), (",", "."), (",", " "), (".", " "), (".", "'"),
               (",", "'")]  # fmt: skip
_DIGIT = re.compile(r"\d")
# What is left of a number or a date once its units are gone (a loose first look).
_LOOSE = re.compile(r"[-+−()\d.,'’/:T年月日eE\s]*\d[-+−()\d.,'’/:T年月日eE\s]*")
TOTAL = re.compile(
    r"^\s*(grand\s+total|sub-?total|totals?|summe|gesamt(summe)?|insgesamt|totale?|totaal|"
    r"suma|razem|ogółem|итого|всего|合計|合计|总计|總計|小計|小计|sum|total\s+general|"
    r"importe\s+total|endsumme)\b",
    re.I,
)
_DATE_SHAPES = [
    # regex with named groups; "a"/"b" are day and month in an order decided per column.
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"),
    re.compile(r"^(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})"),
    re.compile(r"^(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})日"),
    re.compile(r"^(?P<a>\d{1,2})(?P<s>[./-])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})(?!\d)"),
]
_DAY_PART = (
    r"^\d{4}-\d{1,2}-\d{1,2}|^\d{4}/\d{1,2}/\d{1,2}|^\d{4}年\d{1,2}月\d{1,2}日|"
    r"^\d{1,2}([./-])\d{1,2}\1(\d{4}|\d{2})"
)
_TIME = re.compile(r"^(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?)?\s*$")


def number_pattern(dec: str, thou: str) -> re.Pattern[str]:
    t, d = _SEPS[thou], _SEPS[dec]
    grouped = rf"\d{{1,3}}(?:{t}\d{{3}})+" if thou else r"\d+"
    body = rf"(?:{grouped}|\d+)" if thou else grouped
    return re.compile(rf"^[-+]?(?:{body}(?:{d}\d*)?|{d}\d+)(?:[eE][-+]?\d+)?$")


_PATTERNS = {pair: number_pattern(*pair) for pair in _CANDIDATES}


def _strip_units(v: Any) -> tuple[Any, set[str], Any]:
    """Values without currency and percent signs or sign wrappers: (core, units, negative)."""
    units: set[str] = set()
    found = v.str.extract(f"({CURRENCY.pattern})", expand=False).dropna().unique()
    units |= {str(u) for u in found}
    v = v.str.replace(CURRENCY.pattern, "", regex=True)
    pct = v.str.contains("%", regex=False)
    if pct.any():
        units.add("%")
        v = v.str.replace("%", "", regex=False)
    v = v.str.strip(SPACES).str.replace("−", "-", regex=False)
    neg = v.str.startswith("(") & v.str.endswith(")") | v.str.endswith("-")
    v = v.str.strip("()").str.rstrip("-").str.strip(SPACES)
    v = v.str.replace(r"^-\s+", "-", regex=True)
    return v, units, neg


def as_numbers(v: Any, hint: str | None, decimal: str | None, thousands: str | None) -> Any:
    """(numbers, decimal, thousands, units) when every value of `v` is a number, else None."""
    import pandas as pd

    core, units, neg = _strip_units(v)
    if len(units - {"%"}) > 1 or (core == "").any():
        return None
    pairs = [p for p in _CANDIDATES if (decimal is None or p[0] == decimal)
             and (thousands is None or p[1] == thousands)]  # fmt: skip
    fits = [p for p in pairs if core.str.match(_PATTERNS[p]).all()]
    if not fits:
        return None
    fits.sort(key=lambda p: (p[0] != (hint or "."), p[1] != ""))
    dec, thou = fits[0]
    if len(fits) > 1 and any(p[0] != dec for p in fits) and hint is None:
        dec, thou = next(p for p in fits if p[0] == ".")
    plain = core.str.replace(_SEPS[thou], "", regex=True) if thou else core
    if dec == ",":
        plain = plain.str.replace(",", ".", regex=False)
    nums = pd.to_numeric(plain, errors="coerce")
    if nums.isna().any():
        return None
    nums = nums.where(~neg, -nums.abs())
    return nums, dec, thou, units


def as_dates(v: Any, hint: str | None, dayfirst: bool | None) -> Any:
    """(datetimes, how) when every value of `v` is a date in a known shape, else None."""
    import pandas as pd

    parts = pd.DataFrame(index=v.index, columns=["y", "a", "b", "m", "d"], dtype=object)
    left = pd.Series(True, index=v.index)
    shapes = 0
    for shape in _DATE_SHAPES:
        got = v[left].str.extract(shape.pattern)
        ok = got.index[got["y"].notna()]
        if len(ok):
            shapes += 1
            for col in got.columns.intersection(parts.columns):
                parts.loc[ok, col] = got.loc[ok, col]
            left.loc[ok] = False
    if left.any() or not shapes:
        return None
    tails = v.str.replace(_DAY_PART, "", regex=True)
    if not tails.str.match(_TIME.pattern).all():
        return None
    times = tails.str.extract(_TIME.pattern)
    how = "dates"
    has_ab = parts["a"].notna()
    if has_ab.any():
        a, b = parts.loc[has_ab, "a"].astype(int), parts.loc[has_ab, "b"].astype(int)
        if dayfirst is None:
            if (a > 12).any() and (b > 12).any():
                return None
            if (a > 12).any() or (b > 12).any():
                dayfirst = bool((a > 12).any())
            else:
                dotted = v[has_ab].str.contains(r"^\d{1,2}[.-]", regex=True).all()
                dayfirst = bool(dotted or hint == ",")
                how += " (order ambiguous)"
        parts.loc[has_ab, "d"] = (a if dayfirst else b).astype(str)
        parts.loc[has_ab, "m"] = (b if dayfirst else a).astype(str)
        how += ", day first" if dayfirst else ", month first"
        year = parts["y"].astype(str)
        short = year.str.len() == 2
        parts.loc[short, "y"] = "20" + year[short]
    if shapes > 1:
        how += ", mixed formats"
    comp = pd.DataFrame({
        "year": pd.to_numeric(parts["y"]), "month": pd.to_numeric(parts["m"]),
        "day": pd.to_numeric(parts["d"]), "hour": pd.to_numeric(times["H"]).fillna(0),
        "minute": pd.to_numeric(times["M"]).fillna(0),
        "second": pd.to_numeric(times["S"]).fillna(0),
    })  # fmt: skip
    try:
        out = pd.to_datetime(comp, errors="coerce")
    except (ValueError, OverflowError):  # out of the datetime64 range: keep the text
        return None
    if out.isna().any():
        return None
    return out.astype("datetime64[us]"), how


def convert_column(s: Any, hint: str | None, opts: dict) -> tuple[Any, str | None, str | None]:
    """(converted series or None, how it was converted, why it was kept as text)."""
    import pandas as pd

    if not (s.dtype == object or pd.api.types.is_string_dtype(s)):
        return None, None, None
    if not might_convert(s):
        return None, None, None
    if len(s) > 2000 and not _sample_converts(s, hint, opts):
        return None, None, None  # a bounded look first: big text columns stay fast
    text = s.astype("str").where(s.notna(), "")
    text = text.str.strip(SPACES)
    missing = text.isin(MISSING) | s.isna()
    rest = text[~missing]
    if rest.empty:
        return None, None, None
    sample = rest.iloc[:500]
    if not sample.str.contains(_DIGIT.pattern, regex=True).mean() > 0.5:
        return None, None, None
    markers = sorted(set(text[missing & s.notna()].unique()) - {""})
    said = f"; {', '.join(repr(m) for m in markers[:4])} as missing" if markers else ""
    if opts.get("dates", True) and sample.str.match(r"^\d{1,4}[-./年]\d{1,2}").all():
        got = as_dates(rest, hint, opts.get("dayfirst"))
        if got is not None:
            out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]")
            out[rest.index] = got[0]
            return out, got[1] + said, None
    got = as_numbers(rest, hint, opts.get("decimal"), opts.get("thousands"))
    if got is None:
        bad = _not_numbers(rest, hint)
        if bad is not None and 0 < len(bad) <= max(3, len(rest) // 10):
            why = f"{len(bad)} of {len(rest)} values are not numbers, e.g. {bad.iloc[0]!r}"
            return None, None, why
        return None, None, None
    nums, dec, thou, units = got
    out = pd.Series(float("nan"), index=s.index, dtype="float64")
    out[rest.index] = nums.astype("float64")
    if not missing.any() and (out == out.round()).all() and out.abs().max() < 2**53:
        out = out.astype("int64")
    how = "numbers"
    if dec == "," or thou:
        how += f" (decimal {dec!r}" + (f", thousands {thou!r}" if thou else "") + ")"
    if units:
        how += f", unit {'/'.join(sorted(units))} removed"
    return out, how + said, None


def is_text(s: Any) -> bool:
    """Whether a column holds text (object or a string dtype)."""
    return s.dtype == object or s.dtype.kind in "OSU" or str(s.dtype) in ("str", "string")


def might_convert(s: Any) -> bool:
    """Whether the first values of a text column look like numbers or dates at all: a cheap,
    bounded look in plain Python before any whole-column work (labels and names stop here)."""
    values = [v for v in s.iloc[:300].tolist() if v is not None and v == v]
    if values and not isinstance(values[0], str):
        return False  # dates or numbers a spreadsheet already typed
    words = [t for t in (str(v).strip(SPACES) for v in values) if t and t not in MISSING]
    if not words:
        return False
    fits = sum(1 for t in words if _LOOSE.fullmatch(CURRENCY.sub("", t).replace("%", "")))
    return fits >= 0.8 * len(words)


def _sample_converts(s: Any, hint: str | None, opts: dict) -> bool:
    """Whether the first 1000 values convert (or nearly: then the whole column is looked at
    to say why not)."""
    head = s.iloc[:1000].dropna().astype("str").str.strip(SPACES)
    head = head[~head.isin(MISSING)]
    if head.empty or not head.str.contains(_DIGIT.pattern, regex=True).mean() > 0.5:
        return False
    if head.str.match(r"^\d{1,4}[-./年]\d{1,2}").all():
        return True
    if as_numbers(head, hint, opts.get("decimal"), opts.get("thousands")) is not None:
        return True
    return _not_numbers(head, hint) is not None


def _not_numbers(rest: Any, hint: str | None) -> Any:
    """The values that keep a mostly numeric column from converting, or None."""
    core, _units, _neg = _strip_units(rest)
    ok = core.str.match(_PATTERNS[(hint or ".", "")]) | core.str.match(_PATTERNS[(",", ".")])
    ok |= core.str.match(_PATTERNS[(".", ",")]) | core.str.match(_PATTERNS[(",", " ")])
    if ok.mean() < 0.8:
        return None
    return rest[~ok]


def file_decimal(columns: list[Any]) -> str | None:
    """The decimal separator the file's text columns show unambiguously (',' or '.'), if any."""
    cells: list[str] = []
    for col in columns:
        values = [v for v in col.iloc[:2000].tolist() if isinstance(v, str)]
        cells += values[:300]
    return text_decimal(cells)


_COMMA_DECIMAL = re.compile(r"\d,\d{1,2}(?:\D*)$|\d\.\d{3},\d")
_DOT_DECIMAL = re.compile(r"\d\.\d{1,2}(?:\D*)$|\d,\d{3}\.\d")


def text_decimal(cells: list[str]) -> str | None:
    """The decimal separator more of these cells show unambiguously (',' or '.'), if any."""
    comma = dot = 0
    for cell in cells:
        t = cell.strip(SPACES)
        comma += bool(_COMMA_DECIMAL.search(t))
        dot += bool(_DOT_DECIMAL.search(t))
    if comma > dot:
        return ","
    return "." if dot else None


def _is_note(row: Any, cells: list[Any], first: str) -> bool:
    """A note under the data: one text in the first column (or merged across the row)."""
    one = len(cells) == 1 or len(set(map(str, cells))) == 1 and len(first) > 15 and " " in first
    at_start = isinstance(row.iloc[0], str) and row.iloc[0].strip() == first
    return one and at_start and isinstance(cells[0], str) and not _DIGIT.match(first)


def drop_summary_rows(df: Any, keep: bool, notes: bool = True) -> tuple[Any, list[str]]:
    """The frame without trailing rows labelled as totals (and, with `notes`, footnote and blank
    rows); what was dropped."""
    import pandas as pd

    dropped: list[str] = []
    if keep or len(df) < 2:
        return df, dropped
    n = len(df)
    for _ in range(min(6, len(df) - 1)):
        row = df.iloc[n - 1]
        cells = [c for c in row.tolist() if c is not None and not (isinstance(c, float) and c != c)
                 and not (isinstance(c, str) and not c.strip()) and c is not pd.NaT]  # fmt: skip
        first = str(cells[0]).strip() if cells else ""
        if not cells and notes:
            n -= 1
        elif cells and TOTAL.match(first):
            dropped.append(f"total row {first[:30]!r}")
            n -= 1
        elif notes and cells and df.shape[1] >= 3 and _is_note(row, cells, first):
            dropped.append(f"footnote {first[:30]!r}")
            n -= 1
        else:
            break
    return (df.iloc[:n] if n < len(df) else df), dropped[::-1]


def convert_frame(df: Any, opts: dict, decided: dict) -> Any:
    """Convert each text column that wholly converts; record how, or why not, in `decided`."""
    if opts.get("convert") is False:
        return df
    # Only text columns whose first values look like numbers or dates are looked at further.
    todo = [
        i for i in range(df.shape[1]) if is_text(df.iloc[:, i]) and might_convert(df.iloc[:, i])
    ]
    if not todo:
        return df
    texts = [df.iloc[:, i] for i in todo]
    hint = opts.get("decimal") or decided.get("decimal") or file_decimal(texts)
    how: dict[str, str] = {}
    kept: dict[str, str] = {}
    for i in todo:
        col = df.columns[i]
        out, done, why = convert_column(df.iloc[:, i], hint, opts)
        if out is not None:
            df.isetitem(i, out)
            how[str(col)] = done or ""
        elif why:
            kept[str(col)] = why
    if how:
        decided["columns"] = how
    if kept:
        decided["kept_as_text"] = kept
    seps = [h for h in how.values() if "decimal" in h]
    if seps and "decimal" not in decided:
        decided["decimal"] = "," if any("decimal ','" in h for h in seps) else "."
    return df
