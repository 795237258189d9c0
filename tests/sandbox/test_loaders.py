"""The sandbox loaders read every in-repo format fixture into the object its kind promises.

The facts each load must reproduce (shape, columns, values, or the LoadError's words) are in
tests/fixtures/manifest.json, written with the fixtures by tests/fixtures/make_fixtures.py; the
synthetic cases below cover encodings, delimiters, archives and guards. One subprocess of the
runtime Python loads everything (tests/sandbox/loadcheck.py); each test asserts on its case.
The shared real-file corpus, when present, is checked by test_loaders_shared.py.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.fixtures import FORMATS, HERE, MANIFEST
from tests.sandbox.loadcheck import RUNTIME, assert_case, file_case, run_cases

LOADS = [
    pytest.param(entry, i, id=f"{entry['file']}#{i}")
    for entry in MANIFEST
    for i in range(len(entry["loads"]))
]


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _zip_bomb() -> bytes:
    """A tiny zip whose central directory declares 768 MiB uncompressed."""
    data = bytearray(_zip_bytes({"big.csv": b"a,b\n1,2\n"}))
    struct.pack_into("<I", data, data.index(b"PK\x01\x02") + 24, 768 << 20)
    return bytes(data)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_TWO_CSV = {"a.csv": b"x,y\n1,2\n", "notes/readme.txt": b"hello"}

# Synthetic cases the corpus lacks: name, bytes, loader, options, checks, raises.
EXTRA: dict[str, tuple[str, bytes, str, dict, list[str], list[str]]] = {
    "latin1_semicolon": (
        "ventes.csv",
        "nom;ville;montant\nJosé;Zürich;1,5\nRené;Köln;2\n".encode("latin-1"),
        "csv",
        {},
        ["list(obj.columns) == ['nom', 'ville', 'montant']", "obj['ville'][0] == 'Zürich'"],
        [],
    ),
    "gzip_pipe_comments": (
        "data.csv.gz",
        gzip.compress(b"# exported 2024\n# by tool\na|b|c\n1|2|3\n4|5|6\n"),
        "csv",
        {},
        ["obj.shape == (2, 3)", "obj['c'].tolist() == [3, 6]"],
        [],
    ),
    "hash_header": (
        "variants.tsv",
        b"##meta=1\n#CHROM\tPOS\tID\n1\t100\trs1\n",
        "tsv",
        {},
        ["list(obj.columns) == ['CHROM', 'POS', 'ID'] and obj['POS'][0] == 100"],
        [],
    ),
    "utf16_text": (
        "notes.txt",
        "héllo\nwörld\n".encode("utf-16"),
        "text",
        {},
        ["obj == 'héllo\\nwörld\\n'"],
        [],
    ),  # fmt: skip
    "yaml_local_tags": (
        "cfg.yaml",
        b"a: !custom {x: 1}\nb: !!python/tuple [1, 2]\nc: !thing scalar\n",
        "yaml",
        {},
        ["obj == {'a': {'x': 1}, 'b': [1, 2], 'c': 'scalar'}"],
        [],
    ),
    "xml_not_records": (
        "cfg.xml",
        b"<config version='2'>just text</config>",
        "xml",
        {},
        ["obj == {'config': {'@version': '2', '#text': 'just text'}}"],
        [],
    ),
    "zip_single": (
        "one.zip",
        _zip_bytes({"folder/sales.csv": b"region,amount\nnorth,10\nsouth,20\n"}),
        "zip",
        {},
        ["obj.shape == (2, 2) and obj['amount'].sum() == 30"],
        [],
    ),
    "zip_several": (
        "two.zip",
        _zip_bytes(_TWO_CSV),
        "zip",
        {},
        ["list(obj) == ['a.csv', 'notes/readme.txt']", "obj['a.csv'].shape == (1, 2)"],
        [],
    ),
    "zip_traversal": (
        "evil.zip",
        _zip_bytes({"../../escape.txt": b"boo", "/abs/x.bin": b"\x00\x01"}),
        "zip",
        {},
        [
            "obj == {'../../escape.txt': 'boo', '/abs/x.bin': b'\\x00\\x01'}",
            "not os.path.exists(os.path.join(os.path.dirname(path), '..', 'escape.txt'))",
        ],
        [],
    ),
    "zip_bomb": ("bomb.zip", _zip_bomb(), "zip", {}, [], ["bomb.zip", "512 MiB"]),
    "tar_several": (
        "two.tar.gz",
        _tar_bytes({**_TWO_CSV, "../up.txt": b"x"}),
        "tar",
        {},
        ["sorted(obj) == ['../up.txt', 'a.csv', 'notes/readme.txt']"],
        [],
    ),
    "corrupt_parquet": (
        "broken.parquet",
        b"PAR1 not really",
        "parquet",
        {},
        [],
        ["broken.parquet could not be read as parquet"],
    ),  # fmt: skip
    "raw_bytes": ("blob.bin", b"\x00\x01\x02", "bytes", {}, ["obj == b'\\x00\\x01\\x02'"], []),
    # Uploaded before the host kept a table extension for legacy code pages: recorded as
    # binary, yet a file named like a table that decodes as one is read as a table.
    "bytes_cp1251_csv": (
        "отчёт.csv",
        "Товар;Сумма\nЧай;1 234,50\nКофе;87,25\nСахар;15,00\n".encode("cp1251"),
        "bytes",
        {},
        [
            "obj.shape == (3, 2) and obj['Товар'][0] == 'Чай'",
            "obj['Сумма'].tolist() == [1234.5, 87.25, 15.0]",
            "obj.attrs['labbot']['encoding'] == 'cp1251'",
        ],
        [],
    ),
    "bytes_named_csv_with_nul": (
        "dump.csv",
        b"a,b\n1,\x002\n3,4\n",
        "bytes",
        {},
        ["isinstance(obj, bytes)"],
        [],
    ),  # fmt: skip
    "bytes_cp1252_prose_txt": (
        "notes.txt",
        "Café notes: we met at noon.\nNothing else.\n".encode("cp1252"),
        "bytes",
        {},
        ["isinstance(obj, bytes) and obj.startswith(b'Caf')"],
        [],
    ),
    "bytes_options_refused": (
        "blob.bin",
        b"\x00\x01",
        "bytes",
        {"sep": ";"},
        [],
        ["the bytes loader takes no options"],
    ),  # fmt: skip
    # A wide table's preview keeps its decisions line whole (the columns are cut first).
    "wide_decimal_comma_preview": (
        "breit.csv",
        (
            "Umsatzbericht\n\n"
            + ";".join(f"Filiale Nummer {i}" for i in range(40))
            + "\n"
            + "".join(";".join(f"{r}.{i:03d},5{r}" for i in range(40)) + "\n" for r in range(1, 4))
        ).encode(),
        "csv",
        {},
        [
            "obj.shape == (3, 40) and obj['Filiale Nummer 1'][0] == 1001.51",
            "len(loaders.preview(obj)) <= 600",
            "loaders.preview(obj).splitlines()[-1].startswith('Read: ')",
            "loaders.preview(obj).splitlines()[-1].endswith('convert=False)')",
        ],
        [],
    ),
}

# Expressions about preview(), evaluated in the runtime; each must be True.
PREVIEW_CHECKS = [
    "'2 rows × 2 columns' in preview(df) and 'a: int64' in preview(df) and 'b: str' in preview(df)",
    "len(preview(wide)) <= 600 and preview(wide).endswith('…')",
    "preview({'s1': df, 's2': wide}).splitlines()[0] == 'dict with 2 keys:'",
    "preview({'s1': df, 's2': wide}).splitlines()[1].startswith(\"  's1': DataFrame 2 rows\")",
    "len(preview({'s1': df, 's2': wide}).splitlines()) == 3",
    "preview(np.zeros((3, 4))) == 'ndarray shape=(3, 4) dtype=float64'",
    "preview(Boom()).startswith('Boom')",
    "len(preview('x' * 5000, max_chars=100)) <= 100",
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Load every fixture load and synthetic case once in the runtime Python."""
    root = tmp_path_factory.mktemp("blobs")
    cases: dict[str, dict] = {}
    for entry in MANIFEST:
        for i, spec in enumerate(entry["loads"]):
            key = f"{entry['file']}#{i}"
            cases[key] = file_case(
                FORMATS / entry["file"], root, key.replace("/", "_"), spec["options"], describe=True
            )
    for key, (name, data, loader, options, checks, _raises) in EXTRA.items():
        (root / key).mkdir()
        blob = root / key / "blob"
        blob.write_bytes(data)
        cases[key] = {
            "path": str(blob),
            "name": name,
            "loader": loader,
            "options": options,
            "checks": checks,
        }
    return run_cases(cases, FORMATS, root, PREVIEW_CHECKS)


