"""File-type registry: which kind an upload is, decided from its name and its leading bytes.

A kind fixes the label and emoji shown to the user and the loader the sandbox uses later.
`detect_kind` trusts strong content signatures over the extension, the extension over weak
guesses, and sniffs text only when neither settles it. It is pure and never raises.
The content checks themselves (signatures, container peeks, text sniffing) are in
`labbot.files.sniff`, which answers with kind names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labbot.files import sniff

HEAD_BYTES: int = 65536


@dataclass(frozen=True, slots=True)
class FileKind:
    """One file type: stable id, how it is shown, and which sandbox loader reads it."""

    name: str
    label: str
    emoji: str
    loader: str
    extensions: tuple[str, ...]
    is_table: bool


_COMPRESSIONS = ("gz", "gzip", "bz2", "xz", "zst", "lzma")
_DOTTED_COMPRESSIONS = tuple("." + c for c in _COMPRESSIONS)


def _z(*bases: str) -> tuple[str, ...]:
    # pandas and joblib infer compression from the suffix, so "x.csv.gz" stays a csv for them.
    return tuple(f"{b}.{c}" for b in bases for c in _COMPRESSIONS)


def _k(
    name: str, label: str, emoji: str, loader: str, exts: tuple[str, ...], table: bool = False
) -> FileKind:
    return FileKind(name, label, emoji, loader, exts, table)


TEXT = _k("text", "Text file", "📄", "text", ("txt", "text", "dat", "asc", "rst"))
BINARY = _k("binary", "Binary file", "📦", "bytes", ("bin",))

KINDS: tuple[FileKind, ...] = (
    # Tables: load_file gives a DataFrame.
    _k("csv", "CSV table", "📊", "csv", ("csv", *_z("csv")), True),
    _k("tsv", "TSV table", "📊", "tsv", ("tsv", "tab", *_z("tsv", "tab")), True),
    _k("excel", "Excel workbook", "📗", "excel", ("xlsx", "xltx"), True),
    _k("excel_macro", "Excel macro-enabled workbook", "📗", "excel", ("xlsm", "xltm"), True),
    _k("excel_binary", "Excel binary workbook", "📗", "excel", ("xlsb",), True),
    _k("excel_legacy", "Excel 97-2003 workbook", "📗", "excel", ("xls", "xlt"), True),
    _k("ods", "OpenDocument spreadsheet", "📗", "ods", ("ods",), True),
    _k("parquet", "Parquet table", "🧱", "parquet", ("parquet", "pq"), True),
    _k("feather", "Feather/Arrow table", "🪶", "feather", ("feather", "arrow", "ipc"), True),
    _k("orc", "ORC table", "🧱", "orc", ("orc",), True),
    _k("avro", "Avro records", "🧱", "avro", ("avro",), True),
    _k("spss", "SPSS dataset", "📈", "spss", ("sav", "zsav"), True),
    _k("spss_portable", "SPSS portable file", "📈", "spss_por", ("por",), True),
    _k("stata", "Stata dataset", "📈", "stata", ("dta",), True),
    _k("sas", "SAS dataset", "📈", "sas", ("sas7bdat",), True),
    _k("xpt", "SAS transport file", "📈", "xpt", ("xpt",), True),
    _k("arff", "ARFF dataset", "📊", "arff", ("arff",), True),
    _k("dbf", "dBASE table", "📊", "dbf", ("dbf",), True),
    _k("jsonl", "JSON Lines", "🧾", "jsonl", ("jsonl", "ndjson", *_z("jsonl", "ndjson")), True),
    # Geo: the "geo" loader gives a GeoDataFrame, which is a DataFrame.
    _k("geojson", "GeoJSON", "🗺️", "geo", ("geojson",), True),
    _k("topojson", "TopoJSON", "🗺️", "geo", ("topojson",), True),
    _k("shapefile", "Shapefile", "🗺️", "geo", ("shp", "shp.zip", "shz"), True),
    _k("kml", "KML map", "🗺️", "geo", ("kml",), True),
    _k("kmz", "KMZ map", "🗺️", "geo", ("kmz",), True),
    _k("gpx", "GPX track", "🧭", "geo", ("gpx",), True),
    _k("geopackage", "GeoPackage", "🗺️", "geo", ("gpkg",), True),
    _k("geo_sidecar", "Shapefile sidecar", "🧩", "bytes", ("shx", "prj", "cpg", "qix", "sbn")),
    # Structured data that is not always a single table.
    _k("json", "JSON document", "🧾", "json", ("json", *_z("json"))),
    _k("notebook", "Jupyter notebook", "📓", "json", ("ipynb",)),
    _k("yaml", "YAML document", "📝", "yaml", ("yaml", "yml")),
    _k("toml", "TOML document", "📝", "toml", ("toml",)),
    _k("xml", "XML document", "🧾", "xml", ("xml", "rss", "atom", "xsd", "xsl")),
    _k("html", "HTML page", "🌐", "html", ("html", "htm", "xhtml")),
    _k("sqlite", "SQLite database", "🗄️", "sqlite", ("db", "sqlite", "sqlite3", "db3")),
    _k("sql", "SQL script", "🗄️", "sql", ("sql",)),
    _k("hdf5", "HDF5 file", "🗃️", "hdf5", ("h5", "hdf5", "hdf", "he5")),
    _k("netcdf", "netCDF file", "🌡️", "netcdf", ("nc", "nc4", "cdf")),
    _k("pickle", "Python pickle", "🥒", "pickle", ("pkl", "pickle")),
    # Compressed pickles go to joblib: joblib.load detects the compression from the bytes.
    _k("joblib", "Joblib dump", "🥒", "joblib", ("joblib", *_z("pkl", "pickle", "joblib"))),
    _k("npy", "NumPy array", "🔢", "npy", ("npy",)),
    _k("npz", "NumPy archive", "🔢", "npz", ("npz",)),
    _k("mat", "MATLAB data", "🔢", "mat", ("mat",)),
    _k("idl", "IDL save file", "🔭", "idl", ("idlsave",)),
    # Documents and media.
    _k(
        "image",
        "Image",
        "🖼️",
        "image",
        (
            "png",
            "jpg",
            "jpeg",
            "jpe",
            "jfif",
            "gif",
            "tif",
            "tiff",
            "bmp",
            "webp",
            "ico",
            "heic",
            "heif",
            "avif",
            "jp2",
            "j2k",
        ),
    ),
    _k("svg", "SVG image", "🖼️", "text", ("svg",)),
    _k("pdf", "PDF document", "📄", "pdf", ("pdf",)),
    _k("docx", "Word document", "📝", "docx", ("docx", "dotx")),
    _k("doc", "Word 97-2003 document", "📝", "bytes", ("doc",)),
    _k("odt", "OpenDocument text", "📝", "bytes", ("odt",)),
    _k("rtf", "Rich text document", "📝", "text", ("rtf",)),
    _k("presentation", "Presentation", "📽️", "bytes", ("pptx", "ppt", "odp")),
    _k("markdown", "Markdown", "📝", "text", ("md", "markdown")),
    _k("log", "Log file", "📜", "text", ("log",)),
    _k(
        "code",
        "Source code",
        "💻",
        "text",
        (
            "py",
            "r",
            "m",
            "jl",
            "js",
            "ts",
            "sh",
            "c",
            "h",
            "cpp",
            "hpp",
            "java",
            "go",
            "rs",
            "rb",
            "pl",
            "php",
            "scala",
            "kt",
            "swift",
            "lua",
            "css",
            "sas",
            "do",
            "ps1",
            "bat",
        ),
    ),
    _k("config", "Config file", "⚙️", "text", ("ini", "cfg", "conf", "env", "properties")),
    _k("zip", "ZIP archive", "🗜️", "zip", ("zip",)),
    _k("tar", "Tar archive", "📦", "tar", ("tar", "tgz", "tbz2", "txz", *_z("tar"))),
    _k("compressed", "Compressed file", "🗜️", "bytes", _COMPRESSIONS),
    _k("archive", "Archive", "📦", "bytes", ("7z", "rar")),
    _k("audio", "Audio", "🎵", "bytes", ("mp3", "wav", "flac", "ogg", "m4a", "aac", "opus")),
    _k("video", "Video", "🎬", "bytes", ("mp4", "mov", "avi", "mkv", "webm", "m4v")),
    TEXT,
    BINARY,
)

_BY_NAME: dict[str, FileKind] = {k.name: k for k in KINDS}
_BY_EXT: dict[str, FileKind] = {}
for _kind in KINDS:
    for _ext in _kind.extensions:
        _BY_EXT.setdefault(_ext, _kind)

# Kinds whose files are never plain text: text content under such a name is an export
# mislabelled by its producer (e.g. an HTML or CSV "report.xls"), so it gets sniffed.
_BINARY_NAMES = frozenset(
    {
        "excel",
        "excel_macro",
        "excel_binary",
        "excel_legacy",
        "ods",
        "parquet",
        "feather",
        "orc",
        "avro",
        "spss",
        "stata",
        "sas",
        "xpt",
        "dbf",
        "shapefile",
        "kmz",
        "geopackage",
        "sqlite",
        "hdf5",
        "netcdf",
        "npy",
        "npz",
        "mat",
        "idl",
        "image",
        "pdf",
        "docx",
        "doc",
        "odt",
        "presentation",
        "zip",
        "tar",
        "compressed",
        "archive",
        "audio",
        "video",
        "binary",
    }
)
# Kinds read as text: bytes that are not text contradict them.
_TEXT_NAMES = frozenset(
    k.name
    for k in KINDS
    if k.loader
    in {
        "text",
        "csv",
        "tsv",
        "json",
        "jsonl",
        "yaml",
        "toml",
        "xml",
        "html",
        "sql",
        "arff",
        "geo",
    }
    and k.name not in _BINARY_NAMES
)
# Text kinds a table may hide in: an unusual encoding never makes them binary by itself.
_TABLE_TEXT_NAMES = frozenset({"csv", "tsv", "text"})
# A generic signature that a more specific extension may refine (content does not contradict).
_ZIP_BASED = frozenset(
    {
        "excel",
        "excel_macro",
        "excel_binary",
        "ods",
        "odt",
        "docx",
        "presentation",
        "kmz",
        "shapefile",
        "npz",
    }
)
_COMPATIBLE: dict[str, frozenset[str]] = {
    "zip": _ZIP_BASED,
    "excel": frozenset({"excel_macro", "excel_binary"}),
    "excel_legacy": frozenset({"excel", "excel_macro", "excel_binary", "doc", "presentation"}),
    "pickle": frozenset({"joblib"}),
    "sqlite": frozenset({"geopackage"}),
    "hdf5": frozenset({"mat", "netcdf"}),
    "compressed": frozenset({"tar"}),
    "audio": frozenset({"video"}),
    "video": frozenset({"audio"}),
}
# When the extension says json/xml, the text may still name a more precise kind.
_REFINE = {"json": {"jsonl", "geojson", "topojson"}, "xml": {"kml", "gpx", "svg", "html"}}


def kind_by_name(name: str) -> FileKind:
    """Return the kind with this stable name; KeyError if unknown."""
    return _BY_NAME[name]


def kind_for_filename(filename: str) -> FileKind | None:
    """Return the kind its extension names (case-insensitive, longest suffix first), or None."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().lower()
    parts = base.split(".")[1:]
    for i in range(max(0, len(parts) - 3), len(parts)):
        kind = _BY_EXT.get(".".join(parts[i:]))
        if kind is not None:
            return kind
    return None


