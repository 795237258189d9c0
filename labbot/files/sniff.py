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
import zlib
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import puremagic

from labbot.files import ziplisting

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


def signature_kind(head: bytes, path: Path | None, *, is_text: bool) -> str | None:
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
    """Member names and the small marker members, from the archive's end record (a bounded
    read, see `ziplisting`) or, without a path or a directory, from `head` alone."""
    if path is not None:
        try:
            listing = ziplisting.read_listing(path, _ZIP_PEEK)
        except (OSError, struct.error, ValueError):  # damaged input: fall back to head
            listing = None
        if listing is not None:
            return listing.names, listing.peek
    names: list[str] = []
    peek: dict[str, bytes] = {}
    off = head.find(b"PK\x01\x02")  # central directory, when it fits in head
    while off >= 0 and off + 46 <= len(head) and len(names) < ziplisting.MAX_ENTRIES:
        nlen = struct.unpack_from("<H", head, off + 28)[0]
        names.append(head[off + 46 : off + 46 + nlen].decode("utf-8", "replace"))
        off = head.find(b"PK\x01\x02", off + 4)
    off = head.find(b"PK\x03\x04")  # local headers, each followed by its data
    while off >= 0 and off + 30 <= len(head) and len(names) < ziplisting.MAX_ENTRIES:
        method, _, _, _, csize, _, nlen, elen = struct.unpack_from("<HHHIIIHH", head, off + 8)
        name = head[off + 30 : off + 30 + nlen].decode("utf-8", "replace")
        names.append(name)
        if name in _ZIP_PEEK and name not in peek:  # the first only: inflating is bounded once
            data = head[off + 30 + nlen + elen :]
            try:
                peek[name] = (
                    zlib.decompressobj(-15).decompress(data, ziplisting.MAX_PEEK_BYTES)
                    if method == 8
                    else data[: min(csize or 4096, ziplisting.MAX_PEEK_BYTES)]
                )
            except zlib.error:
                pass
        off = head.find(b"PK\x03\x04", off + 4)
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
# Everything below reads strangers' text on the host, so it is linear in a bounded prefix: no
# pattern with nested or adjacent overlapping quantifiers, no csv.Sniffer (its quote patterns
# backtrack: 4 KiB of `,"` took 0.3 s, 64 KiB over a minute), each scan moving forward only.

