"""Tests for the file-type registry (labbot.files.kinds): its tables, the in-repo fixtures
(tests/fixtures/manifest.json says what each must be called, with and without its name),
sniffing and hostile input. test_kinds_shared.py adds the shared real-file corpus when present.
"""

from __future__ import annotations

import io
import random
import shutil
import zipfile
from pathlib import Path

import pytest

from labbot.files.kinds import (
    BINARY,
    HEAD_BYTES,
    KINDS,
    TEXT,
    FileKind,
    detect_kind,
    kind_by_name,
    kind_for_filename,
    supported_extensions,
)
from tests.fixtures import FORMATS, MANIFEST, fixture

REQUIRED_EXTENSIONS = (
    "csv tsv xlsx xls xlsm xlsb ods json jsonl ndjson xml yaml yml toml db sqlite sqlite3 sql "
    "parquet feather hdf hdf5 h5 pickle pkl joblib npy npz mat sav zsav por dta sas7bdat xpt "
    "txt log py r geojson topojson shp kml kmz gpx arff arrow ipc png jpg jpeg gif tif tiff bmp "
    "webp pdf docx zip gz"
).split()


def test_at_least_80_extensions() -> None:
    """The registry knows at least 80 extensions, all lowercase without a leading dot."""
    exts = supported_extensions()
    assert len(exts) >= 80
    assert exts == sorted(exts)
    assert all(e == e.lower() and not e.startswith(".") for e in exts)


def test_required_extensions_known() -> None:
    """Every extension the bot promises to accept maps to a kind."""
    missing = [e for e in REQUIRED_EXTENSIONS if kind_for_filename(f"file.{e}") is None]
    assert missing == []


def test_kind_names_and_extensions_unique() -> None:
    """Kind names are unique and no extension is claimed by two kinds."""
    names = [k.name for k in KINDS]
    assert len(names) == len(set(names))
    exts = [e for k in KINDS for e in k.extensions]
    assert len(exts) == len(set(exts))
    assert TEXT in KINDS and BINARY in KINDS
    assert (TEXT.loader, BINARY.loader) == ("text", "bytes")


def test_kind_by_name() -> None:
    """kind_by_name returns the registered kind and raises KeyError for unknown names."""
    assert kind_by_name("csv").extensions[0] == "csv"
    assert kind_by_name("excel").is_table
    assert not kind_by_name("pdf").is_table
    with pytest.raises(KeyError):
        kind_by_name("no-such-kind")


def test_extension_case_insensitive() -> None:
    """Extensions match regardless of case."""
    assert kind_for_filename("DATA.CSV") == kind_by_name("csv")
    assert kind_for_filename("Report.XlSx") == kind_by_name("excel")
    assert detect_kind("DATA.CSV", b"a,b\n1,2\n").name == "csv"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("model.pkl.xz", "joblib"),
        ("model.PKL.GZ", "joblib"),
        ("table.csv.gz", "csv"),
        ("events.jsonl.bz2", "jsonl"),
        ("backup.tar.gz", "tar"),
        ("backup.tgz", "tar"),
        ("blob.gz", "compressed"),
        ("test_data_v1.0.0.parquet", "parquet"),
        ("dir/sub.dir/x.shp.zip", "shapefile"),
        ("C:\\Users\\me\\data.XLSX", "excel"),
        (".env", "config"),
    ],
)
def test_multi_part_extensions(filename: str, expected: str) -> None:
    """Multi-part and dotted names resolve to the most specific known suffix."""
    kind = kind_for_filename(filename)
    assert kind is not None and kind.name == expected


@pytest.mark.parametrize("filename", ["README", "noext.", "archive.unknownext", ""])
def test_unknown_extension_is_none(filename: str) -> None:
    """Names without a known extension give None rather than a guess."""
    assert kind_for_filename(filename) is None


def _head(rel: str) -> bytes:
    with fixture(rel).open("rb") as fh:
        return fh.read(HEAD_BYTES)