def supported_extensions() -> list[str]:
    """Return every known extension (without dot), sorted."""
    return sorted(_BY_EXT)


def detect_kind(filename: str, head: bytes, path: Path | None = None) -> FileKind:
    """Return the kind of a file from its name, its first HEAD_BYTES bytes and optional path."""
    try:
        # Only a bounded prefix is ever sniffed (each sniffer is linear in it).
        return _detect(filename, bytes(head[:HEAD_BYTES]), path)
    except Exception:  # a classifier must never break an upload; the checks are best-effort
        return (kind_for_filename(filename) if isinstance(filename, str) else None) or BINARY


def _detect(filename: str, head: bytes, path: Path | None) -> FileKind:
    by_ext = kind_for_filename(filename)
    text = sniff.decode_text(head)
    sig = _named(sniff.signature_kind(head, path, is_text=text is not None))
    if sig is None and text is None:
        sig = _named(sniff.puremagic_kind(head, _name_for_filename))
    if sig is not None:
        if by_ext is None or sig.name == by_ext.name:
            return sig
        if by_ext.name in _COMPATIBLE.get(sig.name, ()):
            return by_ext
        # "x.csv.gz" is compressed on purpose: the extension says what is inside.
        if sig.name == "compressed" and filename.lower().endswith(_DOTTED_COMPRESSIONS):
            return by_ext
        return sig
    if by_ext is None:
        if text is None:
            return BINARY
        return _sniff_text(text, truncated=len(head) >= HEAD_BYTES)
    if text is not None and by_ext.name in _BINARY_NAMES and head.strip():
        return _sniff_text(text, truncated=len(head) >= HEAD_BYTES)
    if text is None and by_ext.name in _TEXT_NAMES:
        # A table's extension yields only to NUL bytes (not UTF-16) or a signature: text in
        # a legacy code page (or with stray controls) stays a table for load_file to decode.
        if by_ext.name in _TABLE_TEXT_NAMES and not sniff.has_nul(head):
            return by_ext
        return BINARY
    if text is not None and by_ext.name in _REFINE:
        sniffed = _sniff_text(text, truncated=len(head) >= HEAD_BYTES)
        if sniffed.name in _REFINE[by_ext.name]:
            return sniffed
    return by_ext


def _named(name: str | None) -> FileKind | None:
    """The kind a sniffer named, or None when it named none."""
    return None if name is None else _BY_NAME[name]


def _name_for_filename(filename: str) -> str | None:
    """The name of the kind the filename's extension gives, or None."""
    kind = kind_for_filename(filename)
    return None if kind is None else kind.name


def _sniff_text(text: str, *, truncated: bool) -> FileKind:
    """The kind text content looks like (TEXT when nothing more specific)."""
    return _BY_NAME[sniff.sniff_text(text, truncated=truncated)]
