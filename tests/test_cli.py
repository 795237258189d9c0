"""The `labbot` CLI on the embedded defaults: files add/list/show/get/rm/sweep and doctor."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from labbot.cli import cli


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LABBOT_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "sales.csv"
    path.write_text("region,amount\nnorth,10\nsouth,20\n")
    return path


def test_add_prints_the_upload_confirmation(run, csv_file: Path) -> None:
    """files add shows name, type, size, id, expiry and the user's count."""
    out = run("files", "add", str(csv_file), "--user", "42").output
    assert "sales.csv" in out and "CSV" in out and "Your files: 1/20" in out
    assert "Expires: in 2 days" in out and "load_file('" in out


def test_json_rows_have_one_shape(run, csv_file: Path) -> None:
    """add, list and show --json print the same record for the same file."""
    added = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)
    listed = json.loads(run("files", "list", "-u", "42", "--json").output)
    shown = json.loads(run("files", "show", listed[0]["id"], "-u", "42", "--json").output)
    assert added[0]["file"] == listed[0] == shown
    assert shown["name"] == "sales.csv" and shown["size"] == csv_file.stat().st_size
    assert json.loads(run("files", "list", "-u", "other", "--json").output) == []


def test_get_writes_the_exact_bytes(run, csv_file: Path, tmp_path: Path) -> None:
    """files get writes the stored bytes to a path and to stdout."""
    file_id = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)[0][
        "file"
    ]["id"]
    run("files", "get", file_id, "-u", "42", "-o", str(tmp_path / "copy.csv"))
    assert (tmp_path / "copy.csv").read_bytes() == csv_file.read_bytes()
    assert run("files", "get", file_id, "-u", "42", "-o", "-").stdout_bytes == csv_file.read_bytes()


def test_rm_then_show_is_one_clear_error(run, csv_file: Path) -> None:
    """After rm, show fails with one line and exit 1, no traceback."""
    file_id = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)[0][
        "file"
    ]["id"]
    assert "Deleted sales.csv" in run("files", "rm", file_id, "-u", "42").output
    result = run("files", "show", file_id, "-u", "42", code=1)
    assert result.output.startswith("Error: No file with id") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_another_users_file_is_not_found(run, csv_file: Path) -> None:
    """A file id of another user is refused as not found."""
    file_id = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)[0][
        "file"
    ]["id"]
    assert "No file with id" in run("files", "get", file_id, "-u", "7", "-o", "-", code=1).output


