"""The system prompt's file list: a wide table's preview keeps the line saying how it was read."""

from __future__ import annotations

from datetime import UTC, datetime

from labbot.files.meta.base import FileRecord
from labbot.llm.prompts import MAX_PREVIEW_CHARS, clip_preview, system_prompt

NOW = datetime(2024, 4, 1, 12, 0, tzinfo=UTC)
COLUMNS = ", ".join(f"Umsatz Filiale {i:02d}: float64" for i in range(40))
READ = (
    "Read: read as cp1252, sep=';', decimal=',', 3 title rows skipped, dropped total row "
    "'Summe', Umsatz Filiale 00: numbers (decimal ',', thousands '.'), unit € removed — "
    "override: load_file(<file>, encoding='utf-8', sep=',', decimal='.', skiprows=3 (lines "
    "before the header), keep_totals=True, convert=False)"
)
WIDE = f"DataFrame 120 rows × 40 columns ({COLUMNS})\n{READ}"


def test_a_wide_tables_read_line_survives_the_cut() -> None:
    """The column list is trimmed, the decisions line is kept whole, the total fits."""
    assert len(WIDE) > MAX_PREVIEW_CHARS
    clipped = clip_preview(WIDE)
    assert len(clipped) <= MAX_PREVIEW_CHARS
    first, second = clipped.split("\n")
    assert first.startswith("DataFrame 120 rows × 40 columns (Umsatz Filiale 00: float64")
    assert first.endswith("…")
    assert second == READ


def test_a_short_preview_is_untouched_and_a_dict_keeps_each_read_line() -> None:
    """Nothing changes under the limit; every sheet's Read line survives in a dict preview."""
    assert clip_preview("DataFrame 3 rows × 2 columns (a: int64, b: str)") == (
        "DataFrame 3 rows × 2 columns (a: int64, b: str)"
    )
    sheets = "\n".join(
        [
            "dict with 2 keys:",
            f"  'A': DataFrame 9 rows × 40 columns ({COLUMNS})",
            "Read: 2 title rows skipped — override: load_file(<file>, skiprows=2)",
            f"  'B': DataFrame 9 rows × 40 columns ({COLUMNS})",
            "Read: decimal=',' — override: load_file(<file>, decimal='.')",
        ]
    )
    clipped = clip_preview(sheets)
    assert len(clipped) <= MAX_PREVIEW_CHARS
    lines = clipped.split("\n")
    assert lines[2] == "Read: 2 title rows skipped — override: load_file(<file>, skiprows=2)"
    assert lines[4] == "Read: decimal=',' — override: load_file(<file>, decimal='.')"


def test_the_system_prompt_shows_the_clipped_preview() -> None:
    """The file list in the prompt carries the decisions line of a wide table."""
    record = FileRecord(
        id="f1", user="u", name="umsatz.csv", kind="csv", size=2048, sha256="0" * 64,
        source="upload", created_at=NOW, expires_at=None, preview=WIDE,
    )  # fmt: skip
    prompt = system_prompt([record], now=NOW, timezone="UTC")
    assert "\n  " + READ in prompt
    assert "keep_totals=True, convert=False)" in prompt
