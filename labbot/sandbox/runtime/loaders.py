"""What load_file(file_id, **options) returns, by kind:

- csv, tsv: DataFrame (encoding and delimiter detected; leading `#` comment lines skipped;
  options go to pd.read_csv, e.g. sep=, encoding=, header=, skiprows=).
- Excel (xlsx/xlsm/xlsb/xls), ods: DataFrame when one sheet has data, else dict {sheet: DataFrame}
  of the non-empty sheets in workbook order; sheet= picks one. The first row becomes the header
  when it is all text (pass header= to decide yourself).
- parquet, feather/arrow, orc, avro, jsonl, arff, dbf: DataFrame (GeoDataFrame for GeoParquet
  and geo-feather).
- spss (sav/zsav/por), stata, sas, xpt: DataFrame with value labels applied, strings decoded,
  dates as datetime64; df.attrs["column_labels"] holds variable labels.
- geo (GeoJSON, TopoJSON, shapefile, zipped shapefile, KML, KMZ, GPX, GeoPackage): GeoDataFrame;
  a file with several non-empty layers gives dict {layer: GeoDataFrame}; GPX gives the first
  non-empty of track_points, route_points, waypoints, tracks, routes. layer= picks one.
- json, toml: Python objects. yaml: the document (list of documents if several); unknown tags
  become plain dicts/lists/scalars.
- xml: DataFrame of the root's child records (pd.read_xml; xpath=, namespaces= accepted), or a
  nested dict {tag: {"@attr": ..., "#text": ..., child: ...}} when it is not record-like.
- html: DataFrame (one table), list of DataFrames (several), or the page text (no table).
- sqlite, sql (dump, run into an in-memory database): DataFrame if one table, else dict
  {table: DataFrame}; table= or query= gives one DataFrame.
- hdf5: DataFrame for a pandas/PyTables table (several: dict {key: DataFrame}; key= picks one),
  else dict {dataset path: ndarray} (strings decoded). netcdf: xarray.Dataset.
- mat: dict {variable: value} (structs as dicts, unit dimensions squeezed; v7.3 too).
  idl: dict {variable: value}. npy: ndarray. npz: dict {name: ndarray}.
- pickle, joblib: the unpickled object.
- image: PIL.Image (multi-frame: img.n_frames, img.seek(i)).
- pdf: str, pages separated by "\\f" (password= for encrypted files).
- docx: str; tables as "| a | b |" lines in document order.
- text (txt, log, md, code, config): str (encoding detected).
- zip, tar: the single member loaded as its own kind; several members give
  dict {member: loaded object, or bytes when not loadable}; a zipped shapefile gives its
  GeoDataFrame; archives unpacking to over 512 MiB are refused.
- bytes: the raw bytes.
A file that cannot be read raises LoadError saying why and what to try.
"""

from __future__ import annotations

import functools
import json
import os
import reprlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The loader modules beside this file are imported as top-level modules, as the kernel (run
# from this folder) imports this one; when this file is loaded by its path instead (the tests
# do), put the folder on sys.path first so those imports resolve the same way.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import decisions  # noqa: E402
import load_archives  # noqa: E402
import load_arrays  # noqa: E402
import load_documents  # noqa: E402
import load_geo  # noqa: E402
import load_tables  # noqa: E402
import text_tables  # noqa: E402
from load_archives import MAX_ARCHIVE_BYTES as MAX_ARCHIVE_BYTES  # noqa: E402
from load_archives import MAX_MEMBERS as MAX_MEMBERS  # noqa: E402
from load_raw import MAX_DECOMPRESSED_BYTES as MAX_DECOMPRESSED_BYTES  # noqa: E402
from load_raw import LoadError, lazy_import, read_text  # noqa: E402


def load(path: str, *, loader: str, name: str, **options: Any) -> object:
    """Load the file at `path` (its display name is `name`, e.g. "sales.xlsx") with the named
    loader and return the natural object."""
    func = _LOADERS.get(loader)
    if func is None:
        raise LoadError(f"{name}: unknown loader {loader!r}; use one of {', '.join(_LOADERS)}.")
    try:
        return func(str(path), name, **options)
    except LoadError:
        raise
    except MemoryError:
        raise LoadError(f"{name} is too large to load into memory; read it in parts.") from None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip()[:300]}".rstrip(": ")
        raise LoadError(
            f"{name} could not be read as {loader} ({reason}). The file may be damaged or not "
            "really this format; check the options, or read the raw bytes with loader='bytes'."
        ) from exc