def _copy(rel: str, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(fixture(rel), target)
    return target


BY_ID = {"ids": lambda entry: entry["file"]}
# Binary fixtures that carry a signature: it must beat a wrong extension.
SIGNED = [e for e in MANIFEST if not e["text"] and e["kind_unnamed"] != "binary"]


def test_manifest_lists_every_fixture() -> None:
    """Every file under tests/fixtures/formats is in the manifest and the other way round."""
    on_disk = {p.relative_to(FORMATS).as_posix() for p in FORMATS.rglob("*") if p.is_file()}
    assert on_disk == {e["file"] for e in MANIFEST}


def test_fixtures_cover_the_registry() -> None:
    """The fixtures exercise most kinds the bot promises, binary and text alike."""
    kinds = {e["kind"] for e in MANIFEST}
    assert len(kinds) >= 45 and {True, False} == {e["text"] for e in MANIFEST}
    assert all(kind_by_name(k) for k in kinds)


@pytest.mark.parametrize("entry", MANIFEST, **BY_ID)
def test_fixture_kind_by_real_name(entry: dict) -> None:
    """Each fixture gets its kind from its real name and content."""
    path = fixture(entry["file"])
    assert detect_kind(path.name, _head(entry["file"]), path).name == entry["kind"]


@pytest.mark.parametrize("entry", MANIFEST, **BY_ID)
def test_fixture_kind_without_name(entry: dict, tmp_path: Path) -> None:
    """Without a name, content alone decides: the same kind for signed binary formats and text
    with a recognisable shape, the manifest's fallback (text, sqlite, binary) otherwise."""
    rel = entry["file"]
    path = _copy(rel, tmp_path, "upload")
    assert detect_kind("upload", _head(rel), path).name == entry["kind_unnamed"]
    assert detect_kind("upload", _head(rel)).name == entry["kind_unnamed"]


@pytest.mark.parametrize("entry", SIGNED, **BY_ID)
def test_binary_fixture_with_wrong_extension(entry: dict, tmp_path: Path) -> None:
    """A binary signature beats a wrong (text or other binary) extension."""
    rel = entry["file"]
    for name in ("data.csv", "notes.txt", "photo.png"):
        path = _copy(rel, tmp_path, name)
        assert detect_kind(name, _head(rel), path).name == entry["kind_unnamed"], name


def test_idl_sav_is_not_spss() -> None:
    """An IDL save file named .sav is not labelled SPSS, and an SPSS one is."""
    kind = detect_kind("probe.sav", _head("idl/probe.sav"))
    assert kind.name == "idl" and kind.loader == "idl"
    assert detect_kind("people.sav", _head("sav/people.sav")).loader == "spss"


def test_joblib_dumps_get_joblib_kind() -> None:
    """joblib dumps, plain and xz-compressed, load with joblib; a plain pickle with pickle."""
    for rel in ("joblib/model.joblib", "joblib/model.pkl.xz"):
        assert detect_kind("model.pkl", _head(rel)).loader == "joblib"
    assert detect_kind("x.pickle", _head("pickle/payload.pkl")).loader == "pickle"


def test_geo_containers() -> None:
    """The zipped shapefile is a geo kind, the KMZ is KML-ish, and both use the geo loader."""
    shp, kmz = fixture("shp/places.zip"), fixture("kml/places.kmz")
    assert detect_kind(shp.name, _head("shp/places.zip"), shp).name == "shapefile"
    assert detect_kind(kmz.name, _head("kml/places.kmz"), kmz).name in {"kml", "kmz"}
    assert {kind_by_name(n).loader for n in ("shapefile", "kmz", "kml", "gpx")} == {"geo"}


def test_mat_v73_is_still_mat() -> None:
    """A MATLAB v7.3 file (HDF5 inside) is MATLAB data, also under an .h5 or no name."""
    head = _head("mat/v73.mat")
    assert detect_kind("x.mat", head).name == "mat"
    assert detect_kind("x.h5", head).name == "mat"
    assert detect_kind("upload", head).name == "mat"


def test_extension_wins_over_compatible_content() -> None:
    """CSV content in a .txt stays text, and a .tsv stays tsv."""
    csv_head = _head("csv/people.csv")
    assert detect_kind("notes.txt", csv_head).name == "text"
    assert detect_kind("x.tsv", _head("tsv/people.tsv")).name == "tsv"
    assert detect_kind("upload", csv_head).name == "csv"


def test_text_export_named_as_binary_is_sniffed() -> None:
    """A .xls that is really CSV, TSV or HTML (common exports) is sniffed, not trusted."""
    assert detect_kind("report.xls", b"a,b,c\n1,2,3\n4,5,6\n").name == "csv"
    assert detect_kind("report.xls", b"a\tb\tc\n1\t2\t3\n4\t5\t6\n").name == "tsv"
    html = b"<!DOCTYPE html>\n<html><body><table><tr><td>1</td></tr></table></body></html>"
    assert detect_kind("report.xls", html).name == "html"


def test_bmp_detected_without_name() -> None:
    """A BMP (whose 2-byte magic puremagic scores low) is still an image without a name."""
    bmp = b"BM" + (1078).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little")
    bmp += (40).to_bytes(4, "little") + bytes(range(256)) * 4
    assert detect_kind("upload", bmp).name == "image"
    assert detect_kind("upload", b"BMW drivers, ranked\n").name == "text"


def test_binary_bytes_under_text_name() -> None:
    """Non-text bytes without any signature are binary even if named .txt."""
    noise = random.Random(1).randbytes(4096)
    assert detect_kind("notes.txt", noise) == BINARY
    assert detect_kind("upload", noise) == BINARY


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"type": "Topology", "objects": {}}', "topojson"),
        (b'{"type": "Feature", "geometry": null, "properties": {}}', "geojson"),
        (b'{"a": 1}\n{"a": 2}\n{"a": 3}\n', "jsonl"),
        (b"[1, 2, 3]", "json"),
        (b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\n", "text"),
        (b'<?xml version="1.0"?>\n<!-- c -->\n<svg xmlns="x"></svg>', "svg"),
        (b"<kml:kml xmlns:kml='http://www.opengis.net/kml/2.2'/>", "kml"),
        (b"% comment\n@RELATION iris\n@ATTRIBUTE a NUMERIC\n", "arff"),
        (b"---\nkey: value\n", "yaml"),
        (b"-- dump\nCREATE TABLE t (a INT);\nINSERT INTO t VALUES (1);\n", "sql"),
        (b"a;b;c\n1;2;3\n4;5;6\n", "csv"),
        (b"a|b\n1|2\n", "csv"),
        (b"\xef\xbb\xbfname,city\nJos\xc3\xa9,M\xc3\xa1laga\n", "csv"),
        (b"name,city\nJos\xe9,M\xe1laga\n", "csv"),  # latin-1 export
        (b"\xff\xfea\x00,\x00b\x00\n\x001\x00,\x002\x00\n\x00", "csv"),  # UTF-16 with BOM
        (b"Just a sentence of prose.\n", "text"),
    ],
)
def test_text_sniffing(content: bytes, expected: str) -> None:
    """Unnamed text is sniffed into the JSON family, markup kinds, ARFF, YAML, SQL or CSV."""
    assert detect_kind("upload", content).name == expected


