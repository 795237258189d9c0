"""The first cell of an exported notebook: ``FILES`` and ``load_file`` for use outside labbot.

Everything below the ``CELL`` line is copied into the notebook as it is, with ``FILES`` and
``NAMES`` filled in (so this module is the cell's one source, linted and tested like the rest).
It is not labbot's loader (which runs inside the sandbox, detects encodings, sheets and layers
and knows 80+ kinds): it loads the common kinds with the standard library and pandas, and gives
anything else as bytes. It imports nothing of labbot.
"""

# CELL -- the notebook's first cell starts on the next line
# Files for use outside labbot: put them in a folder "files" beside this notebook
# (`labbot export --bundle` writes a zip with both). load_file("<id or name>") loads one.
import json
import sqlite3
from pathlib import Path
from typing import Any

FILES: dict[str, str] = {}  # file id -> its path beside the notebook
NAMES: dict[str, str] = {}  # file id -> its name in labbot

_TEXT = {".txt", ".md", ".log", ".py", ".r", ".sql", ".ini", ".cfg", ".rst", ".tex"}
_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}

try:  # the display settings labbot's sandbox uses, so values print the same
    import pandas as pd

    pd.set_option("display.max_rows", 30, "display.max_columns", 30, "display.width", 160)
except ImportError:
    pass
try:  # numpy scalars as labbot shows them: 3, not np.int64(3)
    import numpy as np
    from IPython import get_ipython

    if (shell := get_ipython()) is not None:
        plain = shell.display_formatter.formatters["text/plain"]
        for scalar in set(np.sctypeDict.values()):  # each: its own __repr__ comes first
            plain.for_type(scalar, lambda value, p, cycle: p.text(repr(value.item())))
except ImportError:
    pass


def _path(key: str) -> Path:
    """A file by id, then by name (the newest of that name), then as a path here."""
    if key in FILES:
        return Path(FILES[key])
    for match in (lambda name: name == key, lambda name: name.lower() == str(key).lower()):
        named = [FILES[i] for i, name in NAMES.items() if match(name)]
        if named:
            return Path(named[0])  # newest first
    if Path(key).is_file():  # a file an earlier cell wrote
        return Path(key)
    known = ", ".join(f"{i} ({name})" for i, name in NAMES.items()) or "none"
    raise FileNotFoundError(f"No file {key!r}. The files: {known}.")


def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _table(path: Path, **options: Any) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError:
        return pd.read_csv(path, encoding="cp1252", **options)


def _sheets(path: Path, **options: Any) -> Any:
    import pandas as pd

    sheet = options.pop("sheet", options.pop("sheet_name", None))
    if sheet is not None:
        return pd.read_excel(path, sheet_name=sheet, **options)
    sheets = {k: v for k, v in pd.read_excel(path, sheet_name=None, **options).items() if len(v)}
    return next(iter(sheets.values())) if len(sheets) == 1 else sheets


def _database(path: Path, **options: Any) -> Any:
    import pandas as pd

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        if "query" in options:
            return pd.read_sql_query(options["query"], db)
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        tables = {t: pd.read_sql_query(f'SELECT * FROM "{t}"', db) for (t,) in found}
    if "table" in options:
        return tables[options["table"]]
    return next(iter(tables.values())) if len(tables) == 1 else tables


def load_file(file_id: str, **options: Any) -> Any:
    """Load a file by id or name: tables as DataFrames, JSON and TOML as Python objects,
    text as str, images as PIL images; any other kind as bytes."""
    import pandas as pd

    path = _path(file_id)
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv", ".tab"}:
        sep = options.pop("sep", "\t" if suffix != ".csv" else ",")
        return _table(path, sep=sep, **options)
    if suffix in {".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"}:
        return _sheets(path, **options)
    if suffix in {".jsonl", ".ndjson"}:
        return pd.read_json(path, lines=True, **options)
    readers = {
        ".parquet": pd.read_parquet,
        ".feather": pd.read_feather,
        ".arrow": pd.read_feather,
        ".sav": pd.read_spss,
        ".zsav": pd.read_spss,
        ".dta": pd.read_stata,
        ".sas7bdat": pd.read_sas,
        ".xpt": pd.read_sas,
        ".xml": pd.read_xml,
        ".pkl": pd.read_pickle,
        ".pickle": pd.read_pickle,
    }
    if suffix in readers:
        return readers[suffix](path, **options)
    if suffix in {".html", ".htm"}:
        found = pd.read_html(path, **options)
        return found[0] if len(found) == 1 else found
    if suffix in {".sqlite", ".sqlite3", ".db"}:
        return _database(path, **options)
    if suffix == ".json":
        return json.loads(_text(path))
    if suffix == ".toml":
        import tomllib

        return tomllib.loads(_text(path))
    if suffix in {".yaml", ".yml"}:
        import yaml

        return yaml.safe_load(_text(path))
    if suffix in {".npy", ".npz"}:
        import numpy as np

        loaded = np.load(path, **options)
        return dict(loaded) if suffix == ".npz" else loaded
    if suffix in _IMAGES:
        from PIL import Image

        return Image.open(path)
    if suffix in _TEXT:
        return _text(path)
    return path.read_bytes()
