"""Tests for the file-type registry (labbot.files.kinds) against the real-file fixture corpus."""

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
from tests.conftest import FIXTURES

REQUIRED_EXTENSIONS = (
    "csv tsv xlsx xls xlsm xlsb ods json jsonl ndjson xml yaml yml toml db sqlite sqlite3 sql "
    "parquet feather hdf hdf5 h5 pickle pkl joblib npy npz mat sav zsav por dta sas7bdat xpt "
    "txt log py r geojson topojson shp kml kmz gpx arff arrow ipc png jpg jpeg gif tif tiff bmp "
    "webp pdf docx zip gz"
).split()

# Expected kind for every fixture file, by its real name.
EXPECTED = {
    "arff/iris.arff": "arff",
    "csv/Apache_2k.log_structured.csv": "csv",
    "csv/pyreadstat_sample.csv": "csv",
    "docx/blk-paras-and-tables.docx": "docx",
    "docx/tbl-having-tables.docx": "docx",
    "docx/test.docx": "docx",
    "dta/missing_test.dta": "stata",
    "dta/sample.dta": "stata",
    "feather/test_data_gdal350.arrow": "feather",
    "feather/test_data_v1.0.0.feather": "feather",
    "geojson/example.topojson": "topojson",
    "geojson/grenada.geojson": "geojson",
    "geojson/null_geom.geojson": "geojson",
    "geojson/test_tz.geojson": "geojson",
    "gpx/Mojstrovka.gpx": "gpx",
    "gpx/route.gpx": "gpx",
    "gpx/test_gpx.gpx": "gpx",
    "hdf5/compound-dtype-complex.h5": "hdf5",
    "hdf5/ex-noattr.h5": "hdf5",
    "hdf5/vlen_string_dset.h5": "hdf5",
    "images/astronaut.png": "image",
    "images/camera.png": "image",
    "images/chelsea.png": "image",
    "images/hubble_deep_field.jpg": "image",
    "images/multipage.tif": "image",
    "images/no_time_for_that_tiny.gif": "image",
    "images/palette_color.png": "image",
    "images/rocket.jpg": "image",
    "joblib/joblib_0.11.0_pickle_py36_np111.pkl": "joblib",
    "joblib/joblib_0.11.0_pickle_py36_np111.pkl.xz": "joblib",
    "json/UGM3_spec-2.27-invoice.json": "json",
    "json/tsframe_v012.json": "json",
    "jsonl/da-dev-labels.jsonl": "jsonl",
    "jsonl/line_delimited.json": "jsonl",  # JSON Lines behind a .json name
    "kml/KML_Samples.kml": "kml",
    "kml/cta_rail_lines.kml": "kml",
    "kml/small_world.kmz": "kmz",
    "log/Apache_2k.log": "log",
    "log/OpenSSH_2k.log": "log",
    "log/logfmt.log": "log",
    "mat/testdouble_7.4_GLNX86.mat": "mat",
    "mat/testhdf5_7.4_GLNX86.mat": "mat",
    "mat/teststruct_7.4_GLNX86.mat": "mat",
    "npy/jf_skew_t_gamlss_pdf_data.npy": "npy",
    "npy/py3-objarr.npy": "npy",
    "npz/chessboard_RGB_U8.npz": "npz",
    "npz/gcvspl.npz": "npz",
    "npz/py3-objarr.npz": "npz",
    "ods/base.ods": "ods",
    "ods/date.ods": "ods",
    "parquet/alltypes_plain.parquet": "parquet",
    "parquet/geoparquet_test_data_v1.0.0.parquet": "parquet",
    "parquet/nested_lists.snappy.parquet": "parquet",
    "pdf/libreoffice-writer-password.pdf": "pdf",
    "pdf/minimal-document.pdf": "pdf",
    "pdf/multicolumn.pdf": "pdf",
    "pdf/pdflatex-4-pages.pdf": "pdf",
    "pickle/0.8.0_pd-1.0.5_py-3.8.3_x86_64_linux.pickle": "pickle",
    "sas7bdat/sample.sas7bdat": "sas",
    "sav/idl_struct_arrays.sav": "idl",
    "sav/sample.por": "spss_portable",
    "sav/sample.sav": "spss",
    "sav/sample.zsav": "spss",
    "shp/coutwildrnp.cpg": "geo_sidecar",
    "shp/coutwildrnp.dbf": "dbf",
    "shp/coutwildrnp.prj": "geo_sidecar",
    "shp/coutwildrnp.shp": "shapefile",
    "shp/coutwildrnp.shx": "geo_sidecar",
    "shp/coutwildrnp.zip": "shapefile",
    "sql/Chinook_Sqlite.sql": "sql",
    "sqlite/Chinook_Sqlite.sqlite": "sqlite",
    "toml/spec-example-1.expected.tagged.json": "json",
    "toml/spec-example-1.toml": "toml",
    "tsv/salaries_comments.tsv": "tsv",
    "txt/ChinookDatabase.txt": "text",
    "txt/Norris.dat": "text",
    "txt/xlrd_sample.txt": "text",
    "xls/base.xls": "excel_legacy",
    "xls/profiles.xls": "excel_legacy",
    "xlsb/base.xlsb": "excel_binary",
    "xlsm/issue221.xlsm": "excel_macro",
    "xlsm/vba.xlsm": "excel_macro",
    "xlsx/any_sheets.xlsx": "excel",
    "xlsx/base.xlsx": "excel",
    "xlsx/password.xlsx": "excel",  # encrypted OOXML: an OLE2 file, still a workbook
    "xml/atom-example.xml": "xml",
    "xpt/sample.xpt": "xpt",
    "yaml/229Q_spec-2.4-seq-of-maps.expected.json": "json",
    "yaml/229Q_spec-2.4-seq-of-maps.yaml": "yaml",
    "yaml/RZT7_spec-2.28-log-file.expected.json": "json",
    "yaml/RZT7_spec-2.28-log-file.yaml": "yaml",
    "yaml/UGM3_spec-2.27-invoice.yaml": "yaml",
}
# Plain-text formats: everything else must be recognisable from its bytes alone.
TEXT_FIXTURES = {
    rel
    for rel in EXPECTED
    if rel.rsplit(".", 1)[-1]
    in {
        "arff",
        "csv",
        "tsv",
        "json",
        "jsonl",
        "geojson",
        "topojson",
        "gpx",
        "kml",
        "log",
        "sql",
        "toml",
        "txt",
        "dat",
        "yaml",
        "prj",
        "cpg",
        "xml",
    }
}
BINARY_FIXTURES = sorted(set(EXPECTED) - TEXT_FIXTURES)
# What content sniffing must find in text fixtures that have lost their name.
SNIFFED = {
    rel: kind
    for rel, kind in EXPECTED.items()
    if rel in TEXT_FIXTURES
    and kind
    in {"json", "jsonl", "xml", "kml", "gpx", "geojson", "topojson", "csv", "tsv", "arff", "sql"}
}