TEXT_SAMPLE_BYTES = 8192  # bytes weighed to decide text or binary
MARKUP_SCAN_CHARS = 8192  # characters of a markup prolog scanned for the first element
SQL_STATEMENT_CHARS = 200  # characters after a line's start matched against a statement
JSON_LINES = 200  # lines tried as JSON Lines
DELIMITED_ROWS = 50  # lines split into fields for CSV/TSV
# C0 controls that do not occur in text (tab, newlines, form feed, backspace, escape do).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\b\x1b")
_CONTROL_CHARS = {b: None for b in range(32) if b not in b"\t\n\r\f\b\x1b"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def has_nul(head: bytes) -> bool:
    """True when the sample holds a NUL byte: binary, unless it is UTF-16/32 text."""
    return b"\x00" in head[:TEXT_SAMPLE_BYTES]


def decode_text(head: bytes) -> str | None:
    """Decode `head` as text, or None if it is binary.

    UTF-32/16 by BOM, UTF-16 without one by its pattern of zero bytes, UTF-8, and any other
    byte string without NUL and with few control bytes as latin-1: a legacy code page (cp1251,
    cp1250, cp1252, Shift-JIS, GB18030) keeps its ASCII structure so, and its real decoding
    is `load_file`'s, inside the sandbox."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            unit = 4 if "32" in codec else 2
            body = head[len(bom) :]
            return body[: len(body) // unit * unit].decode(codec, errors="replace")
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    sample = head[:TEXT_SAMPLE_BYTES]
    if b"\x00" in sample:
        return _utf16_without_bom(head)
    if (len(sample) - len(sample.translate(None, _CONTROL_BYTES))) * 100 > len(sample):
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return head[: exc.start].decode("utf-8")  # head cut a multi-byte character
    return head.decode("latin-1")


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 text without a BOM (Excel's "Unicode text" has one, other tools not): mostly
    Latin text has a zero in one byte of nearly every pair and never in the other."""
    sample = head[: TEXT_SAMPLE_BYTES // 2 * 2]
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    zero_even, zero_odd = sample[0::2].count(0), sample[1::2].count(0)
    if zero_odd * 10 >= pairs * 3 and zero_even * 50 <= pairs:
        codec = "utf-16-le"
    elif zero_even * 10 >= pairs * 3 and zero_odd * 50 <= pairs:
        codec = "utf-16-be"
    else:
        return None
    try:
        text = sample.decode(codec)
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:
            return None
        text = sample[: exc.start].decode(codec)  # the sample cut a surrogate pair
    if (len(text) - len(text.translate(_CONTROL_CHARS))) * 100 > len(text):
        return None
    return head[: len(head) // 2 * 2].decode(codec, errors="replace")


# A statement at a line's start; matched only against SQL_STATEMENT_CHARS characters there.
_SQL = re.compile(
    r"(?:CREATE\s+(?:TEMP\w*\s+|UNIQUE\s+)?(?:TABLE|VIEW|INDEX)|INSERT\s+INTO|ALTER\s+TABLE)\b",
    re.IGNORECASE,
)
_SQL_VERBS = ("create", "insert", "alter")
_SPACE = re.compile(r"\s*")
_TAG = re.compile(r"<([A-Za-z_][\w.:-]*)")
_DOCTYPE_HTML = re.compile(r"<!doctype\s+html", re.IGNORECASE)
_GEO_TAGS = {"kml": "kml", "gpx": "gpx", "svg": "svg", "html": "html"}
_DELIMITERS = ("\t", ",", ";", "|")  # tab first: commas inside TSV fields are common


def sniff_text(text: str, *, truncated: bool) -> str:
    """Guess a text format from content: JSON family, markup, ARFF, YAML, SQL, CSV/TSV."""
    text = text.lstrip("\ufeff")
    s = text.lstrip()
    if not s:
        return "text"
    if s[0] in "{[" and (kind := _sniff_json(text, truncated=truncated)) is not None:
        return kind
    if s[0] == "<":
        if _DOCTYPE_HTML.match(s, 0, 64):
            return "html"
        if (tag := _first_tag(s[:MARKUP_SCAN_CHARS])) is not None:
            return _GEO_TAGS.get(tag.rsplit(":", 1)[-1].lower(), "xml")
        return "xml" if s.startswith(("<?xml", "<!--")) else "text"
    lines = text.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last line was cut by HEAD_BYTES
    meaningful = (ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("%"))
    first = next(meaningful, "")
    if first.lower().startswith("@relation"):
        return "arff"
    if first.startswith("---"):
        return "yaml"
    if _has_sql(lines, text):
        return "sql"
    return _sniff_delimited(lines) or "text"


def _first_tag(s: str) -> str | None:
    """The first element's name after the prolog (whitespace, <?...?>, <!--...-->, DOCTYPE).
    Each step moves forward and each end is found by `str.find`: linear in `s`."""
    pos = 0
    while True:
        space = _SPACE.match(s, pos)  # \s* always matches
        pos = space.end() if space else pos
        if s.startswith("<?", pos):
            end, width = s.find("?>", pos + 2), 2
        elif s.startswith("<!--", pos):
            end, width = s.find("-->", pos + 4), 3
        elif s[pos : pos + 9].lower() == "<!doctype":
            end, width = s.find(">", pos + 9), 1
        else:
            tag = _TAG.match(s, pos)
            return tag.group(1) if tag else None
        if end < 0:
            return None
        pos = end + width


def _has_sql(lines: list[str], text: str) -> bool:
    """True when a line starts a CREATE TABLE/VIEW/INDEX, INSERT INTO or ALTER TABLE."""
    lowered = text.lower()
    if not any(verb in lowered for verb in _SQL_VERBS):  # one pass in C spares the line loop
        return False
    for i, line in enumerate(lines):
        start = line.lstrip()
        if start[:6].lower().startswith(_SQL_VERBS):
            after = (ln[:SQL_STATEMENT_CHARS] for ln in lines[i + 1 : i + 3])
            window = " ".join((start[:SQL_STATEMENT_CHARS], *after))[:SQL_STATEMENT_CHARS]
            if _SQL.match(window):
                return True
    return False


def _sniff_json(text: str, *, truncated: bool) -> str | None:
    """JSON document (GeoJSON/TopoJSON), JSON Lines, or None when it is not JSON at all."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # A first complete value ("Extra data"), or an error where HEAD_BYTES cut the document,
        # still means JSON; an early error ("[Sun Dec 04 ...]" log lines) does not.
        looks_json = exc.msg == "Extra data" or (truncated and exc.pos >= len(text) - 4096)
    except (ValueError, RecursionError):  # a 5,000-digit number; absurdly deep nesting
        return None
    else:
        return _json_object_kind(obj) if isinstance(obj, dict) else "json"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][:JSON_LINES]
    parsed = 0
    for i, line in enumerate(lines):
        try:
            json.loads(line)
        except (ValueError, RecursionError):
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
    """CSV or TSV when a few complete lines split into the same number (>= 2) of fields
    with one delimiter (the C csv reader: one linear pass per delimiter)."""
    rows = list(
        islice((ln for ln in lines if ln.strip() and not ln.startswith("#")), DELIMITED_ROWS)
    )
    if len(rows) < 2:
        return None
    for delimiter in _DELIMITERS:
        try:
            widths = {len(row) for row in csv.reader(rows, delimiter=delimiter)}
        except csv.Error:
            continue
        if len(widths) == 1 and widths.pop() >= 2:
            return "tsv" if delimiter == "\t" else "csv"
    return None