_TABLE_TEXT = ("txt", "text", "dat", "asc", "prn", "")
_TABLE_NAMES = ("csv", "tsv", "tab", "txt", "dat", "prn", "")


def _load_text(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    """Text; a .txt/.dat/extension-less file that is a table comes back as a DataFrame."""
    import load_raw

    text = read_text(path, encoding)
    if opts or (load_raw.extension(name) in _TABLE_TEXT and text_tables.looks_like_table(text)):
        return text_tables.read_table(path, name, encoding=encoding, **opts)
    return text


def _load_bytes(path: str, name: str, **opts: Any) -> Any:
    """Raw bytes; but a file named like a table that decodes as text is read as a table (a
    legacy code page the host took for binary)."""
    import load_raw

    raw = Path(path).read_bytes()
    if load_raw.extension(name) in _TABLE_NAMES[:-1] and b"\x00" not in raw[:4096]:
        try:
            text = load_raw.decode(raw[: 1 << 20])
            if "\ufffd" not in text[:4096] and text_tables.looks_like_table(text):
                return text_tables.read_table(path, name, **opts)
        except (LoadError, UnicodeError, ValueError):
            pass
    if opts:
        raise LoadError(f"{name}: the bytes loader takes no options.")
    return raw


def _load_json(path: str, name: str, encoding: str | None = None) -> Any:
    """JSON; one record per line saved as .json comes back as a DataFrame (bad lines counted)."""
    text = read_text(path, encoding)
    try:
        return json.loads(text)
    except ValueError:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].lstrip().startswith("{"):
            return load_tables._load_jsonl(path, name, encoding)
        raise


# The dispatch table: loader name -> func(path, name, **options). The loader functions keep
# their names (a wrong option's TypeError names them); the zip and tar loaders get `load`
# itself, to load each member.
_LOADERS: dict[str, Callable[..., Any]] = {
    "csv": load_tables._load_csv,
    "jsonl": load_tables._load_jsonl,
    "arff": load_tables._load_arff,
    "excel": load_tables._load_excel,
    "ods": load_tables._load_excel,
    "parquet": load_tables._load_parquet,
    "feather": load_tables._load_feather,
    "avro": load_tables._load_avro,
    "stata": load_tables._load_stata,
    "geo": load_geo._load_geo,
    "yaml": load_documents._load_yaml,
    "xml": load_documents._load_xml,
    "html": load_documents._load_html,
    "sqlite": load_tables._load_sqlite,
    "sql": load_tables._load_sql,
    "hdf5": load_arrays._load_hdf5,
    "netcdf": load_arrays._load_netcdf,
    "mat": load_arrays._load_mat,
    "npz": load_arrays._load_npz,
    "pickle": load_arrays._load_pickle,
    "image": load_documents._load_image,
    "pdf": load_documents._load_pdf,
    "docx": load_documents._load_docx,
    "zip": functools.partial(load_archives._load_zip, load),
    "tar": functools.partial(load_archives._load_tar, load),
    "dbf": load_tables._load_dbf,
    "text": lambda path, name, **opts: _load_text(path, name, **opts),
    "bytes": lambda path, name, **opts: _load_bytes(path, name, **opts),
    "tsv": lambda path, name, sep="\t", **opts: load_tables._load_csv(path, name, sep=sep, **opts),
    "json": lambda path, name, encoding=None: _load_json(path, name, encoding),
    "toml": lambda path, name, encoding=None: lazy_import("tomllib").loads(
        read_text(path, encoding)
    ),
    "orc": lambda path, name, **opts: lazy_import("pandas").read_orc(path, **opts),
    "joblib": lambda path, name: lazy_import("joblib").load(path),
    "idl": lambda path, name, **opts: dict(lazy_import("scipy.io").readsav(path, python_dict=True)),
    "npy": lambda path, name, **opts: lazy_import("numpy").load(
        path, **{"allow_pickle": True, **opts}
    ),
    "spss": lambda path, name, **opts: load_tables._readstat("read_sav", path, **opts),
    "spss_por": lambda path, name, **opts: load_tables._readstat("read_por", path, **opts),
    "sas": lambda path, name, **opts: load_tables._readstat("read_sas7bdat", path, **opts),
    "xpt": lambda path, name, **opts: load_tables._readstat("read_xport", path, **opts),
}


