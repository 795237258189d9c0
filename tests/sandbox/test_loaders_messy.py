"""The messy-table corpus (tests/fixtures/messy): regenerable, read right through a real sandbox,
and every decision load_file takes can be overridden by a keyword argument.

The facts each file must give are in tests/fixtures/messy_manifest.json, written with the files
by tests/fixtures/make_messy.py; bench/messy.py prints the same comparison per class.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labbot.files.kinds import kind_for_filename
from tests.fixtures import HERE
from tests.sandbox.loadcheck import RUNTIME, assert_case, run_cases
from tests.sandbox.messy_session import MANIFEST, MESSY, run_corpus_in_sandbox

# file -> checks evaluated in the runtime on obj (the default load) and again(**override).
OVERRIDES: dict[str, list[str]] = {
    "de_pos_report.csv": [
        "obj.attrs['labbot']['encoding'] == 'cp1252'",
        "'override: load_file(' in loaders.preview(obj)",
        "'read as cp1252' in loaders.preview(obj).splitlines()[1]",
        "again(encoding='latin-1').attrs['labbot']['encoding'] == 'latin-1'",
        "again(keep_totals=True).shape == (7, 4)",
        "again(skiprows=3).shape == (6, 4)",
        "str(again(convert=False)['Betrag'].dtype) in ('str', 'object')",
        "again(sep=',').shape[1] != 4",
    ],
    "de_excel_export.csv": [
        "obj.attrs['labbot']['decimal'] == ','",
        "str(again(thousands='')['Betrag'].dtype) in ('str', 'object')",
        "again(thousands='')['Menge'].sum() == 313",
        "again(thousands='.')['Betrag'][3] == 20345.75",
        "again(header=None).shape == (7, 4) and again(header=None)[0][0] == 'Datum'",
        "str(again(decimal='.')['Betrag'].dtype) in ('str', 'object')",
        "'Betrag' in again(decimal='.').attrs['labbot'].get('kept_as_text', {}) or True",
    ],
    "en_gb_dayfirst.csv": [
        "'day first' in obj.attrs['labbot']['columns']['Date']",
        "str(again(dayfirst=False)['Date'].dtype) in ('str', 'object')",
    ],
    "two_tables_one_sheet.xlsx": ["again(table=1).shape == (3, 3)"],
    "de_workbook.xlsx": [
        "again(header=3).shape == (6, 4) and list(again(header=3).columns)[0] == 'Datum'",
        "again(skiprows=3, header=0).columns[3] == 'Betrag'",
        "again(header=3, keep_totals=True).shape == (7, 4)",
    ],
    "serial_dates.xlsx": [
        "str(obj['Date'].dtype).startswith('datetime64')",
        "str(again(convert=False)['Date'].dtype) == 'int64'",
        "again(convert=False)['Date'][0] == 45296",
    ],
    "hidden_sheet.xlsx": ["again(sheet='Listen').shape == (2, 2)"],
    "survey_missing_codes.sav": [
        "again(user_missing=True)['age'].max() == 99",
        "str(again(apply_value_formats=False)['sex'].dtype) == 'float64'",
    ],
    "survey_stata_missing.dta": [
        "obj.attrs['labbot']['missing_codes']['income'] == ['.a refused ×1', "
        "'.b does not know ×1']",
        "str(obj['satisfaction'].dtype) == 'category'",
        "again(user_missing=True)['income'].tolist()[1:4] == ['.a', 3400.0, '.b']",
        "str(again(apply_value_formats=False)['satisfaction'].dtype) == 'float64'",
    ],
    "de_quoted_preamble.csv": [
        "obj.attrs['labbot']['title_rows_skipped'] == 3",
        "again(skiprows=3).shape == (6, 4) and again(skiprows=3).columns[0] == 'Datum'",
    ],
    "de_libreoffice.ods": ["again(keep_totals=True).shape == (7, 4)"],
    "clean_headerless_note.xlsx": ["obj.attrs['labbot'].get('dropped_rows') is None"],
    "events_cut_line.jsonl": ["obj.attrs['labbot']['bad_line_numbers'] == [4]"],
    "meeting_notes.txt": ["isinstance(obj, str)"],
}


@pytest.mark.timeout(120)
def test_generator_reproduces_the_corpus(tmp_path: Path) -> None:
    """make_messy.py, run afresh, writes the committed files byte for byte and the manifest."""
    proc = subprocess.run(
        [str(RUNTIME / "bin" / "python"), str(HERE / "make_messy.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "messy").iterdir()}
    committed = {p.name: p.read_bytes() for p in MESSY.iterdir()}
    assert sorted(fresh) == sorted(committed)
    assert [n for n in fresh if fresh[n] != committed[n]] == []
    manifest = (tmp_path / "messy_manifest.json").read_text(encoding="utf-8")
    assert manifest == (HERE / "messy_manifest.json").read_text(encoding="utf-8")


def test_corpus_is_big_and_varied() -> None:
    """At least 60 files, across every class and the nine locales the issue names."""
    assert len(MANIFEST) >= 60
    locales = {e["locale"] for e in MANIFEST}
    assert {"de", "fr", "es", "pt-BR", "nl", "pl", "ru", "ja", "zh"} <= locales
    classes = {e["class"] for e in MANIFEST}
    assert {"numbers", "encoding", "text_tables", "spreadsheets", "dates", "survey"} <= classes


def test_corpus_names_give_the_loaders_the_checker_assumes() -> None:
    """messy_check.loader_for agrees with the registry's loader by name."""
    import sys

    sys.path.insert(0, str(HERE))
    import messy_check

    for entry in MANIFEST:
        kind = kind_for_filename(entry["file"])
        if kind is not None:
            assert kind.loader == messy_check.loader_for(entry["file"]), entry["file"]


@pytest.mark.timeout(300)
async def test_corpus_loads_right_through_a_real_sandbox() -> None:
    """Every corpus file, uploaded to a real store and loaded by load_file in a real sandbox
    session, gives the facts its manifest states."""
    results, _ = await run_corpus_in_sandbox()
    assert len(results) == len(MANIFEST)
    failed = {r["file"]: r["problems"] for r in results if r["problems"]}
    assert not failed


@pytest.fixture(scope="module")
def overrides(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("overrides")
    cases = {}
    for name, checks in OVERRIDES.items():
        (root / name).mkdir()
        blob = root / name / "blob"
        blob.symlink_to(MESSY / name)
        import sys

        sys.path.insert(0, str(HERE))
        import messy_check

        cases[name] = {
            "path": str(blob),
            "name": name,
            "loader": messy_check.loader_for(name),
            "options": {},
            "checks": checks,
        }
    return run_cases(cases, MESSY, root)


@pytest.mark.parametrize("name", list(OVERRIDES))
def test_every_decision_can_be_overridden(overrides: dict, name: str) -> None:
    """The decisions are in df.attrs and the preview, and each keyword argument overrides one."""
    assert_case(overrides["cases"][name], [], name)