def _head(rel: str) -> bytes:
    with open(FIXTURES / rel, "rb") as fh:
        return fh.read(HEAD_BYTES)


def _copy(rel: str, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(FIXTURES / rel, target)
    return target


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


def test_expected_table_covers_every_fixture() -> None:
    """Every fixture file has an expectation, so new fixtures cannot go untested."""
    on_disk = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.glob("*/*") if p.is_file()}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_fixture_kind_by_real_name(rel: str) -> None:
    """Each real file gets the right kind from its real name and content."""
    path = FIXTURES / rel
    assert detect_kind(path.name, _head(rel), path).name == EXPECTED[rel]


@pytest.mark.parametrize("rel", BINARY_FIXTURES)
def test_binary_fixture_without_extension(rel: str, tmp_path: Path) -> None:
    """Binary formats are recognised from content alone, with and without a path."""
    path = _copy(rel, tmp_path, "upload")
    assert detect_kind("upload", _head(rel), path).name == EXPECTED[rel]
    assert detect_kind("upload", _head(rel)).name == EXPECTED[rel]


@pytest.mark.parametrize("rel", BINARY_FIXTURES)
def test_binary_fixture_with_wrong_extension(rel: str, tmp_path: Path) -> None:
    """A strong binary signature beats a wrong (text or other binary) extension."""
    for name in ("data.csv", "notes.txt", "photo.png"):
        path = _copy(rel, tmp_path, name)
        assert detect_kind(name, _head(rel), path).name == EXPECTED[rel], name


