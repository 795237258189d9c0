"""Table loaders: delimited text, spreadsheets, columnar and statistical formats, databases.

Part of the sandbox loaders (see ``loaders``); heavy libraries are imported inside each loader.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from load_raw import LoadError, read_head, read_text

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


# --- delimited text --------------------------------------------------------------------------


def _load_csv(path: str, name: str, sep: str | None = None, **opts: Any) -> Any:
    import text_tables

    return text_tables.read_table(path, name, sep, **opts)


def _load_jsonl(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    import pandas as pd

    text = read_text(path, encoding)
    try:
        return pd.read_json(io.StringIO(text), lines=True, **opts)
    except ValueError:
        pass
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                bad.append(number)
    if not records:
        raise LoadError(f"{name}: no line is a JSON record; read it with loader='text'.")
    df = (
        pd.json_normalize(records)
        if all(isinstance(r, dict) for r in records)
        else (pd.DataFrame({"value": records}))
    )
    if bad:
        df.attrs["labbot"] = {"bad_lines": len(bad), "bad_line_numbers": bad[:20]}
    return df


def _load_arff(path: str, name: str, encoding: str | None = None) -> Any:
    import pandas as pd
    from scipy.io import arff

    text = read_text(path, encoding)
    try:
        data, _meta = arff.loadarff(io.StringIO(text))
        df = pd.DataFrame(data)
        for col in df.columns:
            if df[col].dtype == object:
                df[col] = df[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
        return df
    except (NotImplementedError, ValueError):  # string/date attributes: parse the CSV part
        names = re.findall(r"^\s*@attribute\s+('[^']*'|\"[^\"]*\"|\S+)", text, re.I | re.M)
        body = re.split(r"^\s*@data\s*$", text, flags=re.I | re.M)[-1]
        return pd.read_csv(
            io.StringIO(body),
            names=[n.strip("'\"") for n in names],
            comment="%",
            quotechar="'",
            na_values="?",
            skipinitialspace=True,
        )


# --- spreadsheets ----------------------------------------------------------------------------


def _promote_header(df: Any) -> Any:
    """Use the first row as the header when it is all text and covers most columns."""
    if len(df) < 2:
        return df
    cells = list(df.iloc[0])
    texts = [c for c in cells if isinstance(c, str)]
    filled = [c for c in cells if c is not None and c == c]
    if not texts or len(texts) != len(filled) or 2 * len(texts) < len(cells):
        return df
    names: list[str] = []
    for i, c in enumerate(cells):
        base = c.strip() if isinstance(c, str) else f"Unnamed: {i}"
        label, k = base, 0
        while label in names:
            k += 1
            label = f"{base}.{k}"
        names.append(label)
    out = df.iloc[1:].reset_index(drop=True)
    out.columns = names
    return out.infer_objects()


def is_empty(df: Any) -> bool:
    return df.size == 0 or bool(df.isna().all().all())


def _load_excel(path: str, name: str, sheet: Any = None, **opts: Any) -> Any:
    import pandas as pd

    head = read_head(path, 1 << 16)
    if head.startswith(_OLE) and "EncryptedPackage".encode("utf-16-le") in head:
        raise LoadError(
            f"{name} is an encrypted (password-protected) workbook; ask the user for an "
            "unprotected copy (File > Info > Protect Workbook > remove the password)."
        )
    if head.startswith(b"PK"):
        import sheet_extent

        sheet_extent.check_xlsx(path, name)
    sheet = opts.pop("sheet_name", sheet)
    table = opts.pop("table", None)
    ours = {k: opts.pop(k) for k in ("decimal", "thousands", "dayfirst", "convert", "keep_totals",
                                     "dates", "skiprows", "header") if k in opts}  # fmt: skip
    if not opts and not (head.startswith(_OLE) and "engine" in opts):
        import sheet_layout

        try:
            return sheet_layout.read_workbook(path, name, sheet, table, ours)
        except Exception as exc:
            if "encrypt" in str(exc).lower() or "password" in str(exc).lower():
                raise LoadError(
                    f"{name} is an encrypted (password-protected) workbook; ask the user for an "
                    "unprotected copy."
                ) from exc
            raise
    opts.update({k: v for k, v in ours.items() if k in ("skiprows", "header")})
    auto = "header" not in opts
    opts.setdefault("header", None)
    opts.setdefault("engine", "calamine")
    with open(path, "rb") as fh:
        try:
            frames = pd.read_excel(fh, sheet_name=None if sheet is None else sheet, **opts)
        except Exception as exc:
            if "encrypt" in str(exc).lower() or "password" in str(exc).lower():
                raise LoadError(
                    f"{name} is an encrypted (password-protected) workbook; ask the user for an "
                    "unprotected copy."
                ) from exc
            raise
    if not isinstance(frames, dict):
        return _promote_header(frames) if auto else frames
    if auto:
        frames = {k: _promote_header(v) for k, v in frames.items()}
    full = {k: v for k, v in frames.items() if not is_empty(v)}
    if not full:
        return next(iter(frames.values()), pd.DataFrame())
    return next(iter(full.values())) if len(full) == 1 else full


# --- columnar and statistical formats --------------------------------------------------------


def _load_parquet(path: str, name: str, **opts: Any) -> Any:
    import pyarrow.parquet as pq

    if b"geo" in (pq.read_schema(path).metadata or {}):
        import geopandas as gpd

        return gpd.read_parquet(path, **opts)
    import pandas as pd

    return pd.read_parquet(path, **opts)


def _load_feather(path: str, name: str, **opts: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    try:
        with pa.memory_map(path) as src:
            meta = pa.ipc.open_file(src).schema.metadata or {}
    except pa.ArrowInvalid:  # Arrow IPC stream rather than file format
        with pa.memory_map(path) as src:
            return pa.ipc.open_stream(src).read_all().to_pandas()
    if b"geo" in meta:
        import geopandas as gpd

        return gpd.read_feather(path, **opts)
    return pd.read_feather(path, **opts)


def _load_avro(path: str, name: str) -> Any:
    import fastavro
    import pandas as pd

    with open(path, "rb") as fh:
        return pd.DataFrame.from_records(list(fastavro.reader(fh)))


def _readstat(func: str, path: str, **opts: Any) -> Any:
    import inspect

    import pandas as pd
    import pyreadstat

    read = getattr(pyreadstat, func)
    params = inspect.signature(read).parameters
    apply = opts.pop("apply_value_formats", True)
    if "dates_as_pandas_datetime" in params:
        opts.setdefault("dates_as_pandas_datetime", True)
    df, meta = read(path, **opts)
    labels = zip(meta.column_names, meta.column_labels, strict=False)
    df.attrs["column_labels"] = {k: v for k, v in labels if v}
    df.attrs["value_labels"] = meta.variable_value_labels
    kept: dict[str, str] = {}
    for col, codes in meta.variable_value_labels.items() if apply else ():
        if col not in df.columns:
            continue
        values = set(df[col].dropna().unique())
        if values <= set(codes):  # every value labelled: a category
            order = list(dict.fromkeys(codes.values()))
            df[col] = pd.Categorical(df[col].map(codes), categories=order)
        else:  # labels only on some codes (e.g. "no answer"): the numbers stay numbers
            kept[col] = f"labels on {len(codes)} codes not applied; the numbers are kept"
    decided: dict[str, Any] = {}
    missing = getattr(meta, "missing_ranges", None) or {}
    if missing and not opts.get("user_missing"):
        decided["missing_codes"] = {
            k: [r["lo"] if r["lo"] == r["hi"] else f"{r['lo']}..{r['hi']}" for r in v]
            for k, v in missing.items()
        }
    if kept:
        decided["kept_numeric"] = kept
    if decided:
        df.attrs["labbot"] = decided
    return df


def _stata_code(v: Any) -> Any:
    if v.__class__.__name__ != "StataMissingValue":
        return v
    return v.string if v.string != "." else float("nan")


def _load_stata(path: str, name: str, **opts: Any) -> Any:
    """Stata: lettered missing codes (.a-.z) missing, counted with their labels; value labels
    applied only to a variable whose every value is labelled (else the numbers stay)."""
    import pandas as pd
    import pyreadstat

    apply = opts.pop("apply_value_formats", opts.pop("convert_categoricals", True))
    keep_codes = opts.pop("user_missing", False)
    opts.setdefault("convert_missing", True)
    try:
        with pd.read_stata(path, iterator=True, convert_categoricals=False, **opts) as reader:
            df = reader.read()
            df.attrs["column_labels"] = {k: v for k, v in reader.variable_labels().items() if v}
    except ValueError:  # pandas cannot keep missing codes beside dates: plain NaN then
        opts["convert_missing"] = False
        with pd.read_stata(path, iterator=True, convert_categoricals=False, **opts) as reader:
            df = reader.read()
            df.attrs["column_labels"] = {k: v for k, v in reader.variable_labels().items() if v}
    meta = pyreadstat.read_dta(path, metadataonly=True)[1]
    labels = meta.variable_value_labels
    decided: dict[str, Any] = {}
    codes: dict[str, list[str]] = {}
    for col in [c for c in df.columns if df[c].dtype.kind == "O"]:
        lettered = df[col].map(lambda v: isinstance(v, pd.io.stata.StataMissingValue))
        if not lettered.any():
            continue
        if keep_codes:  # the codes as Stata writes them ('.a'), plain missing as NaN
            df[col] = df[col].map(_stata_code)
            continue
        found = df.loc[lettered, col].map(lambda v: v.string).value_counts()
        named = labels.get(col, {})
        codes[col] = [f"{c} {named.get(c[1:], '')} ×{n}".replace("  ", " ") for c, n in
                      found.items() if c != "."]  # fmt: skip
        single = meta.readstat_variable_types.get(col) == "float"
        df[col] = pd.to_numeric(df[col].where(~lettered), errors="coerce").astype(
            "float32" if single else "float64"
        )
        if not codes[col]:
            del codes[col]
    kept: dict[str, str] = {}
    for col, named in labels.items() if apply else ():
        numeric = {k: v for k, v in named.items() if not isinstance(k, str)}
        values = set(df[col].dropna().unique()) if col in df.columns else {""}
        if numeric and values <= set(numeric):
            order = list(dict.fromkeys(numeric.values()))
            df[col] = pd.Categorical(df[col].map(numeric), categories=order)
        elif numeric:
            kept[col] = f"labels on {len(numeric)} codes not applied; the numbers are kept"
    df.attrs["value_labels"] = labels
    if codes:
        decided["missing_codes"] = codes
    if kept:
        decided["kept_numeric"] = kept
    if decided:
        df.attrs["labbot"] = decided
    return df


# --- databases -------------------------------------------------------------------------------


def _from_connection(con: Any, name: str, table: str | None, query: str | None) -> Any:
    import pandas as pd

    if query is not None:
        return pd.read_sql_query(query, con)
    tables = [
        r[0]
        for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid"
        )
    ]
    if table is not None:
        if table not in tables:
            raise LoadError(f"{name} has no table {table!r}; its tables are {tables}.")
        tables = [table]
    if not tables:
        raise LoadError(f"{name} holds no tables; try query= on its views.")
    frames = {
        t: pd.read_sql_query(f'SELECT * FROM "{t.replace(chr(34), chr(34) * 2)}"', con)
        for t in tables
    }
    return frames[tables[0]] if len(frames) == 1 else frames


def _load_sqlite(path: str, name: str, table: str | None = None, query: str | None = None) -> Any:
    import sqlite3

    uri = Path(path).resolve().as_uri() + "?mode=ro&immutable=1"
    con = sqlite3.connect(uri, uri=True)
    try:
        return _from_connection(con, name, table, query)
    finally:
        con.close()


def _load_sql(
    path: str,
    name: str,
    table: str | None = None,
    query: str | None = None,
    encoding: str | None = None,
) -> Any:
    import sqlite3

    con = sqlite3.connect(":memory:")
    try:
        try:
            con.executescript(read_text(path, encoding).lstrip("\ufeff"))
        except sqlite3.Error as exc:
            raise LoadError(
                f"{name} is not a SQL script SQLite can run ({exc}); it may use another "
                "database's dialect, so read it as text with loader='text'."
            ) from exc
        return _from_connection(con, name, table, query)
    finally:
        con.close()


def _load_dbf(path: str, name: str, **opts: Any) -> Any:
    import pyogrio

    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "table.dbf")
        os.symlink(os.path.abspath(path), link)
        return pyogrio.read_dataframe(link, read_geometry=False, **opts)
