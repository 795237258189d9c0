"""File-type registry: which kind an upload is, decided from its name and its leading bytes.

A kind fixes the label and emoji shown to the user and the loader the sandbox uses later.
`detect_kind` trusts strong content signatures over the extension, the extension over weak
guesses, and sniffs text only when neither settles it. It is pure and never raises.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import json
import lzma
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import puremagic

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
# puremagic knows many media formats but also makes weak guesses (text as "GNU Info",
# zips as docx); only these kinds are taken from it, and only for non-text content.
_PUREMAGIC_KINDS = frozenset({"image", "audio", "video", "archive", "pdf"})

_SAS7BDAT = bytes.fromhex("000000000000000000000000c2ea8160b31411cfbd92080009c7318c181f1011")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"SQLite format 3\x00", "sqlite"),
    (b"PAR1", "parquet"),
    (b"ARROW1", "feather"),
    (b"Obj\x01", "avro"),
    (b"CDF\x01", "netcdf"),
    (b"CDF\x02", "netcdf"),
    (b"\x93NUMPY", "npy"),
    (b"$FL2", "spss"),
    (b"$FL3", "spss"),
    (b"<stata_dta>", "stata"),
    (_SAS7BDAT, "sas"),
    (b"HEADER RECORD*******LIB", "xpt"),
    (b"SR\x00\x04", "idl"),
    (b"%PDF-", "pdf"),
)


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
        return _detect(filename, bytes(head), path)
    except Exception:  # a classifier must never break an upload; the checks are best-effort
        return (kind_for_filename(filename) if isinstance(filename, str) else None) or BINARY


def _detect(filename: str, head: bytes, path: Path | None) -> FileKind:
    by_ext = kind_for_filename(filename)
    text = _decode(head)
    sig = _signature_kind(head, path, text is not None)
    if sig is None and text is None:
        sig = _puremagic_kind(head)
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
        return _sniff_text(text, len(head) >= HEAD_BYTES)
    if text is not None and by_ext.name in _BINARY_NAMES and head.strip():
        return _sniff_text(text, len(head) >= HEAD_BYTES)
    if text is None and by_ext.name in _TEXT_NAMES:
        return BINARY
    if text is not None and by_ext.name in _REFINE:
        sniffed = _sniff_text(text, len(head) >= HEAD_BYTES)
        if sniffed.name in _REFINE[by_ext.name]:
            return sniffed
    return by_ext


# --- binary signatures -------------------------------------------------------------------


def _signature_kind(head: bytes, path: Path | None, is_text: bool) -> FileKind | None:
    """Kinds proven by magic bytes that we check ourselves (precise, ordered)."""
    k = _BY_NAME
    for magic, name in _MAGIC:
        # PAR1 and ARROW1 are printable ASCII: a text file may start with them too.
        if head.startswith(magic) and not (is_text and name in ("parquet", "feather")):
            return k[name]
    # MATLAB v7.3 is HDF5 behind a 512-byte MATLAB preamble, so check MATLAB first.
    if head.startswith(b"MATLAB") and b"MAT-file" in head[:128]:
        return k["mat"]
    if any(head[off : off + 8] == b"\x89HDF\r\n\x1a\n" for off in (0, 512, 1024, 2048)):
        return k["hdf5"]
    if b"SPSS PORT FILE" in head[:600]:  # after a 200-byte splash in several encodings
        return k["spss_portable"]
    # Binary .dta 102-115: version byte, byte order (1=HILO, 2=LOHI), filetype 1, zero pad.
    if len(head) > 4 and 102 <= head[0] <= 115 and head[1] in (1, 2) and head[2:4] == b"\1\0":
        return k["stata"]
    if len(head) > 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        # joblib dumps are pickles that plain pickle.load cannot read (arrays follow raw).
        return k["joblib" if b"NumpyArrayWrapper" in head else "pickle"]
    if head.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")) or (
        head[:3] == b"BZh" and head[4:10] == b"1AY&SY"
    ):
        return _compressed_kind(head)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(head, path)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return _ole_kind(head)
    if head[257:262] == b"ustar":
        return k["tar"]
    # puremagic scores the 2-byte BMP magic too low to trust; the DIB header size pins it.
    if head[:2] == b"BM" and head[6:10] == bytes(4) and head[14:15] in (b"\x0c", b"(", b"l", b"|"):
        return k["image"]
    if head.startswith(b"\x00\x00\x27\x0a") and len(head) >= 104:
        # .shp and .shx share the header; then .shp has record number 1, .shx offset 50.
        return k["geo_sidecar" if head[100:104] == b"\x00\x00\x00\x32" else "shapefile"]
    return k["dbf"] if _is_dbf(head) else None


def _is_dbf(head: bytes) -> bool:
    # dBASE has no magic: check version, date, header size and the 0x0D after the fields.
    if len(head) < 65 or head[0] not in b"\x02\x03\x04\x05\x30\x31\x32\x43\x63\x83\x8b\xcb\xf5\xfb":
        return False
    if not (1 <= head[2] <= 12 and 1 <= head[3] <= 31):
        return False
    header_len, record_len = struct.unpack_from("<HH", head, 8)
    if header_len < 65 or record_len < 1:
        return False
    for pos in range(32, min(header_len, len(head)), 32):
        if head[pos] == 0x0D:
            return pos > 32
        if pos + 11 >= len(head) or head[pos + 11] not in b"CNLDFMBGIYT@O+0VPWX":
            return False
    return False


def _compressed_kind(head: bytes) -> FileKind:
    """Peek inside gzip/xz/bz2 so "upload" holding a compressed pickle or tar is named."""
    inner = b""
    try:
        if head.startswith(b"\x1f\x8b"):
            inner = zlib.decompressobj(31).decompress(head, 4096)
        elif head.startswith(b"\xfd7zXZ"):
            inner = lzma.LZMADecompressor().decompress(head, max_length=4096)
        elif head.startswith(b"BZh"):
            inner = bz2.BZ2Decompressor().decompress(head, max_length=4096)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
        pass
    if len(inner) > 2 and inner[0] == 0x80 and 2 <= inner[1] <= 5:
        return _BY_NAME["joblib"]
    if inner[257:262] == b"ustar":
        return _BY_NAME["tar"]
    return _BY_NAME["compressed"]


def _ole_kind(head: bytes) -> FileKind:
    """Name an OLE2 compound file by its stream names (UTF-16 in the directory sectors)."""
    # EncryptedPackage is a password-protected OOXML file: in a data bot, usually a workbook.
    streams = {
        "EncryptedPackage": "excel",
        "WordDocument": "doc",
        "PowerPoint Document": "presentation",
    }
    for stream, name in streams.items():
        if stream.encode("utf-16-le") in head:
            return _BY_NAME[name]
    return _BY_NAME["excel_legacy"]


_ZIP_PEEK = ("mimetype", "[Content_Types].xml")


def _zip_members(head: bytes, path: Path | None) -> tuple[list[str], dict[str, bytes]]:
    """Member names and the small marker members, from the archive or from `head` alone."""
    if path is not None:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()[:10000]
                peek = {
                    i.filename: zf.read(i)
                    for i in infos
                    if i.filename in _ZIP_PEEK and i.file_size < 1 << 20
                }
                return [i.filename for i in infos], peek
        except Exception:  # zipfile raises many types on damaged input; fall back to head
            pass
    names: list[str] = []
    peek: dict[str, bytes] = {}
    for m in re.finditer(rb"PK\x01\x02", head):  # central directory, when it fits in head
        off = m.start()
        if off + 46 <= len(head):
            nlen = struct.unpack_from("<H", head, off + 28)[0]
            names.append(head[off + 46 : off + 46 + nlen].decode("utf-8", "replace"))
    for m in re.finditer(rb"PK\x03\x04", head):  # local headers, each followed by its data
        off = m.start()
        if off + 30 > len(head):
            break
        method, _, _, _, csize, _, nlen, elen = struct.unpack_from("<HHHIIIHH", head, off + 8)
        name = head[off + 30 : off + 30 + nlen].decode("utf-8", "replace")
        names.append(name)
        if name in _ZIP_PEEK:
            data = head[off + 30 + nlen + elen :]
            try:
                peek[name] = (
                    zlib.decompressobj(-15).decompress(data, 1 << 20)
                    if method == 8
                    else data[: csize or 4096]
                )
            except zlib.error:
                pass
    return names, peek


def _zip_kind(head: bytes, path: Path | None) -> FileKind:
    """Refine a ZIP container: OOXML, ODF, KMZ, zipped shapefile, NPZ, or plain zip."""
    names, peek = _zip_members(head, path)
    lower = [n.lower() for n in names]
    mimetype = peek.get("mimetype", b"").strip()
    types = peek.get("[Content_Types].xml", b"")
    files = [n for n in lower if not n.endswith("/")]
    odf = mimetype.removeprefix(b"application/vnd.oasis.opendocument.")
    rules = (  # first hit wins; xlsb also says "macroEnabled", so it goes first
        (odf == b"spreadsheet", "ods"),
        (odf == b"text", "odt"),
        (odf == b"presentation", "presentation"),
        (b"sheet.binary" in types or "xl/workbook.bin" in lower, "excel_binary"),
        (b"ms-excel.sheet.macroEnabled" in types or "xl/vbaproject.bin" in lower, "excel_macro"),
        (b"spreadsheetml" in types or any(n.startswith("xl/") for n in lower), "excel"),
        (b"wordprocessingml" in types or any(n.startswith("word/") for n in lower), "docx"),
        (b"presentationml" in types or any(n.startswith("ppt/") for n in lower), "presentation"),
        (any(n.endswith(".kml") for n in lower), "kmz"),
        (any(n.endswith(".shp") for n in lower), "shapefile"),
        (bool(files) and all(n.endswith(".npy") for n in files), "npz"),
    )
    return _BY_NAME[next((name for hit, name in rules if hit), "zip")]


def _puremagic_kind(head: bytes) -> FileKind | None:
    """Media and archive formats from puremagic's signature table (binary content only)."""
    try:
        matches = puremagic.magic_string(head) if head else []
    except Exception:  # puremagic raises PureError (and others) when nothing matches
        return None
    for match in matches:
        kind = kind_for_filename("x." + match.extension.lstrip("."))
        if kind is not None and kind.name in _PUREMAGIC_KINDS and match.confidence >= 0.3:
            return kind
    return None


