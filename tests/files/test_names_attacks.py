"""Names that survived the cleaner: blank-looking symbols that push an extension out of
sight, and Windows device names hidden behind a second dot or a superscript digit."""

from __future__ import annotations

import pytest

from labbot.files.names import clean_filename


@pytest.mark.parametrize("blank", ["\u2800", "\U0001d159", "\U00016fe4"])
def test_blank_glyphs_cannot_hide_an_extension(blank: str) -> None:
    """BRAILLE PATTERN BLANK and kin are symbols, not spaces or format characters: thirty of
    them between "report.pdf" and ".exe" showed as "report.pdf" and a gap."""
    assert clean_filename(f"report.pdf{blank * 30}.exe") == "report.pdf.exe"
    assert clean_filename(f"{blank * 5}.csv") == "csv"  # as " .csv" is


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("con.tar.gz", "con_.tar.gz"),
        ("LPT1.data.csv", "LPT1_.data.csv"),
        ("nul", "nul_"),
        ("COM\u00b9.txt", "COM\u00b9_.txt"),
        ("aux.txt", "aux_.txt"),
        ("console.txt", "console.txt"),
    ],
)
def test_windows_device_names_are_renamed_whatever_follows(raw: str, cleaned: str) -> None:
    """Windows takes "con.tar.gz" and "COM¹.txt" for devices (a download cannot be saved)."""
    assert clean_filename(raw) == cleaned
