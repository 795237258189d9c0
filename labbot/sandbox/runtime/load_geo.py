"""The geo loader: GeoJSON, TopoJSON, shapefiles (zipped too), KML, KMZ, GPX, GeoPackage.

Part of the sandbox loaders (see ``loaders``); geopandas is imported only when a file is read.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import PurePosixPath
from typing import Any

from load_raw import extension

_GPX_ORDER = ("track_points", "route_points", "waypoints", "tracks", "routes")
_GEO_EXTS = ("shp", "kml", "gpx", "geojson", "topojson", "json", "gpkg", "gml")


def _geo_source(path: str, name: str, tmp: str) -> tuple[str, bool]:
    """A GDAL path for the file (a link named like the upload, sidecars beside it, /vsizip/ for
    a zipped shapefile) and whether the .shx index must be rebuilt."""
    base = re.sub(r"[^\w.-]", "_", PurePosixPath(name).name) or "data"
    link = os.path.join(tmp, base)
    os.symlink(os.path.abspath(path), link)
    if extension(base) == "shp":
        stem = os.path.splitext(path)[0] if extension(path) == "shp" else path
        for side in ("shx", "dbf", "prj", "cpg"):
            if os.path.exists(f"{stem}.{side}"):
                os.symlink(os.path.abspath(f"{stem}.{side}"), f"{link[:-4]}.{side}")
        return link, not os.path.exists(f"{link[:-4]}.shx")
    if extension(base) == "kmz" or not zipfile.is_zipfile(path):
        return link, False
    with zipfile.ZipFile(path) as zf:
        inner = [n for n in zf.namelist() if extension(n) in _GEO_EXTS and "__MACOSX" not in n]
    main = [n for n in inner if extension(n) in ("shp", "kml")] or inner
    return (f"/vsizip/{link}/{main[0]}" if len(main) == 1 else f"/vsizip/{link}"), False


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