def test_truncated_head_still_sniffed() -> None:
    """A head cut mid-document (HEAD_BYTES) is still JSON / JSON Lines / CSV."""
    big_json = (b'{"type": "FeatureCollection", "features": [' + b'{"a": 1}, ' * 20000)[:HEAD_BYTES]
    assert detect_kind("upload", big_json).name == "geojson"
    lines = (b'{"id": 1, "text": "caf\xc3\xa9"}\n' * 5000)[:HEAD_BYTES]
    assert detect_kind("upload", lines).name == "jsonl"
    rows = (b"x,y,z\n" + b"1,2,3\n" * 20000)[: HEAD_BYTES - 1]
    assert detect_kind("upload", rows).name == "csv"


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_refinement_from_head_only() -> None:
    """ZIP members seen in the head refine the container, and other zips stay zip."""
    assert detect_kind("upload", _zip_bytes({"a.npy": b"\x93NUMPY"})).name == "npz"
    assert detect_kind("upload", _zip_bytes({"doc.kml": b"<kml/>"})).name == "kmz"
    assert detect_kind("upload", _zip_bytes({"word/document.xml": b"<w/>"})).name == "docx"
    assert detect_kind("upload", _zip_bytes({"ppt/slide1.xml": b"<p/>"})).name == "presentation"
    odt = _zip_bytes({"mimetype": b"application/vnd.oasis.opendocument.text"})
    assert detect_kind("upload", odt).name == "odt"
    assert detect_kind("upload", _zip_bytes({"a.csv": b"a,b\n"})).name == "zip"
    assert detect_kind("bundle.xlsx", _zip_bytes({"a.csv": b"a,b\n"})).name == "excel"


HOSTILE = {
    "empty": b"",
    "one byte": b"\x00",
    "one text byte": b"a",
    "random": random.Random(7).randbytes(HEAD_BYTES),
    "truncated zip": b"PK\x03\x04\x14\x00\x00",
    "zip header, garbage": b"PK\x03\x04" + b"\xff" * 40,
    "zip slip": _zip_bytes({"../../etc/passwd": b"x", "../evil.shp": b"y"}),
    "half zip": _zip_bytes({"xl/workbook.xml": b"<w/>" * 1000})[:50],
    "bad gzip": b"\x1f\x8b\x08\x00garbage",
    "bad xz": b"\xfd7zXZ\x00" + b"\x00" * 10,
    "bad ole": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    "pickle opcode": b"\x80\x05",
    "deep json": b"[" * 100000,
    "shp header only": b"\x00\x00\x27\x0a",
    "bmp header only": b"BM" + bytes(8),
    "dbf-like": b"\x03\x5f\x07\x1a" + bytes(4) + b"\x61\x01\x80\x02" + bytes(60),
    "invalid utf8": b"\xc3\x28\xa0\xa1" * 100,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("filename", ["upload", "x.zip", "x.csv", "x.xlsx", "x.pkl.xz", ""])
def test_hostile_input_never_raises(name: str, filename: str, tmp_path: Path) -> None:
    """Hostile or damaged bytes give some registered kind, never an exception."""
    content = HOSTILE[name]
    path = tmp_path / "upload"
    path.write_bytes(content)
    for p in (None, path, tmp_path / "missing"):
        kind = detect_kind(filename, content[:HEAD_BYTES], p)
        assert isinstance(kind, FileKind) and kind in KINDS


def test_zip_slip_member_is_just_a_name(tmp_path: Path) -> None:
    """A zip with ../ member names is classified from names only, nothing is extracted."""
    content = _zip_bytes({"../evil.shp": b"x"})
    path = tmp_path / "upload"
    path.write_bytes(content)
    assert detect_kind("upload", content, path).name == "shapefile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload"]


def test_empty_file_falls_back() -> None:
    """Empty content is TEXT when unnamed and keeps its extension's kind when named."""
    assert detect_kind("upload", b"") == TEXT
    assert detect_kind("x.parquet", b"").name == "parquet"
