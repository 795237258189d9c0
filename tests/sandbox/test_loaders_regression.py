"""No format fixture reads worse than before the messy-table work (issue 19).

tests/fixtures/base_loads.json holds what every in-repo fixture (and, when
LABBOT_SHARED_FIXTURES is set, every shared one) loaded as before: type, shape and dtypes. A
load now must give the same type and shape, and each column the same dtype or a better one (a
text column that became numbers or dates); a file whose reading changed on purpose is listed in
CHANGED with the reason.
"""

from __future__ import annotations

import json

import pytest

from tests.sandbox.loadshapes import BASE, fixture_files, load_shapes

BASELINE: dict[str, dict] = json.loads(BASE.read_text(encoding="utf-8"))
TEXT_DTYPES = {"object", "str", "string"}

# Files whose reading changed on purpose: key -> why the new reading is the better one.
CHANGED: dict[str, str] = {
    "shared/dta/missing_test.dta": "var1's only value label is on its missing code .a, so it"
    " stays a number column (all missing, counted in the decisions), not an empty category",
}


def worse(before: dict, after: dict, where: str = "") -> list[str]:
    """How `after` reads worse than `before` (empty when it is as good or better)."""
    if before["type"] != after["type"]:
        return [f"{where}: was {before['type']}, now {after['type']}"]
    if "shape" in before and before["shape"] != after["shape"]:
        return [f"{where}: shape was {before['shape']}, now {after['shape']}"]
    problems = []
    for col, dtype in before.get("dtypes", {}).items():
        new = after["dtypes"].get(col)
        if new is None:
            problems.append(f"{where}: column {col!r} is gone")
        elif new != dtype and not (dtype in TEXT_DTYPES and new not in TEXT_DTYPES):
            problems.append(f"{where}: column {col!r} was {dtype}, now {new}")
    items = before.get("items")
    if isinstance(items, dict):
        for key, value in items.items():
            if key not in after["items"]:
                problems.append(f"{where}: key {key!r} is gone")
            else:
                problems += worse(value, after["items"][key], f"{where}[{key!r}]")
    elif isinstance(items, list):
        if len(items) != len(after["items"]):
            return [f"{where}: {len(items)} items, now {len(after['items'])}"]
        for i, value in enumerate(items):
            problems += worse(value, after["items"][i], f"{where}[{i}]")
    return problems


@pytest.fixture(scope="module")
def now(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return load_shapes(fixture_files(), tmp_path_factory.mktemp("regression"))


def test_no_fixture_reads_worse_than_the_baseline(now: dict[str, dict]) -> None:
    """Every fixture in the baseline loads with the same type and shape and no column lost or
    turned back into text; purposeful changes are listed in CHANGED."""
    checked = [key for key in now if key in BASELINE and key not in CHANGED]
    assert any(key.startswith("formats/") for key in checked)
    problems = [p for key in checked for p in worse(BASELINE[key], now[key], key)]
    assert not problems, "\n".join(problems)


def test_the_baseline_covers_every_in_repo_fixture() -> None:
    """Every in-repo format fixture has a recorded baseline (a new one needs recording)."""
    missing = [k for k in fixture_files() if k.startswith("formats/") and k not in BASELINE]
    assert not missing, f"record with python -m tests.sandbox.loadshapes --record: {missing}"


def test_changed_files_are_in_the_baseline() -> None:
    """CHANGED names only files the baseline knows (no stale entries)."""
    assert set(CHANGED) <= set(BASELINE), set(CHANGED) - set(BASELINE)
