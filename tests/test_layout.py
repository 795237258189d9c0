"""The shape of the code: modules stay small, and each package's public names are listed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

LABBOT = Path(__file__).resolve().parents[1] / "labbot"
CEILING = 600  # lines; about 400 is the aim (style anchors)


def test_no_module_is_past_the_ceiling() -> None:
    """Every module of labbot has at most CEILING lines."""
    long = {
        str(path.relative_to(LABBOT)): n
        for path in LABBOT.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > CEILING
    }
    assert long == {}


@pytest.mark.parametrize("package", ["labbot.files", "labbot.sandbox", "labbot.sandbox.jail"])
def test_public_names_are_listed_sorted_and_real(package: str) -> None:
    """A package's __all__ is sorted and every name in it exists."""
    module = importlib.import_module(package)
    names = module.__all__
    assert names == sorted(names)
    assert [n for n in names if not hasattr(module, n)] == []
