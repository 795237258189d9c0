"""Content sniffing: the kind a file's leading bytes prove or suggest, as a kind name.

Signature checks (magic bytes, our own and puremagic's), a look inside ZIP, OLE2 and compressed
containers, and text sniffing (JSON family, markup, ARFF, YAML, SQL, CSV/TSV). Every function
answers with the name of a kind in `labbot.files.kinds` (or None); `kinds.detect_kind` weighs
these answers against the file's extension. Never imports `kinds`, which imports this module.
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
from collections.abc import Callable
from pathlib import Path

import puremagic

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


# --- binary signatures -------------------------------------------------------------------


def signature_kind(head: bytes, path: Path | None, is_text: bool) -> str | None:
    """Kinds proven by magic bytes that we check ourselves (precise, ordered)."""
    for magic, name in _MAGIC:
        # PAR1 and ARROW1 are printable ASCII: a text file may start with them too.
        if head.startswith(magic) and not (is_text and name in ("parquet", "feather")):
            return name
    # MATLAB v7.3 is HDF5 behind a 512-byte MATLAB preamble, so check MATLAB first.
    if head.startswith(b"MATLAB") and b"MAT-file" in head[:128]:
        return "mat"
    if any(head[off : off + 8] == b"\x89HDF\r\n\x1a\n" for off in (0, 512, 1024, 2048)):
        return "hdf5"
    if b"SPSS PORT FILE" in head[:600]:  # after a 200-byte splash in several encodings
        return "spss_portable"
    # Binary .dta 102-115: version byte, byte order (1=HILO, 2=LOHI), filetype 1, zero pad.
    if len(head) > 4 and 102 <= head[0] <= 115 and head[1] in (1, 2) and head[2:4] == b"\1\0":
        return "stata"
    if len(head) > 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        # joblib dumps are pickles that plain pickle.load cannot read (arrays follow raw).
        return "joblib" if b"NumpyArrayWrapper" in head else "pickle"
    if head.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")) or (
        head[:3] == b"BZh" and head[4:10] == b"1AY&SY"
    ):
        return _compressed_kind(head)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(head, path)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return _ole_kind(head)
    if head[257:262] == b"ustar":
        return "tar"
    # puremagic scores the 2-byte BMP magic too low to trust; the DIB header size pins it.
    if head[:2] == b"BM" and head[6:10] == bytes(4) and head[14:15] in (b"\x0c", b"(", b"l", b"|"):
        return "image"
    if head.startswith(b"\x00\x00\x27\x0a") and len(head) >= 104:
        # .shp and .shx share the header; then .shp has record number 1, .shx offset 50.
        return "geo_sidecar" if head[100:104] == b"\x00\x00\x00\x32" else "shapefile"
    return "dbf" if _is_dbf(head) else None


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


def _compressed_kind(head: bytes) -> str:
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
        return "joblib"
    if inner[257:262] == b"ustar":
        return "tar"
    return "compressed"


def _ole_kind(head: bytes) -> str:
    """Name an OLE2 compound file by its stream names (UTF-16 in the directory sectors)."""
    # EncryptedPackage is a password-protected OOXML file: in a data bot, usually a workbook.
    streams = {
        "EncryptedPackage": "excel",
        "WordDocument": "doc",
        "PowerPoint Document": "presentation",
    }
    for stream, name in streams.items():
        if stream.encode("utf-16-le") in head:
            return name
    return "excel_legacy"


_ZIP_PEEK = ("mimetype", "[Content_Types].xml")


def _zip_members(head: bytes, path: Path | None) -> tuple[list[str], dict[str, bytes]]:
    """Member names and the small marker members, from the archive or from `head` alone."""
    if path is not None:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()[:10000]
                peek: dict[str, bytes] = {}
                for info in infos:
                    # Only the first of each marker, and a small one: an archive of 10,000
                    # members named "mimetype" must not make the host inflate them all.
                    if info.filename in _ZIP_PEEK and info.filename not in peek:
                        if info.file_size < 64 * 1024 and info.compress_size < 64 * 1024:
                            peek[info.filename] = zf.read(info)
                return [i.filename for i in infos], peek
        except Exception:  # zipfile raises many types on damaged input; fall back to head
            pass
    names: list[str] = []
    peek = {}
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


def _zip_kind(head: bytes, path: Path | None) -> str:
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
    return next((name for hit, name in rules if hit), "zip")


def puremagic_kind(head: bytes, kind_for_filename: Callable[[str], str | None]) -> str | None:
    """Media and archive formats from puremagic's signature table (binary content only);
    `kind_for_filename` names the kind a filename's extension gives (None if unknown)."""
    try:
        matches = puremagic.magic_string(head) if head else []
    except Exception:  # puremagic raises PureError (and others) when nothing matches
        return None
    for match in matches:
        kind = kind_for_filename("x." + match.extension.lstrip("."))
        if kind is not None and kind in _PUREMAGIC_KINDS and match.confidence >= 0.3:
            return kind
    return None


# --- text sniffing -----------------------------------------------------------------------


def decode_text(head: bytes) -> str | None:
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


def sniff_text(text: str, truncated: bool) -> str:
    """Guess a text format from content: JSON family, markup, ARFF, YAML, SQL, CSV/TSV."""
    text = text.lstrip("\ufeff")
    s = text.lstrip()
    if not s:
        return "text"
    if s[0] in "{[" and (kind := _sniff_json(text, truncated)) is not None:
        return kind
    if s[0] == "<":
        if re.match(r"<!doctype\s+html", s, re.I):
            return "html"
        if m := _MARKUP.match(s[:8192]):
            return _GEO_TAGS.get(m.group(1).rsplit(":", 1)[-1].lower(), "xml")
        return "xml" if s.startswith(("<?xml", "<!--")) else "text"
    lines = text.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last line was cut by HEAD_BYTES
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("%")]
    if meaningful and meaningful[0].lower().startswith("@relation"):
        return "arff"
    if meaningful and meaningful[0].startswith("---"):
        return "yaml"
    if _SQL.search(text):
        return "sql"
    return _sniff_delimited(lines) or "text"


def _sniff_json(text: str, truncated: bool) -> str | None:
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
        return _json_object_kind(obj) if isinstance(obj, dict) else "json"
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
        return "jsonl"
    if not looks_json:
        return None
    if re.search(r'"type"\s*:\s*"Topology"', text):
        return "topojson"
    if re.search(r'"type"\s*:\s*"Feature(?:Collection)?"', text):
        return "geojson"
    return "json"


def _json_object_kind(obj: dict) -> str:
    kind = obj.get("type")
    if kind in ("FeatureCollection", "Feature") or (isinstance(kind, str) and "coordinates" in obj):
        return "geojson"
    if kind == "Topology":
        return "topojson"
    return "json"


def _sniff_delimited(lines: list[str]) -> str | None:
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
            return "tsv" if delimiter == "\t" else "csv"
    return None