@pytest.mark.parametrize(("entry", "index"), LOADS)
def test_fixture_load(results: dict, entry: dict, index: int) -> None:
    """The registry's loader for this fixture gives back the manifest's facts or fails clearly."""
    spec = entry["loads"][index]
    result = results["cases"][f"{entry['file']}#{index}"]
    assert_case(result, spec.get("raises", []), entry["file"], spec.get("expect"))


@pytest.mark.parametrize("key", list(EXTRA))
def test_synthetic_case(results: dict, key: str) -> None:
    """Encodings, delimiters, comments, tags, archives and guards the fixtures lack behave."""
    name, _data, _loader, _options, _checks, raises = EXTRA[key]
    assert_case(results["cases"][key], raises, name)


def test_preview(results: dict) -> None:
    """preview() summarises a DataFrame, a dict of DataFrames and an array, short and safe."""
    assert [expr for expr, _ in results["previews"]] == PREVIEW_CHECKS  # each one ran
    failed = [(expr, ok) for expr, ok in results["previews"] if ok is not True]
    assert not failed


def test_module_import_is_cheap(results: dict) -> None:
    """Importing the loaders module imports no heavy library (each loader imports lazily)."""
    assert results["heavy_on_import"] == []


def test_registry_loaders_are_all_implemented(results: dict) -> None:
    """Every loader the registry names is one the runtime module dispatches."""
    from labbot.files.kinds import KINDS

    assert {k.loader for k in KINDS} <= set(results["names"])


def test_every_loader_kind_has_a_fixture() -> None:
    """Every loader reads at least one in-repo fixture, but raw bytes and SAS (sas7bdat has no
    open writer; the shared corpus has one)."""
    from labbot.files.kinds import KINDS, kind_by_name

    covered = {kind_by_name(e["kind"]).loader for e in MANIFEST if e["loads"]}
    assert {k.loader for k in KINDS} - covered <= {"bytes", "sas"}


@pytest.mark.timeout(300)
def test_generator_reproduces_the_manifest(tmp_path: Path) -> None:
    """make_fixtures.py, run afresh, writes the committed manifest and the same set of files
    (those marked committed-only come from writers the runtime lacks and stay as they are)."""
    python = RUNTIME / "bin" / "python"
    proc = subprocess.run(
        [str(python), str(HERE / "make_fixtures.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))["files"]
    assert fresh == MANIFEST
    made = {
        p.relative_to(tmp_path / "formats").as_posix()
        for p in (tmp_path / "formats").rglob("*")
        if p.is_file()
    }
    generated = {e["file"] for e in MANIFEST if e["made_by"] == "generated"}
    assert made == generated
