"""Delimited and fixed-width text tables, decided by their content on a bounded prefix.

Part of the sandbox loaders (see ``loaders``). The prefix decides the encoding, the separator,
the title lines above the header and the header itself (see ``sheet_layout``); the whole file
is then parsed by pandas' C reader with those decisions, and text columns are converted by
``column_types``. Every decision lands in ``df.attrs["labbot"]``.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
from typing import Any

import column_types
import sheet_layout
from load_raw import LoadError, read_head

PREFIX = 256 * 1024  # bytes sniffed; the rest is parsed with the decisions taken here
SEPS = (",", ";", "\t", "|")
_LEGACY = ["cp1252", "cp1250", "cp1251", "shift_jis", "gb18030", "big5", "euc_kr", "cp1253",
           "cp1254", "cp1257", "koi8_r"]  # fmt: skip
_WESTERN = set("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿ€–—‘’“”„…°·«»")
_CENTRAL = set("ąćęłńóśźżĄĆĘŁŃÓŚŹŻáčďéěíňřšťúůýžÁČĎÉĚÍŇŘŠŤÚŮÝŽäöüßÄÖÜ€–—‘’“”„…°·«»")
_RULE = re.compile(r"^\s*[-=]{2,}(?:[ +|]+[-=]{2,})+\s*$")


def _odd_chars(text: str, common: set[str]) -> int:
    return sum(1 for ch in text if ord(ch) > 127 and ch not in common)


def detect_encoding(head: bytes) -> str:
    """The encoding of a text prefix: a BOM, UTF-16 by its zero bytes, UTF-8, then the legacy
    code page charset-normalizer finds likeliest (cp1252 over cp1250 unless the text reads
    better as Central European)."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if head.startswith(bom):
            return enc
    sample = head[:4096]
    if len(sample) >= 4 and sample.count(0) > len(sample) // 4:
        odd, even = sample[1::2].count(0), sample[0::2].count(0)
        return "utf-16-le" if odd > even else "utf-16-be"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(head[:65536], cp_isolation=_LEGACY).best()
    enc = codecs.lookup(best.encoding).name if best is not None else "cp1252"
    if enc in ("cp1250", "cp1252", "latin-1", "iso8859-1", "iso8859-2", "iso8859-15"):
        west = _odd_chars(head[:65536].decode("cp1252", "replace"), _WESTERN)
        central = _odd_chars(head[:65536].decode("cp1250", "replace"), _CENTRAL)
        enc = "cp1250" if central < west else "cp1252"
    return enc


def _prefix_lines(head: bytes, encoding: str) -> tuple[list[str], bool]:
    whole = len(head) < PREFIX
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=whole)
    lines = text.splitlines()
    return (lines if whole else lines[:-1])[:400], whole


def sniff_sep(lines: list[str]) -> str:
    """The separator whose field count is the same on the most lines (then the widest)."""
    best, best_score = ",", (0, 0)
    for sep in SEPS:
        widths = [len(r) for r in csv.reader(lines, delimiter=sep) if len(r) > 1]
        if not widths:
            continue
        top = max(set(widths), key=lambda w: (widths.count(w), w))
        score = (widths.count(top), top)
        if score > best_score:
            best, best_score = sep, score
    return best


def fixed_width_rows(lines: list[str]) -> list[list[str]] | None:
    """The rows of a fixed-width table with a dash or '=' rule under its header, else None."""
    rule_at = next((i for i, ln in enumerate(lines[:60]) if _RULE.match(ln) and i > 0), None)
    if rule_at is None or not lines[rule_at - 1].strip():
        return None
    runs = [(m.start(), m.end()) for m in re.finditer(r"[-=]{2,}", lines[rule_at])]
    body: list[str] = []
    for ln in lines[rule_at + 1 :]:
        if not ln.strip() or _RULE.match(ln):
            break
        body.append(ln)
    block = [lines[rule_at - 1], *body]
    cuts = [0]
    for (_s0, e0), (s1, _e1) in zip(runs, runs[1:], strict=False):
        free = [p for p in range(e0, s1 + 1) if all(p >= len(ln) or ln[p] == " " for ln in block)]
        if not free:
            free = [p for p in range(s1, cuts[-1], -1)
                    if all(p >= len(ln) or ln[p] == " " for ln in block)]  # fmt: skip
        cuts.append(free[-1] if free else s1)
    cuts.append(max(len(ln) for ln in block) + 1)
    return [[ln[a:b].strip() for a, b in zip(cuts, cuts[1:], strict=False)] for ln in block]


def rows_to_frame(rows: list[list[Any]], decided: dict, opts: dict) -> Any:
    """A frame from a grid of cells (header found by sheet_layout), converted column by column."""
    import pandas as pd

    layout = sheet_layout.find_layout(rows, opts.get("header", "auto"), opts.get("skiprows"))
    if not layout.found:  # all text: the first row is the header when it fits (as before)
        import load_tables

        df = load_tables._promote_header(pd.DataFrame(rows).replace({"": None}))
        return finish(df, decided, {**opts, "_grid": True})
    by_hand = layout.made_by_hand
    body = [r + [None] * (layout.width - len(r)) for r in rows[layout.first_data :]]
    df = pd.DataFrame([r[: layout.width] for r in body], columns=layout.names or None)
    df = df.replace({"": None}).infer_objects()
    decided.update(layout.decisions())
    return finish(df, decided, {**opts, "_grid": True, "_by_hand": by_hand})