# --- text sniffing -----------------------------------------------------------------------


def _decode(head: bytes) -> str | None:
    """Decode `head` as text (UTF-8/UTF-16 with BOM, else latin-1), or None if it is binary."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    sample = head[:8192]
    if b"\x00" in sample:
        return None
    controls = sum(1 for b in sample if b < 32 and b not in b"\t\n\r\f\b\x1b")
    if controls * 100 > len(sample):
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return head[: exc.start].decode("utf-8")  # head cut a multi-byte character
    # latin-1 decodes anything; accept it only when most bytes are ASCII (cp1252 exports).
    if sum(1 for b in sample if b >= 0x80) * 10 > len(sample) * 3:
        return None
    return head.decode("latin-1")


_SQL = re.compile(
    r"^\s*(?:CREATE\s+(?:TEMP\w*\s+|UNIQUE\s+)?(?:TABLE|VIEW|INDEX)|INSERT\s+INTO|ALTER\s+TABLE)\b",
    re.IGNORECASE | re.MULTILINE,
)
_MARKUP = re.compile(
    r"(?:\s|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*<([A-Za-z_][\w.:-]*)", re.S | re.I
)
_GEO_TAGS = {"kml": "kml", "gpx": "gpx", "svg": "svg", "html": "html"}


def _sniff_text(text: str, truncated: bool) -> FileKind:
    """Guess a text format from content: JSON family, markup, ARFF, YAML, SQL, CSV/TSV."""
    text = text.lstrip("\ufeff")
    s = text.lstrip()
    if not s:
        return TEXT
    if s[0] in "{[" and (kind := _sniff_json(text, truncated)) is not None:
        return kind
    if s[0] == "<":
        if re.match(r"<!doctype\s+html", s, re.I):
            return _BY_NAME["html"]
        if m := _MARKUP.match(s[:8192]):
            return _BY_NAME[_GEO_TAGS.get(m.group(1).rsplit(":", 1)[-1].lower(), "xml")]
        return _BY_NAME["xml"] if s.startswith(("<?xml", "<!--")) else TEXT
    lines = text.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last line was cut by HEAD_BYTES
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("%")]
    if meaningful and meaningful[0].lower().startswith("@relation"):
        return _BY_NAME["arff"]
    if meaningful and meaningful[0].startswith("---"):
        return _BY_NAME["yaml"]
    if _SQL.search(text):
        return _BY_NAME["sql"]
    return _sniff_delimited(lines) or TEXT


def _sniff_json(text: str, truncated: bool) -> FileKind | None:
    """JSON document (GeoJSON/TopoJSON), JSON Lines, or None when it is not JSON at all."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # A first complete value ("Extra data"), or an error where HEAD_BYTES cut the document,
        # still means JSON; an early error ("[Sun Dec 04 ...]" log lines) does not.
        looks_json = exc.msg == "Extra data" or (truncated and exc.pos >= len(text) - 4096)
    except RecursionError:  # absurdly deep nesting: not a document worth a JSON loader
        return None
    else:
        return _json_object_kind(obj) if isinstance(obj, dict) else _BY_NAME["json"]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][:200]
    parsed = 0
    for i, line in enumerate(lines):
        try:
            json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and parsed >= 2:
                break  # the last line was cut by HEAD_BYTES
            parsed = 0
            break
        parsed += 1
    if parsed >= 2:
        return _BY_NAME["jsonl"]
    if not looks_json:
        return None
    if re.search(r'"type"\s*:\s*"Topology"', text):
        return _BY_NAME["topojson"]
    if re.search(r'"type"\s*:\s*"Feature(?:Collection)?"', text):
        return _BY_NAME["geojson"]
    return _BY_NAME["json"]


def _json_object_kind(obj: dict) -> FileKind:
    kind = obj.get("type")
    if kind in ("FeatureCollection", "Feature") or (isinstance(kind, str) and "coordinates" in obj):
        return _BY_NAME["geojson"]
    if kind == "Topology":
        return _BY_NAME["topojson"]
    return _BY_NAME["json"]


def _sniff_delimited(lines: list[str]) -> FileKind | None:
    """CSV or TSV when a few complete lines split into the same number (>= 2) of fields."""
    rows = [ln for ln in lines if ln.strip() and not ln.startswith("#")][:50]
    if len(rows) < 2:
        return None
    candidates = []
    try:
        candidates.append(csv.Sniffer().sniff("\n".join(rows), delimiters=",;\t|").delimiter)
    except csv.Error:
        pass
    for delimiter in [*candidates, ",", "\t", ";", "|"]:
        try:
            widths = {len(row) for row in csv.reader(rows, delimiter=delimiter)}
        except csv.Error:
            continue
        if len(widths) == 1 and widths.pop() >= 2:
            return _BY_NAME["tsv" if delimiter == "\t" else "csv"]
    return None
