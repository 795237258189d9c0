"""The log cannot be forged: whatever a message or its arguments hold (newlines, carriage
returns, ESC sequences, bidi controls), each record is one line in the text format, a
traceback's lines are indented, and the JSON format's events carry no control characters."""

from __future__ import annotations

import json
import logging
import re

import pytest

from labbot.logs import configure_logging, escape_controls

FORGED = "2026-01-01 00:00:00,000 CRITICAL labbot.admin forged=1"
HOSTILE = f"x\n{FORGED}\r\x1b[2J\x1b]52;c;ZXZpbA==\x07\u202etxt.exe\x85{FORGED}\u2028{FORGED}"
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) labbot\.test ")


def controls(text: str) -> list[str]:
    return [c for c in text if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u2028"]


def log_everything() -> None:
    log = logging.getLogger("labbot.test")
    log.info("executor.bad_reply host=%s error=%s", "w3", HOSTILE)
    log.warning(HOSTILE)  # a message with no arguments
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        log.exception("worker.failed name=%r", HOSTILE)


def test_text_records_stay_on_their_line(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Three records make three lines starting with their time; a traceback's lines follow
    indented; nothing at column 0 is forged and no control character is written."""
    configure_logging("INFO")
    log_everything()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert [line for line in lines if not line.startswith("    ")] == [
        line for line in lines if RECORD.match(line)
    ]
    assert sum(1 for line in lines if RECORD.match(line)) == 3, err
    assert not any(line.startswith(FORGED) for line in lines)
    assert not controls(err.replace("\n", "")), sorted(set(map(hex, map(ord, controls(err)))))
    assert "\\x0a" + FORGED in err and "\\x1b[2J" in err and "\\u202e" in err
    assert "Traceback (most recent call last):" in err  # the traceback is still there


def test_urls_in_any_record_are_masked(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Whatever logger writes a URL (a library's, an error's text), its userinfo and query
    values are masked in both formats."""
    for fmt in ("text", "json"):
        configure_logging("INFO", fmt)
        logging.getLogger("somelib").warning(
            "GET %s failed", "http://ops:PW-77@10.0.0.1:8080/v1/models?api-key=QK-55"
        )
        err = capsys.readouterr().err
        assert "http://***:***@10.0.0.1:8080/v1/models?api-key=***" in err, err
        assert "PW-77" not in err and "QK-55" not in err


def test_json_events_carry_no_control_characters(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """One JSON object per line; the events read as the text format's."""
    configure_logging("INFO", "json")
    log_everything()
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 3
    for entry in entries:
        assert not controls(entry["event"]), entry["event"]
    assert entries[0]["event"] == f"executor.bad_reply host=w3 error={escape_controls(HOSTILE)}"
