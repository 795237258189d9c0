"""The optional extra check: the file-type registry on the shared corpus of real-world files.

Runs only when LABBOT_SHARED_FIXTURES names the corpus; test_kinds.py checks the same rules on
the in-repo fixtures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labbot.files.kinds import HEAD_BYTES, detect_kind, kind_by_name
from tests.fixtures import SHARED_MISSING, shared_corpus

_CORPUS = shared_corpus()
if _CORPUS is None:
    pytest.skip(SHARED_MISSING, allow_module_level=True)
FIXTURES: Path = _CORPUS

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