def _typed(df: Any) -> Any:
    """Whole numbers a spreadsheet stored as floats as ints; date cells as datetimes."""
    import pandas as pd

    for i in range(df.shape[1]):
        s = df.iloc[:, i]
        if s.dtype == "float64" and s.notna().all() and len(s) and (s == s.round()).all():
            df.isetitem(i, s.astype("int64"))
        elif (
            s.dtype == object
            and len(s.dropna())
            and all(isinstance(v, dt.date) for v in s.dropna())
        ):
            df.isetitem(i, pd.to_datetime(s).astype("datetime64[us]"))
    return df


def finish(df: Any, decided: dict, opts: dict) -> Any:
    """Drop trailing totals (and, under a header found by hand, blank rows and columns and
    notes), convert columns, attach decisions."""
    import pandas as pd

    by_hand = bool(opts.get("_by_hand"))
    first = df.iloc[:, 0].isna() if df.shape[1] and by_hand else None
    if first is not None and first.any() and df[first].isna().all(axis=1).any():
        df = df.dropna(how="all")  # only when a blank row can exist: no copy of big frames
    empty = [c for c in df.columns if str(c).startswith("Unnamed") or c is None or c == ""]
    blank = [c for c in empty if df[c].isna().all()]
    if blank:
        df = df.drop(columns=blank)
        decided["blank_columns_dropped"] = len(blank)
    df, dropped = column_types.drop_summary_rows(df, bool(opts.get("keep_totals")), by_hand)
    if dropped:
        decided["dropped_rows"] = dropped
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        df = df.reset_index(drop=True)
    df = _typed(df.infer_objects()) if opts.get("_grid") else df
    df = column_types.convert_frame(df, opts, decided)
    df.attrs["labbot"] = decided
    return df


def _compression(head: bytes) -> str | None:
    for magic, kind in ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz")):
        if head.startswith(magic):
            return kind
    return None


def read_table(path: str, name: str, sep: str | None = None, **opts: Any) -> Any:
    """A delimited or fixed-width text file as a DataFrame, decided by its content."""
    import pandas as pd
    from load_raw import read_bytes

    raw = read_bytes(path) if _compression(read_head(path, 6)) else None
    ours = {k: opts.pop(k) for k in ("decimal", "thousands", "dayfirst", "convert", "keep_totals",
                                     "dates") if k in opts}  # fmt: skip
    encoding = opts.pop("encoding", None)
    head = raw[:PREFIX] if raw is not None else read_head(path, PREFIX)
    encoding = encoding or detect_encoding(head)
    decided: dict[str, Any] = {"encoding": encoding}
    lines, whole = _prefix_lines(head, encoding)
    if sep is None and "delimiter" not in opts:
        fixed = fixed_width_rows(lines) if whole else None
        if fixed is not None:
            decided["sep"] = "fixed width"
            return rows_to_frame(fixed, decided, {**ours, **opts})
        sep = sniff_sep([ln for ln in lines if ln.strip()][:200])
    sep = sep or opts.pop("delimiter")
    decided["sep"] = sep
    grid = list(csv.reader(lines, delimiter=sep)) if len(sep) == 1 else []
    user_layout = "header" in opts or "skiprows" in opts or "names" in opts
    layout = None if user_layout or not grid else sheet_layout.find_layout(grid, "auto", None)
    if layout is not None and not layout.found:
        layout = None  # all text: pandas' own header rule
    comma_decimal = ours.get("decimal") == "," or (
        "decimal" not in ours and layout is not None and layout.decimal_hint(grid) == ","
    )
    read_opts: dict[str, Any] = {"sep": sep, **opts}
    if layout is not None:
        decided.update(layout.decisions())
        read_opts.update(skiprows=layout.first_data, header=None, names=layout.names)
        if layout.names is None:
            read_opts.pop("names")
    if comma_decimal and "dtype" not in read_opts:
        read_opts["dtype"] = str
        decided["decimal"] = ","
    src: Any = io.BytesIO(raw) if raw is not None else path
    try:
        df = pd.read_csv(src, encoding=encoding, **read_opts)
    except (UnicodeDecodeError, LookupError):
        if "encoding" in decided and encoding not in ("utf-8",):
            raise
        from load_raw import decode, read_bytes

        text = decode(raw if raw is not None else read_bytes(path))
        decided["encoding"] = "mixed; undecodable bytes replaced"
        df = pd.read_csv(io.StringIO(text), **read_opts)
    except pd.errors.ParserError as exc:
        raise LoadError(
            f"{name}: the rows do not split evenly with sep={sep!r} ({str(exc).strip()[:120]}); "
            "pass sep=, skiprows= or header= to load_file."
        ) from exc
    if layout is not None and layout.names is not None:
        df.columns = layout.names[: df.shape[1]] + list(df.columns[len(layout.names) :])
    by_hand = layout is not None and layout.made_by_hand
    return finish(df, decided, {**ours, **opts, "_by_hand": by_hand})


def looks_like_table(text: str) -> bool:
    """Whether plain text is a table: a dash-ruled fixed-width block, or at least 3 lines that
    split into the same number (≥ 2) of fields by one separator, covering most lines."""
    lines = [ln for ln in text[:PREFIX].splitlines()[:200] if ln.strip()]
    if len(lines) < 3:
        return False
    if fixed_width_rows(lines) is not None:
        return True
    for sep in SEPS:
        widths = [len(r) for r in csv.reader(lines, delimiter=sep)]
        top = max(set(widths), key=widths.count)
        if sep == "|" and sum(ln.lstrip().startswith("|") for ln in lines) > len(lines) / 2:
            continue  # a Markdown table in a document: the text is what the user wants
        if top >= 2 and widths.count(top) >= max(3, 0.6 * len(lines)):
            if sep in ",;" and any(len(r) != top for r in csv.reader(lines[-3:], delimiter=sep)):
                continue
            return True
    return False
