"""The zip and tar loaders: each member is extracted and loaded by its extension.

Part of the sandbox loaders (see ``loaders``). Members are loaded through ``loaders.load``,
which the dispatch table binds as each loader's first argument (``loaders`` imports this
module, so it cannot import ``loaders``).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load_geo import _load_geo
from load_raw import LoadError, extension

MAX_ARCHIVE_BYTES = 512 << 20  # total declared uncompressed size of an archive's members
MAX_MEMBERS = 1000


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


def _load_members(
    load: Callable[..., Any], members: list[tuple[str, int, Callable[[], Any]]], name: str
) -> Any:
    """Extract (name, size, open) members into a temp dir and load each by its extension."""
    kept = [(n, s, o) for n, s, o in members if _safe_member(n)]
    if len(kept) > MAX_MEMBERS:
        raise LoadError(f"{name} holds {len(kept)} files; only {MAX_MEMBERS} are allowed.")
    if sum(s for _, s, _ in kept) > MAX_ARCHIVE_BYTES:
        raise LoadError(f"{name} unpacks to more than 512 MiB; ask for a smaller archive.")
    if any(extension(n) == "shp" for n, _, _ in kept):
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
            loader = _EXT_LOADERS.get(extension(member))
            try:
                out[member] = load(str(target), loader=loader, name=member) if loader else None
            except LoadError:
                out[member] = None
            if out[member] is None:
                out[member] = target.read_bytes()
    return next(iter(out.values())) if len(out) == 1 else out


class _Geo(Exception):
    """An archive that is a zipped shapefile: read it with the geo loader."""


def _load_zip(load: Callable[..., Any], path: str, name: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        members = [(i.filename, i.file_size, lambda i=i: zf.open(i)) for i in infos]
        try:
            return _load_members(load, members, name)
        except _Geo:
            return _load_geo(path, name)
        except RuntimeError as exc:
            if "encrypted" in str(exc) or "password" in str(exc):
                raise LoadError(
                    f"{name} is a password-protected ZIP; ask for an open copy."
                ) from exc
            raise


def _load_tar(load: Callable[..., Any], path: str, name: str) -> Any:
    with tarfile.open(path, "r:*") as tf:
        infos = [m for m in tf.getmembers() if m.isfile()]
        members = [(m.name, m.size, lambda m=m: tf.extractfile(m)) for m in infos]
        try:
            return _load_members(load, members, name)
        except _Geo as exc:
            raise LoadError(f"{name} holds a shapefile; upload it as a .zip instead.") from exc