def test_eviction_is_announced(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MAX_FILES_PER_USER=1 the second add names the file it removed."""
    monkeypatch.setenv("MAX_FILES_PER_USER", "1")
    for name in ("first.txt", "second.txt"):
        (tmp_path / name).write_text(name)
    run("files", "add", str(tmp_path / "first.txt"), "-u", "1")
    out = run("files", "add", str(tmp_path / "second.txt"), "-u", "1").output
    assert "first.txt" in out and "removed" in out and "Your files: 1/1" in out


def test_oversize_file_is_refused_in_one_line(run, tmp_path, monkeypatch) -> None:
    """A file over MAX_FILE_SIZE_MB fails with the limit in the message."""
    monkeypatch.setenv("MAX_FILE_SIZE_MB", "0.001")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    result = run("files", "add", str(big), "-u", "1", code=1)
    assert "too large" in result.output and "Traceback" not in result.output


def test_invalid_setting_is_one_line_naming_it(run, monkeypatch) -> None:
    """A bad setting stops the command with its name."""
    monkeypatch.setenv("MAX_FILES_PER_USER", "zero")
    result = run("files", "list", "-u", "1", code=1)
    assert "MAX_FILES_PER_USER" in result.output and "Traceback" not in result.output


def test_sweep_reports_json(run) -> None:
    """files sweep --json prints the counts."""
    summary = json.loads(run("files", "sweep", "--json").output)
    assert summary == {
        "expired_files": 0,
        "expired_bytes": 0,
        "orphan_blobs": 0,
        "partial_files": 0,
        "missing_blobs": 0,
    }


def test_doctor_checks_settings_and_storage(run, monkeypatch) -> None:
    """doctor passes on defaults and masks secrets."""
    monkeypatch.setenv("DISCORD_TOKEN", "MTAxNjk4NzY1NDMyMTA.GhIjKl.super-secret-token")
    checks = json.loads(run("doctor", "--json").output)
    assert {c["check"] for c in checks} >= {
        "settings",
        "data dir",
        "database",
        "sandbox",
        "discord token",
        "discord invite",
    }
    assert all(c["ok"] for c in checks), checks
    assert "super-secret-token" not in json.dumps(checks)


def test_doctor_reports_a_malformed_discord_token(run, monkeypatch) -> None:
    """A token that is not three dot-separated parts fails the check with the fix, exit 1."""
    monkeypatch.setenv("DISCORD_TOKEN", "oops")
    result = run("doctor", "--json", code=1)
    failed = [c for c in json.loads(result.output) if not c["ok"]]
    assert [c["check"] for c in failed] == ["discord token"]
    assert "Developer Portal" in failed[0]["detail"] and "oops" not in result.output


def test_exec_strips_control_sequences(run) -> None:
    """`labbot exec` prints output, values, tracebacks and notes without escape sequences
    (OSC 52, ESC c, 8-bit CSI, bell, carriage return); --json keeps them escaped."""
    evil = r"'A\x1b]52;c;ZXZpbA==\x07B\x1bcC\x9b31mD\rE\tF'"
    code = f"print({evil}); s = {evil}; print(s, file=__import__('sys').stderr); raise KeyError(s)"
    result = run("exec", "--user", "7", code, code=1)
    for stream in (result.stdout, result.stderr):
        bad = [c for c in stream if ord(c) < 32 and c not in "\t\n" or 0x7F <= ord(c) < 0xA0]
        assert not bad, sorted(set(map(hex, map(ord, bad))))
    assert "ABCD\nE\tF" in result.stdout and "ABCD\nE\tF" in result.stderr
    raw = run("exec", "--user", "7", "--json", f"print({evil})").stdout
    assert "\x1b" not in raw and "\x9b" not in raw
    assert json.loads(raw)["stdout"] == "A\x1b]52;c;ZXZpbA==\x07B\x1bcC\x9b31mD\rE\tF\n"


def closed_port() -> int:
    """A loopback port that was free a moment ago: nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


URL_SECRETS = ("PW-nats-77", "PW-s3-88", "PW-llm-99", "QK-llm-55", "tok_PATHSECRET123", "opsadmin")


def plant_url_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the userinfo, query and path of every URL-valued setting; NATS on a
    port with nothing behind it."""
    port = closed_port()
    monkeypatch.setenv("LABBOT_EXECUTOR", "nats")
    monkeypatch.setenv(
        "LABBOT_NATS_URL", f"nats://bot:PW-nats-77@127.0.0.1:{port},nats://127.0.0.1:{port}"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://labbot:PW-s3-88@127.0.0.1:9/")
    monkeypatch.setenv(
        "OPENAI_BASE_URL",
        "http://opsadmin:PW-llm-99@llm.internal/gw/tok_PATHSECRET123/v1?api-key=QK-llm-55",
    )


def test_exec_never_shows_the_brokers_credentials(run, monkeypatch, caplog) -> None:
    """`labbot exec` on workers whose broker cannot be reached names where it is (masked),
    never the password in LABBOT_NATS_URL, on the terminal or in the log."""
    plant_url_secrets(monkeypatch)
    result = run("exec", "--user", "7", "1 + 1", code=1)
    assert "cannot be reached at nats://***:***@127.0.0.1:" in result.output, result.output
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in URL_SECRETS:
        assert secret not in result.output + logged, secret


def test_doctor_masks_every_url(run, monkeypatch) -> None:
    """doctor shows where OPENAI_BASE_URL, LABBOT_NATS_URL and AWS_ENDPOINT_URL point, with
    their userinfo, query values and secret-looking path segments masked, in its settings and
    in its failures."""
    plant_url_secrets(monkeypatch)
    result = run("doctor", "--json", code=1)
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert (
        not checks["workers"]["ok"] and "nats://***:***@127.0.0.1:" in checks["workers"]["detail"]
    )
    shown = checks["settings"]["detail"]
    assert "OPENAI_BASE_URL=http://***:***@llm.internal/gw/***/v1?api-key=***" in shown, shown
    assert "AWS_ENDPOINT_URL=http://***:***@127.0.0.1:9/" in shown, shown
    for secret in URL_SECRETS:
        assert secret not in result.output, secret