@pytest.mark.parametrize("rel", sorted(SNIFFED))
def test_text_fixture_without_extension(rel: str, tmp_path: Path) -> None:
    """Text formats with a recognisable shape are sniffed when the name says nothing."""
    path = _copy(rel, tmp_path, "upload")
    assert detect_kind("upload", _head(rel), path).name == SNIFFED[rel]


@pytest.mark.parametrize("rel", sorted(TEXT_FIXTURES - set(SNIFFED)))
def test_plain_text_fixture_without_extension_is_textual(rel: str) -> None:
    """Text without a sniffable shape (logs, prose, TOML) stays a text-loaded kind."""
    assert detect_kind("upload", _head(rel)).loader in {"text", "yaml"}


def test_idl_sav_is_not_spss() -> None:
    """An IDL save file named .sav is not labelled SPSS."""
    kind = detect_kind("idl_struct_arrays.sav", _head("sav/idl_struct_arrays.sav"))
    assert kind.name == "idl" and kind.loader == "idl"
    assert detect_kind("sample.sav", _head("sav/sample.sav")).loader == "spss"


def test_joblib_dumps_get_joblib_kind() -> None:
    """The joblib .pkl (plain pickle.load fails) and .pkl.xz both load with joblib."""
    for rel in (
        "joblib/joblib_0.11.0_pickle_py36_np111.pkl",
        "joblib/joblib_0.11.0_pickle_py36_np111.pkl.xz",
    ):
        assert detect_kind(Path(rel).name, _head(rel)).loader == "joblib"
    plain = "pickle/0.8.0_pd-1.0.5_py-3.8.3_x86_64_linux.pickle"
    assert detect_kind("x.pickle", _head(plain)).loader == "pickle"


def test_geo_containers() -> None:
    """The zipped shapefile is a geo kind, the KMZ is KML-ish, and both use the geo loader."""
    shp = FIXTURES / "shp/coutwildrnp.zip"
    kmz = FIXTURES / "kml/small_world.kmz"
    assert detect_kind(shp.name, _head("shp/coutwildrnp.zip"), shp).name == "shapefile"
    assert detect_kind(kmz.name, _head("kml/small_world.kmz"), kmz).name in {"kml", "kmz"}
    assert {kind_by_name(n).loader for n in ("shapefile", "kmz", "kml", "gpx")} == {"geo"}


def test_mat_v73_is_still_mat() -> None:
    """A MATLAB v7.3 file (HDF5 inside) is MATLAB data, also under an .h5 or no name."""
    rel = "mat/testhdf5_7.4_GLNX86.mat"
    assert detect_kind("x.mat", _head(rel)).name == "mat"
    assert detect_kind("x.h5", _head(rel)).name == "mat"
    assert detect_kind("upload", _head(rel)).name == "mat"


def test_extension_wins_over_compatible_content() -> None:
    """CSV content in a .txt stays text, and a .tsv stays tsv."""
    csv_head = _head("csv/pyreadstat_sample.csv")
    assert detect_kind("notes.txt", csv_head).name == "text"
    assert detect_kind("x.tsv", _head("tsv/salaries_comments.tsv")).name == "tsv"
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
