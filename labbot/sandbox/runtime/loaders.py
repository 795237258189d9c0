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

import bz2
import codecs
import csv
import gzip
import importlib
import io
import json
import lzma
import os
import re
import reprlib
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any


class LoadError(Exception):
    """A file could not be loaded; the message says why and what to try, in one or two sentences."""


MAX_ARCHIVE_BYTES = 512 << 20  # total declared uncompressed size of an archive's members
MAX_DECOMPRESSED_BYTES = 1 << 30  # gzip/bz2/xz text files
MAX_MEMBERS = 1000
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_GPX_ORDER = ("track_points", "route_points", "waypoints", "tracks", "routes")
_GEO_EXTS = ("shp", "kml", "gpx", "geojson", "topojson", "json", "gpkg", "gml")


_LOADERS: dict[str, Callable[..., Any]] = {}


def _loader(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as the loader for these names."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        _LOADERS.update(dict.fromkeys(names, func))
        return func

    return register


def _lib(module: str) -> Any:
    """Import a library only when a loader needs it (module import stays cheap)."""
    return importlib.import_module(module)


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


# --- raw bytes and text --------------------------------------------------------------------


def _ext(name: str) -> str:
    return PurePosixPath(name.lower()).suffix.lstrip(".")


def _head(path: str, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _read_bytes(path: str) -> bytes:
    """The file's bytes, transparently decompressed when it is gzip, bz2 or xz."""
    head = _head(path, 6)
    opener = None
    if head.startswith(b"\x1f\x8b"):
        opener = gzip.open
    elif head.startswith(b"BZh"):
        opener = bz2.open
    elif head.startswith(b"\xfd7zXZ\x00"):
        opener = lzma.open
    if opener is None:
        return Path(path).read_bytes()
    with opener(path, "rb") as fh:
        data = fh.read(MAX_DECOMPRESSED_BYTES + 1)
    if len(data) > MAX_DECOMPRESSED_BYTES:
        raise LoadError("the file decompresses to more than 1 GiB; refusing to load it.")
    return data


def _decode(raw: bytes, encoding: str | None = None) -> str:
    """Decode text: explicit encoding, else BOM, else UTF-8, else charset-normalizer's guess."""
    if encoding:
        return raw.decode(encoding)
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if raw.startswith(bom):
            return raw.decode(enc)
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16")):
        if raw.startswith(bom) or (enc == "utf-16" and raw.startswith(codecs.BOM_UTF16_BE)):
            return raw.decode(enc)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw[: 1 << 20]).best()
    enc = best.encoding if best is not None else "cp1252"
    return raw.decode(enc, errors="replace")


def _read_text(path: str, encoding: str | None = None) -> str:
    return _decode(_read_bytes(path), encoding)


# --- delimited text --------------------------------------------------------------------------


def _sniff_sep(lines: list[str]) -> str:
    """The delimiter giving the most columns consistently across the sample lines."""
    best, best_score = ",", (0, 0)
    for sep in (",", "\t", ";", "|"):
        widths = [len(row) for row in csv.reader(lines, delimiter=sep)]
        if not widths:
            continue
        top = max(set(widths), key=widths.count)
        score = (widths.count(top) * 10 // len(widths), top) if top > 1 else (0, 0)
        if score > best_score:
            best, best_score = sep, score
    return best


def _comment_rows(lines: list[str], sep: str) -> int:
    """Leading `#` lines to skip; a last `#` line shaped like the data is kept as the header."""
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    if 0 < n < len(lines) and len(sep) == 1:
        width = len(next(csv.reader([lines[n]], delimiter=sep)))
        header = next(csv.reader([lines[n - 1][1:]], delimiter=sep))
        if width > 1 and len(header) == width and not lines[n - 1].startswith("##"):
            return n - 1
    return n


@_loader("csv")
def _load_csv(path: str, name: str, sep: str | None = None, **opts: Any) -> Any:
    import pandas as pd

    text = _read_text(path, opts.pop("encoding", None))
    lines = text[:200_000].splitlines()[:200]
    if sep is None:
        sep = _sniff_sep([ln for ln in lines if ln.strip() and not ln.startswith("#")][:50])
    if "skiprows" not in opts and "comment" not in opts:
        skip = _comment_rows(lines, sep)
        if skip:
            text = text.split("\n", skip)[-1]
            text = text[1:] if text.startswith("#") else text
    return pd.read_csv(io.StringIO(text), sep=sep, **opts)


@_loader("jsonl")
def _load_jsonl(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    import pandas as pd

    text = _read_text(path, encoding)
    try:
        return pd.read_json(io.StringIO(text), lines=True, **opts)
    except ValueError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return pd.json_normalize(records) if records else pd.DataFrame()


@_loader("arff")
def _load_arff(path: str, name: str, encoding: str | None = None) -> Any:
    import pandas as pd
    from scipy.io import arff

    text = _read_text(path, encoding)
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


def _is_empty(df: Any) -> bool:
    return df.size == 0 or bool(df.isna().all().all())


@_loader("excel", "ods")
def _load_excel(path: str, name: str, sheet: Any = None, **opts: Any) -> Any:
    import pandas as pd

    head = _head(path, 1 << 16)
    if head.startswith(_OLE) and "EncryptedPackage".encode("utf-16-le") in head:
        raise LoadError(
            f"{name} is an encrypted (password-protected) workbook; ask the user for an "
            "unprotected copy (File > Info > Protect Workbook > remove the password)."
        )
    auto = "header" not in opts
    opts.setdefault("header", None)
    opts.setdefault("engine", "calamine")
    sheet = opts.pop("sheet_name", sheet)
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
    full = {k: v for k, v in frames.items() if not _is_empty(v)}
    if not full:
        return next(iter(frames.values()), pd.DataFrame())
    return next(iter(full.values())) if len(full) == 1 else full


# --- columnar and statistical formats --------------------------------------------------------


@_loader("parquet")
def _load_parquet(path: str, name: str, **opts: Any) -> Any:
    import pyarrow.parquet as pq

    if b"geo" in (pq.read_schema(path).metadata or {}):
        import geopandas as gpd

        return gpd.read_parquet(path, **opts)
    import pandas as pd

    return pd.read_parquet(path, **opts)


@_loader("feather")
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


@_loader("avro")
def _load_avro(path: str, name: str) -> Any:
    import fastavro
    import pandas as pd

    with open(path, "rb") as fh:
        return pd.DataFrame.from_records(list(fastavro.reader(fh)))


def _readstat(func: str, path: str, **opts: Any) -> Any:
    import inspect

    import pyreadstat

    read = getattr(pyreadstat, func)
    params = inspect.signature(read).parameters
    for opt in ("apply_value_formats", "formats_as_category", "dates_as_pandas_datetime"):
        if opt in params:
            opts.setdefault(opt, True)
    df, meta = read(path, **opts)
    labels = zip(meta.column_names, meta.column_labels, strict=False)
    df.attrs["column_labels"] = {k: v for k, v in labels if v}
    df.attrs["value_labels"] = meta.variable_value_labels
    return df


@_loader("stata")
def _load_stata(path: str, name: str, **opts: Any) -> Any:
    import pandas as pd

    with pd.read_stata(path, iterator=True, **opts) as reader:
        df = reader.read()
        df.attrs["column_labels"] = {k: v for k, v in reader.variable_labels().items() if v}
    return df


# --- geo -------------------------------------------------------------------------------------


def _geo_source(path: str, name: str, tmp: str) -> tuple[str, bool]:
    """A GDAL path for the file (a link named like the upload, sidecars beside it, /vsizip/ for
    a zipped shapefile) and whether the .shx index must be rebuilt."""
    base = re.sub(r"[^\w.-]", "_", PurePosixPath(name).name) or "data"
    link = os.path.join(tmp, base)
    os.symlink(os.path.abspath(path), link)
    if _ext(base) == "shp":
        stem = os.path.splitext(path)[0] if _ext(path) == "shp" else path
        for side in ("shx", "dbf", "prj", "cpg"):
            if os.path.exists(f"{stem}.{side}"):
                os.symlink(os.path.abspath(f"{stem}.{side}"), f"{link[:-4]}.{side}")
        return link, not os.path.exists(f"{link[:-4]}.shx")
    if _ext(base) == "kmz" or not zipfile.is_zipfile(path):
        return link, False
    with zipfile.ZipFile(path) as zf:
        inner = [n for n in zf.namelist() if _ext(n) in _GEO_EXTS and "__MACOSX" not in n]
    main = [n for n in inner if _ext(n) in ("shp", "kml")] or inner
    return (f"/vsizip/{link}/{main[0]}" if len(main) == 1 else f"/vsizip/{link}"), False


@_loader("geo")
def _load_geo(path: str, name: str, layer: Any = None, **opts: Any) -> Any:
    import geopandas as gpd
    import pyogrio

    with tempfile.TemporaryDirectory() as tmp:
        src, restore_shx = _geo_source(path, name, tmp)
        # A lone .shp (no .shx beside it) still gives its geometries.
        pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": True if restore_shx else None})
        if layer is not None:
            return gpd.read_file(src, layer=layer, **opts)
        layers = [str(row[0]) for row in pyogrio.list_layers(src)]
        if len(layers) <= 1:
            return gpd.read_file(src, **opts)
        if set(_GPX_ORDER) <= set(layers):
            for lyr in _GPX_ORDER:
                gdf = gpd.read_file(src, layer=lyr, **opts)
                if len(gdf):
                    return gdf
            return gdf
        frames = {lyr: gpd.read_file(src, layer=lyr, **opts) for lyr in layers}
    full = {k: v for k, v in frames.items() if len(v)}
    if len(full) == 1:
        return next(iter(full.values()))
    return full or frames[layers[0]]


# --- structured text -------------------------------------------------------------------------


@_loader("yaml")
def _load_yaml(path: str, name: str, encoding: str | None = None) -> Any:
    import yaml

    class TolerantLoader(yaml.SafeLoader):
        """SafeLoader that builds the plain mapping, sequence or scalar of any unknown tag."""

    def plain(loader: Any, suffix: str, node: Any) -> Iterator[Any]:
        if isinstance(node, yaml.MappingNode):
            data: dict = {}
            yield data
            data.update(loader.construct_mapping(node))
        elif isinstance(node, yaml.SequenceNode):
            items: list = []
            yield items
            items.extend(loader.construct_sequence(node))
        else:
            yield loader.construct_scalar(node)

    TolerantLoader.add_multi_constructor("", plain)
    docs = list(yaml.load_all(_read_text(path, encoding), Loader=TolerantLoader))  # noqa: S506
    if not docs:
        return None
    return docs[0] if len(docs) == 1 else docs


def _etree_to_dict(el: Any) -> Any:
    tag = el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else str(el.tag)
    node: dict[str, Any] = {f"@{k.rsplit('}', 1)[-1]}": v for k, v in el.attrib.items()}
    for child in el:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        key, value = next(iter(_etree_to_dict(child).items()))
        if key in node:
            node[key] = node[key] if isinstance(node[key], list) else [node[key]]
            node[key].append(value)
        else:
            node[key] = value
    text = (el.text or "").strip()
    if text:
        node["#text"] = text
    if list(node) == ["#text"]:
        return {tag: text}
    return {tag: node or None}


@_loader("xml")
def _load_xml(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    import pandas as pd
    from lxml import etree

    raw = _read_bytes(path)
    if encoding:
        opts["encoding"] = encoding
    try:
        df = pd.read_xml(io.BytesIO(raw), **opts)
        if len(df) and not _is_empty(df):
            return df
    except (ValueError, etree.XMLSyntaxError, SyntaxError):
        if "xpath" in opts:
            raise
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    return _etree_to_dict(etree.fromstring(raw, parser))


@_loader("html")
def _load_html(path: str, name: str, encoding: str | None = None, **opts: Any) -> Any:
    import pandas as pd

    text = _read_text(path, encoding)
    try:
        tables = pd.read_html(io.StringIO(text), **opts)
    except ValueError:  # no <table>: give the readable text
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(text, "lxml")
        for tag in soup(["script", "style"]):
            tag.decompose()
        return re.sub(r"\n\s*\n+", "\n\n", soup.get_text("\n")).strip()
    return tables[0] if len(tables) == 1 else tables


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


@_loader("sqlite")
def _load_sqlite(path: str, name: str, table: str | None = None, query: str | None = None) -> Any:
    import sqlite3

    uri = Path(path).resolve().as_uri() + "?mode=ro&immutable=1"
    con = sqlite3.connect(uri, uri=True)
    try:
        return _from_connection(con, name, table, query)
    finally:
        con.close()


@_loader("sql")
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
            con.executescript(_read_text(path, encoding).lstrip("\ufeff"))
        except sqlite3.Error as exc:
            raise LoadError(
                f"{name} is not a SQL script SQLite can run ({exc}); it may use another "
                "database's dialect, so read it as text with loader='text'."
            ) from exc
        return _from_connection(con, name, table, query)
    finally:
        con.close()


# --- scientific arrays -----------------------------------------------------------------------


def _h5_value(ds: Any) -> Any:
    import h5py

    if h5py.check_string_dtype(ds.dtype) is not None:
        return ds.asstr()[()]
    return ds[()]


@_loader("hdf5")
def _load_hdf5(path: str, name: str, key: str | None = None, **opts: Any) -> Any:
    import h5py
    import pandas as pd

    try:
        return pd.read_hdf(path, key=key, mode="r", **opts)
    except Exception:  # several tables, or not written by pandas/PyTables
        try:
            with pd.HDFStore(path, mode="r") as store:
                keys = store.keys()
                if key is None and len(keys) > 1:
                    return {k.lstrip("/"): store[k] for k in keys}
        except Exception:  # not a pandas store: read the datasets with h5py
            pass
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        root = f[key] if key is not None else f
        if isinstance(root, h5py.Dataset):
            return _h5_value(root)

        def visit(item_name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[item_name] = _h5_value(obj)

        root.visititems(visit)
    return out


@_loader("netcdf")
def _load_netcdf(path: str, name: str, **opts: Any) -> Any:
    import xarray as xr

    engine = "scipy" if _head(path, 3) == b"CDF" else "h5netcdf"
    with xr.open_dataset(path, engine=opts.pop("engine", engine), **opts) as ds:
        return ds.load()


def _mat73(obj: Any, f: Any) -> Any:
    """MATLAB v7.3 (HDF5) values in scipy's simplify_cells shape: dicts, lists, squeezed."""
    import h5py
    import numpy as np

    if isinstance(obj, h5py.Group):
        return {k: _mat73(v, f) for k, v in obj.items() if not k.startswith("#")}
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    data = obj[()]
    if data.dtype == h5py.ref_dtype:
        return [_mat73(f[r], f) for r in np.asarray(data).T.ravel()]
    data = np.asarray(data).T
    if cls == "char":
        return "".join(map(chr, data.ravel()))
    if cls == "logical":
        data = data.astype(bool)
    data = data.squeeze()
    return data[()] if data.ndim == 0 else data


@_loader("mat")
def _load_mat(path: str, name: str, **opts: Any) -> Any:
    if _head(path, 520)[512:] == b"\x89HDF\r\n\x1a\n":  # v7.3: HDF5 after the 512-byte header
        import h5py

        with h5py.File(path, "r") as f:
            return {k: _mat73(v, f) for k, v in f.items() if not k.startswith("#")}
    import scipy.io

    opts.setdefault("simplify_cells", True)
    data = scipy.io.loadmat(path, **opts)
    return {k: v for k, v in data.items() if not k.startswith("__")}


@_loader("npz")
def _load_npz(path: str, name: str, **opts: Any) -> Any:
    import numpy as np

    opts.setdefault("allow_pickle", True)
    with np.load(path, **opts) as npz:
        return {k: npz[k] for k in npz.files}


@_loader("pickle")
def _load_pickle(path: str, name: str) -> Any:
    import pickle

    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - runs only inside the sandbox
    except Exception as first:
        try:
            import pandas as pd

            with open(path, "rb") as fh:
                return pd.read_pickle(fh, compression=None)
        except Exception:
            try:
                return _lib("joblib").load(path)
            except Exception:
                raise first from None


# --- documents and media ---------------------------------------------------------------------


@_loader("image")
def _load_image(path: str, name: str) -> Any:
    from PIL import Image

    img = Image.open(path)
    img.load()
    return img


@_loader("pdf")
def _load_pdf(path: str, name: str, password: str | None = None) -> str:
    import pypdf

    reader = pypdf.PdfReader(path)
    if reader.is_encrypted:
        if not reader.decrypt(password or ""):
            hint = "the password given is wrong" if password else "it needs a password"
            raise LoadError(
                f"{name} is an encrypted PDF and {hint}; ask the user for the password and "
                "pass password='...', or for an unprotected copy."
            )
    return "\f".join((page.extract_text() or "").strip() for page in reader.pages)


@_loader("docx")
def _load_docx(path: str, name: str) -> str:
    import docx
    from docx.table import Table

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    parts: list[str] = []
    for block in docx.Document(path).iter_inner_content():
        if isinstance(block, Table):
            rows = ["| " + " | ".join(cell(c.text) for c in r.cells) + " |" for r in block.rows]
            parts.append("\n" + "\n".join(rows) + "\n")
        else:
            parts.append(block.text)
    return "\n".join(parts).strip("\n")


# --- archives --------------------------------------------------------------------------------

# Loader by extension for archive members (the host's registry is not available in here).
_EXT_TABLE = """csv:csv tsv:tsv,tab text:txt,log,md,dat json:json jsonl:jsonl,ndjson
excel:xlsx,xlsm,xlsb,xls ods:ods parquet:parquet,pq feather:feather,arrow orc:orc avro:avro
spss:sav,zsav spss_por:por stata:dta sas:sas7bdat xpt:xpt arff:arff dbf:dbf yaml:yaml,yml
geo:geojson,topojson,kml,kmz,gpx,gpkg,shp toml:toml xml:xml html:html,htm sql:sql mat:mat
sqlite:sqlite,sqlite3,db hdf5:h5,hdf5 netcdf:nc pickle:pkl,pickle joblib:joblib npy:npy npz:npz
image:png,jpg,jpeg,gif,tif,tiff,bmp,webp pdf:pdf docx:docx"""
_EXT_LOADERS = {
    ext: loader
    for item in _EXT_TABLE.split()
    for loader, exts in [item.split(":")]
    for ext in exts.split(",")
}


def _safe_member(name: str) -> str | None:
    """A relative path that cannot leave the extraction dir, or None to skip the member."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if (
        not parts
        or parts[0] == "__MACOSX"
        or parts[-1].startswith("._")
        or parts[-1] == ".DS_Store"
    ):
        return None
    return "/".join(parts)


def _load_members(members: list[tuple[str, int, Callable[[], Any]]], name: str) -> Any:
    """Extract (name, size, open) members into a temp dir and load each by its extension."""
    kept = [(n, s, o) for n, s, o in members if _safe_member(n)]
    if len(kept) > MAX_MEMBERS:
        raise LoadError(f"{name} holds {len(kept)} files; only {MAX_MEMBERS} are allowed.")
    if sum(s for _, s, _ in kept) > MAX_ARCHIVE_BYTES:
        raise LoadError(f"{name} unpacks to more than 512 MiB; ask for a smaller archive.")
    if any(_ext(n) == "shp" for n, _, _ in kept):
        raise _Geo()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for member, _size, opener in kept:
            target = Path(tmp, _safe_member(member) or "_")
            if not target.resolve().is_relative_to(Path(tmp).resolve()):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            loader = _EXT_LOADERS.get(_ext(member))
            try:
                out[member] = load(str(target), loader=loader, name=member) if loader else None
            except LoadError:
                out[member] = None
            if out[member] is None:
                out[member] = target.read_bytes()
    return next(iter(out.values())) if len(out) == 1 else out


class _Geo(Exception):
    """An archive that is a zipped shapefile: read it with the geo loader."""


@_loader("zip")
def _load_zip(path: str, name: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        members = [(i.filename, i.file_size, lambda i=i: zf.open(i)) for i in infos]
        try:
            return _load_members(members, name)
        except _Geo:
            return _load_geo(path, name)
        except RuntimeError as exc:
            if "encrypted" in str(exc) or "password" in str(exc):
                raise LoadError(
                    f"{name} is a password-protected ZIP; ask for an open copy."
                ) from exc
            raise


@_loader("tar")
def _load_tar(path: str, name: str) -> Any:
    with tarfile.open(path, "r:*") as tf:
        infos = [m for m in tf.getmembers() if m.isfile()]
        members = [(m.name, m.size, lambda m=m: tf.extractfile(m)) for m in infos]
        try:
            return _load_members(members, name)
        except _Geo as exc:
            raise LoadError(f"{name} holds a shapefile; upload it as a .zip instead.") from exc


@_loader("dbf")
def _load_dbf(path: str, name: str, **opts: Any) -> Any:
    import pyogrio

    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "table.dbf")
        os.symlink(os.path.abspath(path), link)
        return pyogrio.read_dataframe(link, read_geometry=False, **opts)


_LOADERS.update(
    {
        "text": lambda path, name, encoding=None: _read_text(path, encoding),
        "bytes": lambda path, name: Path(path).read_bytes(),
        "tsv": lambda path, name, sep="\t", **opts: _load_csv(path, name, sep=sep, **opts),
        "json": lambda path, name, encoding=None: json.loads(_read_text(path, encoding)),
        "toml": lambda path, name, encoding=None: _lib("tomllib").loads(_read_text(path, encoding)),
        "orc": lambda path, name, **opts: _lib("pandas").read_orc(path, **opts),
        "joblib": lambda path, name: _lib("joblib").load(path),
        "idl": lambda path, name, **opts: dict(_lib("scipy.io").readsav(path, python_dict=True)),
        "npy": lambda path, name, **opts: _lib("numpy").load(
            path, **{"allow_pickle": True, **opts}
        ),
        "spss": lambda path, name, **opts: _readstat("read_sav", path, **opts),
        "spss_por": lambda path, name, **opts: _readstat("read_por", path, **opts),
        "sas": lambda path, name, **opts: _readstat("read_sas7bdat", path, **opts),
        "xpt": lambda path, name, **opts: _readstat("read_xport", path, **opts),
    }
)


# --- preview ---------------------------------------------------------------------------------


def _frame_line(df: Any, width: int) -> str:
    cols = ", ".join(f"{c}: {t}" for c, t in df.dtypes.astype(str).items())
    if len(cols) > width:
        cols = cols[: max(width - 1, 0)].rsplit(", ", 1)[0] + ", …"
    return f"{type(df).__name__} {df.shape[0]} rows × {df.shape[1]} columns ({cols})"


def _short(obj: Any, max_chars: int) -> str:
    mod = type(obj).__module__
    if hasattr(obj, "dtypes") and hasattr(obj, "shape") and hasattr(obj, "columns"):
        return _frame_line(obj, max_chars)
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