# --- preview ---------------------------------------------------------------------------------


def _frame_line(df: Any, width: int) -> str:
    cols = ", ".join(f"{c}: {t}" for c, t in df.dtypes.astype(str).items())
    if len(cols) > width:
        cols = cols[: max(width - 1, 0)].rsplit(", ", 1)[0] + ", …"
    return f"{type(df).__name__} {df.shape[0]} rows × {df.shape[1]} columns ({cols})"


def _short(obj: Any, max_chars: int) -> str:
    mod = type(obj).__module__
    if hasattr(obj, "dtypes") and hasattr(obj, "shape") and hasattr(obj, "columns"):
        said = decisions.describe(getattr(obj, "attrs", {}).get("labbot"), obj)
        if not said:
            return _frame_line(obj, max_chars)
        # The columns give way first: the line saying how the file was read stays whole.
        return _frame_line(obj, max(60, min(220, max_chars - len(said) - 45))) + "\n" + said
    if mod.startswith("numpy") and hasattr(obj, "shape"):
        return f"ndarray shape={tuple(obj.shape)} dtype={obj.dtype}"
    if mod.startswith("PIL"):
        frames = getattr(obj, "n_frames", 1)
        return f"PIL image {obj.format} {obj.size[0]}x{obj.size[1]} mode={obj.mode} frames={frames}"
    if isinstance(obj, str):
        return f"str, {len(obj)} chars, {obj.count(chr(10)) + 1} lines: {obj[:200]!r}"
    if isinstance(obj, bytes):
        return f"bytes, {len(obj)} bytes: {obj[:40]!r}"
    rep = reprlib.Repr()
    rep.maxstring = rep.maxother = 80
    return f"{type(obj).__name__}: {rep.repr(obj)}"


def preview(obj: object, *, max_chars: int = 600) -> str:
    """A short schema preview for the model: for a DataFrame its shape and `column: dtype` list
    (truncated); for a dict of DataFrames one line per key; for arrays shape+dtype; for others
    type and a short repr. Never raises."""
    try:
        if isinstance(obj, dict) and obj:
            lines = [f"dict with {len(obj)} keys:"]
            lines += [f"  {k!r}: {_short(v, 160)}" for k, v in list(obj.items())[:30]]
            text = "\n".join(lines)
        elif isinstance(obj, list) and obj and all(hasattr(v, "columns") for v in obj):
            text = "\n".join(
                [f"list of {len(obj)} DataFrames:"]
                + [f"  [{i}]: {_short(v, 160)}" for i, v in enumerate(obj[:30])]
            )
        elif isinstance(obj, list):
            text = f"list of {len(obj)} items: " + _short(obj, max_chars).split(": ", 1)[-1]
        else:
            text = _short(obj, max_chars)
    except Exception as exc:  # a preview must never break a run
        text = f"{type(obj).__name__} (preview failed: {type(exc).__name__})"
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
