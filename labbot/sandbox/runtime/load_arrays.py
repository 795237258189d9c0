"""Loaders for scientific arrays (HDF5, netCDF, MATLAB, NumPy) and pickled objects.

Part of the sandbox loaders (see ``loaders``); heavy libraries are imported inside each loader.
"""

from __future__ import annotations

from typing import Any

from load_raw import lazy_import, read_head


def _h5_value(ds: Any) -> Any:
    import h5py

    if h5py.check_string_dtype(ds.dtype) is not None:
        return ds.asstr()[()]
    return ds[()]


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


def _load_netcdf(path: str, name: str, **opts: Any) -> Any:
    import xarray as xr

    engine = "scipy" if read_head(path, 3) == b"CDF" else "h5netcdf"
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


def _load_mat(path: str, name: str, **opts: Any) -> Any:
    if read_head(path, 520)[512:] == b"\x89HDF\r\n\x1a\n":  # v7.3: HDF5 after the 512-byte header
        import h5py

        with h5py.File(path, "r") as f:
            return {k: _mat73(v, f) for k, v in f.items() if not k.startswith("#")}
    import scipy.io

    opts.setdefault("simplify_cells", True)
    data = scipy.io.loadmat(path, **opts)
    return {k: v for k, v in data.items() if not k.startswith("__")}


def _load_npz(path: str, name: str, **opts: Any) -> Any:
    import numpy as np

    opts.setdefault("allow_pickle", True)
    with np.load(path, **opts) as npz:
        return {k: npz[k] for k in npz.files}


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
                return lazy_import("joblib").load(path)
            except Exception:
                raise first from None
