"""The optional extra check: the sandbox loaders on the shared corpus of real-world files.

Runs only when LABBOT_SHARED_FIXTURES names the corpus; the in-repo fixtures (test_loaders.py)
are the suite's own check. One row per line of the corpus's manifest.tsv: `checks` are Python
expressions evaluated in the runtime against `obj` (the loaded object); `raises` are substrings
the LoadError message must contain.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.fixtures import SHARED_MISSING, shared_corpus
from tests.sandbox.loadcheck import assert_case, file_case, run_cases

_CORPUS = shared_corpus()
if _CORPUS is None:
    pytest.skip(SHARED_MISSING, allow_module_level=True)
SHARED: Path = _CORPUS
with (SHARED / "manifest.tsv").open(encoding="utf-8", newline="") as _fh:
    ROWS = list(csv.DictReader(_fh, delimiter="\t"))

CHINOOK = {
    "Album": 347,
    "Artist": 275,
    "Customer": 59,
    "Employee": 8,
    "Genre": 25,
    "Invoice": 412,
    "InvoiceLine": 2240,
    "MediaType": 5,
    "Playlist": 18,
    "PlaylistTrack": 8715,
    "Track": 3503,
}
SAMPLE_COLS = ["mychar", "mynum", "mydate", "dtime", "mylabl", "myord", "mytime"]
SAMPLE_NUM = [1.1, 1.2, -1000.3, -1.4, 1000.3]
MALE_FEMALE = ["Male", "Female", "Male", "Female", "Male"]
BASE_ROW1 = ["String", "1.0", "1.1", "1.0", "0.0", "2010-10-10 00:00:00", "2010-10-10 10:10:10"]
KML_COLS = [
    "id", "Name", "description", "timestamp", "begin", "end", "altitudeMode", "tessellate",
    "extrude", "visibility", "drawOrder", "icon",
]  # fmt: skip
KML_LAYERS = [
    "Placemarks", "Styles and Markup", "Highlighted Icon", "Ground Overlays", "Screen Overlays",
    "Paths", "Polygons", "Google Campus", "Extruded Polygon", "Absolute and Relative",
]  # fmt: skip
GPX_LAYERS = ["waypoints", "routes", "tracks", "route_points", "track_points"]
INVOICE_KEYS = ["invoice", "date", "bill-to", "ship-to", "product", "tax", "total", "comments"]
MAT_VALUES = [0.0, 0.785398, 1.570796, 2.356194, 3.141593, 3.926991, 4.712389, 5.497787, 6.283185]
OBJARR = "[obj[0] is None, obj[1] is range, obj[2] == '優良', obj[3] == '不良'.encode()]"
CTA_NAMES = ["Blue Line (Forest Park)"] + ["Red, Purple Line"] * 4
SHP_COLS = [
    "PERIMETER", "FEATURE2", "NAME", "FEATURE1", "URL", "AGBUR", "AREA", "STATE_FIPS",
    "WILDRNP020", "STATE", "geometry",
]  # fmt: skip


def _row(file: str, *checks: str, options: dict | None = None, raises: tuple = ()) -> dict:
    return {"file": file, "checks": list(checks), "options": options or {}, "raises": list(raises)}


def _frame(shape: tuple[int, int], columns: list[str] | None = None) -> list[str]:
    out = [f"obj.shape == {shape!r}"]
    if columns is not None:
        out.append(f"list(obj.columns) == {columns!r}")
    return out


def _image(fmt: str, size: tuple[int, int], mode: str, frames: int) -> list[str]:
    return [
        f"obj.format == {fmt!r}",
        f"obj.size == {size!r}",
        f"obj.mode == {mode!r}",
        f"getattr(obj, 'n_frames', 1) == {frames}",
    ]


_UGM3 = [
    "type(obj) is dict",
    f"list(obj) == {INVOICE_KEYS!r}",
    "obj['invoice'] == 34843 and obj['total'] == 4443.52",
    "obj['date'] == datetime.date(2001, 1, 23)",
    "obj['ship-to'] is obj['bill-to']",
    "{**obj, 'date': str(obj['date'])} == fixture('json/UGM3_spec-2.27-invoice.json', 'json')",
]
_RZT7 = [
    "isinstance(obj, list) and len(obj) == 3",
    "list(obj[0]) == ['Time', 'User', 'Warning']",
    "obj[0]['Time'] == datetime.datetime(2001, 11, 23, 15, 1, 42, "
    "tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))",
]
_PW_PDF = "pdf/libreoffice-writer-password.pdf"
_XLSX_PW = ("password.xlsx", "encrypted (password-protected) workbook", "unprotected copy")
_HDF_TABLE = [
    *_frame(
        (15, 8),
        ["ADCcount", "TDCcount", "grid_i", "grid_j", "idnumber", "name", "pressure", "temperature"],
    ),
    "obj['name'][1] == 'Particle:      1'",
    "float(obj['pressure'].sum()) == 1015.0",
]
_JOBLIB = [
    "isinstance(obj, list) and len(obj) == 6",
    "[type(x).__name__ for x in obj] == ['ndarray', 'ndarray', 'ndarray', 'bytes', 'ndarray', "
    "'str']",
    "obj[0].tolist() == [0, 1, 2, 3, 4]",
    "obj[1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]",
    "obj[-1] == \"C'est l'été !\"",
]
_MAT_DOUBLE = [
    "list(obj) == ['testdouble']",
    "obj['testdouble'].shape == (9,)",  # squeezed: MATLAB's (1, 9) row vector
    f"np.allclose(obj['testdouble'], {MAT_VALUES!r}, atol=1e-6)",
]
_SAV = [
    *_frame((5, 7), SAMPLE_COLS),
    f"obj['mylabl'].tolist() == {MALE_FEMALE!r}",
    f"obj['mynum'].tolist() == {SAMPLE_NUM!r}",
]
_IDL = [
    "list(obj) == ['arrays']",
    "[f[0][1] for f in obj['arrays'].dtype.descr] == ['A', 'B', 'C', 'D']",
    "obj['arrays'].a[0].tolist() == [1, 2, 3]",
    "obj['arrays'].d[0].tolist() == [b'cheese', b'bacon', b'spam']",
]
_XPT = [
    *_frame((5, 7), [c.upper() for c in SAMPLE_COLS]),
    f"obj['MYNUM'].tolist() == {SAMPLE_NUM!r}",
    "obj['MYDATE'][0] == pd.Timestamp('2018-05-06')",
]
_SAS = [
    *_frame((5, 7), SAMPLE_COLS),
    "obj['mychar'].tolist() == ['a', 'b', 'c', 'd', 'e']",  # decoded, not bytes
    f"obj['mynum'].tolist() == {SAMPLE_NUM!r}",
]
_KML_PLACEMARKS = [
    "obj.shape == (3, 13)",
    f"list(obj.columns) == {[*KML_COLS, 'geometry']!r}",
    "obj['Name'].tolist() == ['Simple placemark', 'Floating placemark', 'Extruded placemark']",
]
_TRACK_POINTS = [
    "type(obj).__name__ == 'GeoDataFrame' and obj.shape == (19, 27)",
    "obj['ele'][0] == 11.0",
    "str(obj['time'][0]) == '2014-06-11 12:21:40+00:00'",
]
_PDF_PAGES = "obj.count('\\f') + 1 == {}"

# One entry per manifest row (key = row index, 0-based after the header). `checks` are Python
# expressions evaluated in the runtime against `obj` (the loaded object); `raises` are substrings
# the LoadError message must contain. The helpers are defined in RUNNER below.
EXPECT: dict[int, dict] = {
    0: _row(
        "csv/pyreadstat_sample.csv",
        *_frame((5, 7), SAMPLE_COLS),
        "obj['mychar'].tolist() == ['a', 'b', 'c', 'd', 'e']",
        "round(obj['mynum'].sum(), 9) == 0.9",
    ),
    1: _row(
        "csv/Apache_2k.log_structured.csv",
        *_frame((2000, 6), ["LineId", "Time", "Level", "Content", "EventId", "EventTemplate"]),
        "obj['Level'].value_counts().to_dict() == {'notice': 1405, 'error': 595}",
        "obj['EventId'].nunique() == 6",
    ),
    2: _row(
        "tsv/salaries_comments.tsv",
        *_frame((46, 4), ["S", "X", "E", "M"]),
        "obj['S'].sum() == 794429",
        "obj.iloc[0].tolist() == [13876, 1, 1, 1]",
    ),
    3: _row(
        "json/tsframe_v012.json",
        "sorted(obj) == ['A', 'B', 'C', 'D', 'date', 'modified']",
        "pd.DataFrame(obj).shape == (5, 6)",
        "pd.Timestamp(int(min(obj['A'], key=int))) == pd.Timestamp('2000-01-03')",
        "abs(obj['A'][min(obj['A'], key=int)] - 1.5680852299999999) < 1e-12",
    ),
    4: _row(
        "json/UGM3_spec-2.27-invoice.json",
        f"list(obj) == {INVOICE_KEYS!r}",
        "obj['invoice'] == 34843 and obj['total'] == 4443.52 and len(obj['product']) == 2",
    ),
    5: _row(
        "jsonl/da-dev-labels.jsonl",
        *_frame((257, 2), ["id", "common_answers"]),
        "obj['id'][:3].tolist() == [0, 5, 6]",
    ),
    6: _row(
        "jsonl/line_delimited.json",
        *_frame((3, 2), ["a", "b"]),
        "obj.values.tolist() == [[1, 2], [3, 4], [5, 6]]",
    ),
    # Several non-empty sheets: a dict of those, in workbook order; empty ones via sheet=.
    7: _row(
        "xlsx/base.xlsx",
        "list(obj) == ['Sheet1', 'Sheet3']",
        "obj['Sheet1'].shape == (2, 10) and obj['Sheet3'].shape == (4, 4)",
        "obj['Sheet1'].iloc[0].isna().all()",
        f"[str(v) for v in obj['Sheet1'].iloc[1]][:7] == {BASE_ROW1!r}",
        "[str(v) for v in obj['Sheet1'].iloc[1]][7:] == "
        "['10:10:10', '0 days 10:10:10.100000', '10 days 15:10:10']",
        "again(sheet='Sheet2').shape == (0, 0) and again(sheet='Merged Cells').shape == (0, 0)",
    ),
    8: _row(
        "xlsx/any_sheets.xlsx",
        "obj.shape == (5, 2)",  # the only sheet with data: Visible
        "again(sheet='Hidden').shape == (0, 0) and again(sheet='VeryHidden').shape == (0, 0)",
    ),
    9: _row("xlsx/password.xlsx", raises=_XLSX_PW),
    10: _row("xlsx/password.xlsx", raises=_XLSX_PW),
    11: _row(
        "xls/base.xls",
        "obj.shape == (2, 10)",
        "obj.iloc[0].isna().all()",
        f"[str(v) for v in obj.iloc[1]][:7] == {BASE_ROW1!r}",
        "again(sheet='Sheet2').shape == (0, 0)",
    ),
    12: _row(
        "xls/profiles.xls",
        "{k: v.shape for k, v in obj.items()} == {'PROFILEDEF': (14, 13), 'AXISDEF': (14, 3), "
        "'TRAVERSALCHAINAGE': (14, 13), 'AXISDATUMLEVELS': (14, 3), 'PROFILELEVELS': (14, 30)}",
        "obj['PROFILEDEF'].iloc[0, 0] == 'P8.2'",
        "obj['PROFILELEVELS'].columns[1] == 'Quergefälle'",
    ),
    13: _row(
        "xlsm/issue221.xlsm",
        "obj.shape == (1, 2)",
        "obj.to_dict('records') == [{'Cell_A1': 'Cell_A2', 'Cell_B1': 'Cell_B2'}]",
    ),
    14: _row("xlsm/vba.xlsm", "obj.shape == (0, 0)", "again(sheet='Sheet3').shape == (0, 0)"),
    # calamine reads xlsb dates as datetimes where pyxlsb gives Excel serials.
    15: _row(
        "xlsb/base.xlsb",
        "list(obj) == ['Sheet1', 'Sheet3']",
        "obj['Sheet1'].shape == (2, 10) and obj['Sheet3'].shape == (4, 4)",
        "obj['Sheet1'].iloc[0].isna().all()",
        f"[str(v) for v in obj['Sheet1'].iloc[1]][:7] == {BASE_ROW1!r}",
    ),
    16: _row(
        "ods/base.ods",
        "obj.shape == (2, 10)",
        "obj.iloc[0].isna().all()",
        f"[str(v) for v in obj.iloc[1]][:7] == {BASE_ROW1!r}",
        "obj.iloc[1, 9] == 'PT255H10M10S'",
    ),
    17: _row(
        "ods/date.ods",
        *_frame((4, 2), [0, 1]),
        "[str(v) for v in obj[0]][:3] == ['2021-01-01 00:00:00', '2021-01-01 10:10:10', "
        "'10:10:10']",
        "str(obj[0][3]).startswith('10:10:10.12')",
        "obj[1].tolist() == [15, 16, 17, 18]",
    ),
    18: _row(
        "xml/atom-example.xml",
        *_frame((6, 7), ["title", "href", "updated", "name", "id", "link", "summary"]),
        "obj['title'][0] == 'Example Feed' and obj['title'][5] == 'Atom-Powered Robots Run Amok'",
        "obj['title'][1:5].isna().all()",
    ),
    # The registry calls this KML a map (geo loader); the xml loader still reads it like
    # pd.read_xml with xpath and namespaces.
    19: _row(
        "kml/cta_rail_lines.kml",
        "obj.shape == (5, 14)",
        f"obj['Name'].tolist() == {CTA_NAMES!r}",
        "load_as('xml', xpath='.//k:Placemark', "
        "namespaces={'k': 'http://www.opengis.net/kml/2.2'}).shape == (5, 6)",
        "load_as('xml', xpath='.//k:Placemark', namespaces={'k': "
        f"'http://www.opengis.net/kml/2.2'}})['name'].tolist() == {CTA_NAMES!r}",
    ),
    20: _row("yaml/UGM3_spec-2.27-invoice.yaml", *_UGM3),
    21: _row("yaml/UGM3_spec-2.27-invoice.yaml", *_UGM3),
    22: _row("yaml/UGM3_spec-2.27-invoice.yaml", *_UGM3),
    23: _row("yaml/UGM3_spec-2.27-invoice.yaml", *_UGM3),
    24: _row("yaml/RZT7_spec-2.28-log-file.yaml", *_RZT7),
    25: _row("yaml/RZT7_spec-2.28-log-file.yaml", *_RZT7),
    26: _row(
        "yaml/229Q_spec-2.4-seq-of-maps.yaml",
        "obj == [{'name': 'Mark McGwire', 'hr': 65, 'avg': 0.278}, "
        "{'name': 'Sammy Sosa', 'hr': 63, 'avg': 0.288}]",
    ),
    27: _row(
        "toml/spec-example-1.toml",
        "list(obj) == ['title', 'owner', 'database', 'servers', 'clients']",
        "obj['owner']['dob'] == datetime.datetime(1979, 5, 27, 7, 32, "
        "tzinfo=datetime.timezone(datetime.timedelta(hours=-8)))",
        "obj['database']['ports'] == [8001, 8001, 8002]",
        "obj['clients']['data'] == [['gamma', 'delta'], [1, 2]]",
    ),
    28: _row(
        "sqlite/Chinook_Sqlite.sqlite",
        f"{{k: len(v) for k, v in obj.items()}} == {CHINOOK!r}",
        "again(table='Genre').shape == (25, 2)",
        "again(query='SELECT COUNT(*) AS n FROM Track')['n'][0] == 3503",
    ),
    29: _row(
        "sql/Chinook_Sqlite.sql",
        f"{{k: len(v) for k, v in obj.items()}} == {CHINOOK!r}",
        "again(table='Album').shape == (347, 3)",
        "again(query='SELECT COUNT(*) AS n FROM InvoiceLine')['n'][0] == 2240",
    ),
    30: _row(
        "parquet/alltypes_plain.parquet",
        *_frame(
            (8, 11),
            [
                "id",
                "bool_col",
                "tinyint_col",
                "smallint_col",
                "int_col",
                "bigint_col",
                "float_col",
                "double_col",
                "date_string_col",
                "string_col",
                "timestamp_col",
            ],  # fmt: skip
        ),
        "obj['id'].tolist() == [4, 5, 6, 7, 2, 3, 0, 1]",
        "obj['string_col'][0] == b'0'",
    ),
    31: _row(
        "parquet/nested_lists.snappy.parquet",
        *_frame((3, 2), ["a", "b"]),
        "deep(obj['a'][0]) == [[['a', 'b'], ['c']], [None, ['d']]]",
    ),
    32: _row(
        "parquet/geoparquet_test_data_v1.0.0.parquet",
        *_frame((2, 4), ["col_str", "col_int", "col_float", "geometry"]),
        "obj.crs.to_epsg() == 4326",
        "obj.geom_type.tolist() == ['MultiPolygon', 'Polygon']",
    ),
    # geo-feather comes back as a GeoDataFrame (geometry decoded) rather than WKB bytes.
    33: _row(
        "feather/test_data_v1.0.0.feather",
        *_frame((2, 4), ["col_str", "col_int", "col_float", "geometry"]),
        "obj['col_str'].tolist() == ['a', 'b']",
        "type(obj).__name__ == 'GeoDataFrame'",
    ),
    34: _row(
        "feather/test_data_gdal350.arrow",
        *_frame((2, 4), ["col_str", "col_int", "col_float", "geometry"]),
        "obj['col_int'].tolist() == [1, 2]",
    ),
    35: _row("hdf5/ex-noattr.h5", *_HDF_TABLE, "again(key='/detector/table').shape == (15, 8)"),
    36: _row("hdf5/ex-noattr.h5", *_HDF_TABLE),
    37: _row(
        "hdf5/vlen_string_dset.h5",
        "list(obj) == ['DS1']",
        "obj['DS1'].tolist() == ['Parting', 'is such', 'sweet', 'sorrow.']",  # decoded
    ),
    38: _row(
        "hdf5/compound-dtype-complex.h5",
        "sorted(obj) == ['<c16', '<c8', '>c16', '>c8', 'c16', 'c8']",
        "all(v.shape == (100,) for v in obj.values())",
        "obj['<c16'].dtype == np.complex128",
    ),
    39: _row(
        "pickle/0.8.0_pd-1.0.5_py-3.8.3_x86_64_linux.pickle",
        "type(obj) is dict and list(obj) == ['gdf_the_geom', 'gdf_crs']",
        "all(type(v).__name__ == 'GeoDataFrame' and v.shape == (3, 2) for v in obj.values())",
        "list(obj['gdf_the_geom'].columns) == ['a', 'the_geom']",
        "list(obj['gdf_crs'].columns) == ['a', 'geometry']",
    ),
    40: _row("joblib/joblib_0.11.0_pickle_py36_np111.pkl", *_JOBLIB),
    41: _row("joblib/joblib_0.11.0_pickle_py36_np111.pkl", *_JOBLIB),
    42: _row("joblib/joblib_0.11.0_pickle_py36_np111.pkl.xz", *_JOBLIB),
    43: _row(
        "npy/jf_skew_t_gamlss_pdf_data.npy",
        "obj.shape == (4, 123) and obj.dtype == np.float64",
        "obj[0, :3].tolist() == [-10.0, -9.5, -9.0]",
        "abs(obj.sum() - 1727.9981594693525) < 1e-9",
    ),
    44: _row("npy/py3-objarr.npy", "obj.shape == (4,) and obj.dtype == object", f"all({OBJARR})"),
    45: _row("npy/py3-objarr.npy", "obj.shape == (4,) and obj.dtype == object", f"all({OBJARR})"),
    46: _row(
        "npz/gcvspl.npz",
        "list(obj) == ['x', 'y', 'y_GCVSPL']",
        "all(v.shape == (100,) for v in obj.values())",
        "obj['x'][:3].tolist() == [-1.9751659336514824, -1.9729437520399888, -1.944926201637271]",
    ),
    47: _row(
        "npz/chessboard_RGB_U8.npz",
        "list(obj) == ['arr_0']",
        "obj['arr_0'].shape == (200, 200, 3) and obj['arr_0'].dtype == np.uint8",
        "int(obj['arr_0'].sum()) == 15300000",
    ),
    48: _row(
        "npz/py3-objarr.npz",
        "obj['x'].shape == (4,)",
        f"all({OBJARR.replace('obj[', 'obj[chr(120)][')})",
    ),
    49: _row("mat/testdouble_7.4_GLNX86.mat", *_MAT_DOUBLE),
    50: _row(
        "mat/teststruct_7.4_GLNX86.mat",
        "list(obj) == ['teststruct']",
        "sorted(obj['teststruct']) == ['complexfield', 'doublefield', 'stringfield']",
        "obj['teststruct']['stringfield'] == 'Rats live on no evil star.'",
    ),
    # v7.3 (HDF5) gives the same dict, shape and values as v5: the two rows agree.
    51: _row("mat/testhdf5_7.4_GLNX86.mat", *_MAT_DOUBLE),
    52: _row("mat/testhdf5_7.4_GLNX86.mat", *_MAT_DOUBLE),
    53: _row("sav/sample.sav", *_SAV),
    54: _row(
        "sav/sample.sav",
        "list(obj.attrs['column_labels'].values()) == ['character', 'numeric', 'date', "
        "'datetime', 'labeled', 'ordinal', 'time']",
        "obj.attrs['value_labels'] == {'mylabl': {1.0: 'Male', 2.0: 'Female'}, "
        "'myord': {1.0: 'low', 2.0: 'medium', 3.0: 'high'}}",
        "obj.shape == (5, 7)",
    ),
    55: _row("sav/sample.zsav", *_frame((5, 7), SAMPLE_COLS)),
    56: _row("sav/sample.por", *_frame((5, 7), [c.upper() for c in SAMPLE_COLS])),
    # IDL save file with a .sav name: the registry sends it to the idl loader, not SPSS.
    57: _row("sav/idl_struct_arrays.sav", *_IDL),
    58: _row("sav/idl_struct_arrays.sav", *_IDL),
    59: _row(
        "dta/sample.dta",
        *_frame((5, 7), SAMPLE_COLS),
        f"obj['mylabl'].tolist() == {MALE_FEMALE!r}",
        "obj['mydate'][0] == pd.Timestamp('2018-05-06')",
    ),
    60: _row(
        "dta/missing_test.dta",
        *_frame((1, 9), [f"var{i}" for i in range(1, 10)]),
        "obj.iloc[0, :8].isna().all() and obj['var9'][0] == 1.0",
    ),
    61: _row("sas7bdat/sample.sas7bdat", *_SAS),
    62: _row("sas7bdat/sample.sas7bdat", *_SAS),
    63: _row("xpt/sample.xpt", *_XPT),
    64: _row("xpt/sample.xpt", *_XPT),
    65: _row(
        "txt/ChinookDatabase.txt",
        "isinstance(obj, str) and len(obj) == 1937",
        "len(obj.splitlines()) == 24",
        "obj.splitlines()[0] == 'Chinook Database 1.4.5'",
    ),
    66: _row("txt/xlrd_sample.txt", "obj == 'This is a text file.\\n'"),
    67: _row(
        "txt/Norris.dat",
        "isinstance(obj, str) and obj.startswith('NIST/ITL StRD')",
        "load_as('csv', sep=r'\\s+', skiprows=60, header=None, names=['y', 'x']).shape == (36, 2)",
        "load_as('csv', sep=r'\\s+', skiprows=60, header=None, names=['y', 'x'])"
        ".iloc[0].tolist() == [0.1, 0.2]",
    ),
    68: _row(
        "log/Apache_2k.log",
        "len(obj.splitlines()) == 2000",
        "obj.splitlines()[0] == '[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok "
        "/etc/httpd/conf/workers2.properties'",
        "sum('[error]' in ln for ln in obj.splitlines()) == 595",
        "sum('[notice]' in ln for ln in obj.splitlines()) == 1405",
    ),
    69: _row(
        "log/OpenSSH_2k.log",
        "len(obj.splitlines()) == 2000",
        "obj.splitlines()[0] == 'Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking "
        "getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN "
        "ATTEMPT!'",
    ),
    70: _row(
        "log/logfmt.log",
        "obj.splitlines() == ['tag=first foo=1 bar=1.0', 'tag=\"second line\" bar=2.0 foo=2', "
        '\'tag="\\\\"third line\\\\"" foo=3 bar=3.0\']',
    ),
    71: _row(
        "geojson/grenada.geojson",
        "obj.shape == (1, 26)",
        "list(obj.columns)[:3] == ['flag', 'name', 'name:cs'] and obj.columns[-1] == 'geometry'",
        "'ISO3166-1:numeric' in obj.columns and obj.crs.to_epsg() == 4326",
        "obj['name'].tolist() == ['Grenada'] and obj.geom_type.tolist() == ['MultiPolygon']",
    ),
    72: _row(
        "geojson/test_tz.geojson",
        *_frame((1, 2), ["test", "geometry"]),
        "str(obj['test'][0]) == '2015-04-22 00:00:00+07:00'",
    ),
    73: _row(
        "geojson/null_geom.geojson",
        *_frame((2, 2), ["Name", "geometry"]),
        "obj['Name'].tolist() == ['Null Geometry', 'SF to NY']",
        "obj.geometry.isna().tolist() == [True, False]",
    ),
    74: _row(
        "geojson/example.topojson",
        *_frame((3, 4), ["id", "prop0", "prop1", "geometry"]),
        "obj.geom_type.tolist() == ['Point', 'LineString', 'Polygon']",
    ),
    75: _row(
        "shp/coutwildrnp.shp",
        *_frame((67, 11), SHP_COLS),
        "obj.crs.to_epsg() == 4326 and obj['NAME'][0] == 'Mount Naomi Wilderness'",
        "obj['STATE'].value_counts().to_dict() == {'CO': 54, 'UT': 13}",
        "np.allclose(obj.total_bounds, [-113.564247, 37.068981, -104.970871, 41.996277])",
    ),
    76: _row("shp/coutwildrnp.zip", *_frame((67, 11), SHP_COLS)),
    # Several non-empty KML layers: a dict of them (the empty ones are left out).
    77: _row(
        "kml/KML_Samples.kml",
        f"list(obj) == {[n for n in KML_LAYERS if 'Screen' not in n and n != 'Polygons']!r}",
        f"all(again(layer=n) is not None for n in {KML_LAYERS!r})",
    ),
    78: _row("kml/KML_Samples.kml", *_KML_PLACEMARKS, options={"layer": "Placemarks"}),
    79: _row(
        "kml/KML_Samples.kml",
        "obj['Placemarks'].shape == (3, 13)",
        f"list(obj['Placemarks'].columns) == {[*KML_COLS, 'geometry']!r}",
    ),
    80: _row(
        "kml/small_world.kmz",
        *_frame((1, 13), [*KML_COLS, "geometry"]),
        "obj.geom_type.tolist() == ['Polygon']",
    ),
    81: _row(
        "kml/cta_rail_lines.kml",
        *_frame((5, 14), [*KML_COLS, "snippet", "geometry"]),
        f"obj['Name'].tolist() == {CTA_NAMES!r}",
        "obj.geom_type.tolist() == ['MultiLineString'] * 5",
    ),
    # GPX: the default is the first non-empty of track_points, route_points, waypoints, ...
    82: _row(
        "gpx/test_gpx.gpx",
        *_TRACK_POINTS,
        f"all(again(layer=n) is not None for n in {GPX_LAYERS!r})",
    ),
    83: _row(
        "gpx/test_gpx.gpx",
        *_TRACK_POINTS,
        "again(layer='waypoints').shape == (0, 24)",
        "list(again(layer='waypoints').columns)[:3] == ['ele', 'time', 'magvar']",
    ),
    84: _row("gpx/test_gpx.gpx", *_TRACK_POINTS, options={"layer": "track_points"}),
    85: _row(
        "gpx/Mojstrovka.gpx",
        "obj.shape == (184, 25)",
        "round(obj['ele'].min(), 3) == 1614.678 and round(obj['ele'].max(), 5) == 2057.36952",
    ),
    86: _row(
        "gpx/route.gpx",
        "obj.shape == (55, 22)",
        "again(layer='tracks').shape[0] == 0 and again(layer='routes').shape[0] == 1",
    ),
    87: _row("images/camera.png", *_image("PNG", (512, 512), "L", 1)),
    88: _row("images/chelsea.png", *_image("PNG", (451, 300), "RGB", 1)),
    89: _row("images/astronaut.png", *_image("PNG", (512, 512), "RGB", 1)),
    90: _row("images/rocket.jpg", *_image("JPEG", (640, 427), "RGB", 1)),
    91: _row("images/hubble_deep_field.jpg", *_image("JPEG", (1000, 872), "RGB", 1)),
    92: _row(
        "images/no_time_for_that_tiny.gif",
        *_image("GIF", (14, 25), "P", 24),
        "(obj.seek(23), obj.tell())[1] == 23",
    ),
    93: _row(
        "images/multipage.tif",
        *_image("TIFF", (10, 15), "L", 2),
        "(obj.seek(1), obj.tell())[1] == 1",
    ),
    94: _row("images/palette_color.png", *_image("PNG", (10, 10), "P", 1)),
    95: _row(
        "pdf/minimal-document.pdf",
        _PDF_PAGES.format(1),
        "obj.startswith('Lorem ipsum dolor sit amet, consetetur s')",
    ),
    96: _row(
        "pdf/pdflatex-4-pages.pdf",
        _PDF_PAGES.format(4),
        "obj.startswith('Hello, here is some text without a meani')",
    ),
    97: _row(
        "pdf/multicolumn.pdf",
        _PDF_PAGES.format(3),
        "obj.splitlines()[0] == 'Two-Column Document with Lorem Ipsum'",
    ),
    98: _row(_PW_PDF, raises=("libreoffice-writer-password.pdf", "encrypted", "password=")),
    99: _row(
        _PW_PDF,
        _PDF_PAGES.format(1),
        "obj.startswith('Lorem ipsum dolor sit amet, co')",
        options={"password": "openpassword"},
    ),
    100: _row(
        "docx/test.docx",
        "obj.splitlines() == ['python-docx was here!', 'python-docx was here too!']",
        "md_tables(obj) == []",
    ),
    101: _row(
        "docx/blk-paras-and-tables.docx",
        "[ln for ln in obj.splitlines() if ln and not ln.startswith('|')][0] == "
        "'Lorem ipsum dolor sit amet, consectetur adipiscing elit.'",
        "md_tables(obj) == [(2, 2), (1, 1), (1, 1)]",
    ),
    102: _row("docx/tbl-having-tables.docx", "md_tables(obj) == [(2, 2), (3, 3), (2, 4)]"),
    103: _row(
        "arff/iris.arff",
        *_frame((150, 5), ["sepallength", "sepalwidth", "petallength", "petalwidth", "class"]),
        "sorted(obj['class'].unique()) == ['Iris-setosa', 'Iris-versicolor', 'Iris-virginica']",
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Load every corpus row once in the runtime Python and return the JSON results."""
    root = tmp_path_factory.mktemp("shared-blobs")
    cases = {
        f"row{i}": file_case(
            SHARED / row["file"], root, f"row{i}", EXPECT[i]["options"], checks=EXPECT[i]["checks"]
        )
        for i, row in enumerate(ROWS)
    }
    return run_cases(cases, SHARED, root)


def test_every_manifest_row_has_an_expectation() -> None:
    """The expectation table covers exactly the manifest rows, each naming the row's file."""
    assert len(ROWS) == 104
    assert sorted(EXPECT) == list(range(len(ROWS)))
    assert [EXPECT[i]["file"] for i in range(len(ROWS))] == [r["file"] for r in ROWS]
    assert all(EXPECT[i]["checks"] or EXPECT[i]["raises"] for i in EXPECT)


@pytest.mark.parametrize(
    "index", range(len(ROWS)), ids=[f"{r['file']}#{i}" for i, r in enumerate(ROWS)]
)
def test_manifest_row(results: dict, index: int) -> None:
    """The registry's loader for this file reproduces the row's facts or fails clearly."""
    assert_case(results["cases"][f"row{index}"], EXPECT[index]["raises"], ROWS[index]["file"])
