"""The `labbot` CLI on the embedded defaults: files add/list/show/get/rm/sweep, and doctor and exec
(on the real sandbox)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import discord
import pytest

from labbot.cli.checks import NO_TERMINAL
from labbot.config import load_settings
from labbot.files.receipt import format_expiry
from labbot.frontends.discord.bot import create_bot
from labbot.llm.tools import TOOL_NAME
from tests.conftest import Clock, chunks_of, make_store
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.threaded import closed_port, served

REPO = Path(__file__).resolve().parents[1]
TOKEN = "MTAxNjk4NzY1NDMyMTA.GhIjKl.super-secret-token"


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "sales.csv"
    path.write_text("region,amount\nnorth,10\nsouth,20\n")
    return path


@pytest.mark.timeout(30)
def test_add_refuses_what_is_no_regular_file(run, csv_file: Path, tmp_path: Path) -> None:
    """A FIFO (which would wait for ever for a writer) and /dev/zero (which never ends) are
    refused at once, each with its reason; the regular file beside them is added."""
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    result = run(
        "files", "add", str(fifo), "/dev/zero", str(csv_file), "-u", "42", "--json", code=1
    )
    entries = json.loads(result.stdout)
    assert [e.get("name") or e["error"]["message"].split(":")[0] for e in entries] == [
        "fifo.csv",
        "zero",
        "sales.csv",
    ]
    for entry in entries[:2]:
        assert "not a regular file" in entry["error"]["message"], entry


def test_add_refuses_a_planted_symlink_unless_asked(run, tmp_path: Path) -> None:
    """A link named like a data file, pointing at an operator-only file: refused with the
    link's target named, nothing stored; with --follow-symlinks it is stored and the
    confirmation names the real path it came from."""
    secret = tmp_path / "operator" / "secrets.env"
    secret.parent.mkdir()
    secret.write_text("TOKEN=hunter2\n")
    link = tmp_path / "report.csv"
    link.symlink_to(secret)
    refused = run("files", "add", str(link), "-u", "42", "--json", code=1)
    [entry] = json.loads(refused.stdout)
    message = entry["error"]["message"]
    assert "symbolic link" in message and str(secret) in message, message
    assert json.loads(run("files", "list", "-u", "42", "--json").output) == []
    followed = run("files", "add", str(link), "-u", "42", "--follow-symlinks").output
    assert f"stored the file it points to, {secret}" in followed, followed
    [stored] = json.loads(run("files", "list", "-u", "42", "--json").output)
    assert stored["name"] == "report.csv" and stored["size"] == secret.stat().st_size
    added = json.loads(
        run("files", "add", str(link), "-u", "43", "--follow-symlinks", "--json").output
    )
    assert added[0]["real_path"] == str(secret)


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
    assert added[0] == listed[0] | {"evicted": []} and listed[0] == shown
    assert shown["name"] == "sales.csv" and shown["size"] == csv_file.stat().st_size
    assert json.loads(run("files", "list", "-u", "other", "--json").output) == []


def test_get_writes_the_exact_bytes(run, csv_file: Path, tmp_path: Path) -> None:
    """files get writes the stored bytes to a path and to stdout."""
    file_id = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)[0]["id"]
    run("files", "get", file_id, "-u", "42", "-o", str(tmp_path / "copy.csv"))
    assert (tmp_path / "copy.csv").read_bytes() == csv_file.read_bytes()
    assert run("files", "get", file_id, "-u", "42", "-o", "-").stdout_bytes == csv_file.read_bytes()


def test_rm_then_show_is_one_clear_error(run, csv_file: Path) -> None:
    """After rm, show fails with one line and exit 1, no traceback."""
    file_id = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)[0]["id"]
    assert "Deleted sales.csv" in run("files", "rm", file_id, "-u", "42").output
    result = run("files", "show", file_id, "-u", "42", code=1)
    assert result.output.startswith("Error: No file with id") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_another_users_file_is_not_found(run, csv_file: Path) -> None:
    """A file id of another user is refused as not found."""
    file_id = json.loads(run("files", "add", str(csv_file), "-u", "42", "--json").output)[0]["id"]
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


@pytest.mark.sandbox
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


def add_file(run, path: Path, user: str = "42") -> str:
    return json.loads(run("files", "add", str(path), "-u", user, "--json").stdout)[0]["id"]


# --- Settings that mean what they look like -----------------------------------------------


@pytest.mark.sandbox
def test_env_example_as_is_stops_with_what_to_set(run, tmp_path: Path) -> None:
    """`cp .env.example .env`: the empty DISCORD_TOKEN is unset, so without a terminal `labbot
    run` does not log in to Discord but stops with one line saying what to set: the sentence
    `labbot doctor` gives for it."""
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    result = run("run", code=1)
    assert result.output.splitlines() == [f"Error: {NO_TERMINAL}"]
    checks = {c["check"]: c for c in json.loads(run("doctor", "--json").stdout)}
    assert checks["labbot run"] == {
        "check": "labbot run",
        "ok": True,
        "status": "warn",
        "detail": NO_TERMINAL,
    }
    assert checks["model"]["detail"].startswith("none (OPENAI_API_KEY and OPENAI_BASE_URL unset)")


def first_line_in_a_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Start ``argv`` on a pseudo-terminal, return the first line it prints, then kill it."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, cwd=cwd, env=env,
        start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    seen, deadline = b"", time.monotonic() + 60
    try:
        while b"\n" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                seen += os.read(leader, 4096)
            except OSError:  # the process ended
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        os.close(leader)
    return seen.decode(errors="replace").splitlines()[0] if seen else ""


@pytest.mark.parametrize(
    ("extra", "starts"),
    [
        ({}, "a sandboxed Python console in the terminal (no DISCORD_TOKEN; no model:"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, "the terminal chat with the model gpt-4.1"),
    ],
)
def test_run_in_a_terminal_says_what_it_starts(tmp_path: Path, extra, starts) -> None:
    """With .env.example copied as it is, `labbot run` in a terminal starts the Python console
    (not Discord, not OpenAI), and the model chat once a model is set; its first line says so."""
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    env = os.environ | {"LABBOT_DATA_DIR": str(tmp_path / "data"), **extra}
    line = first_line_in_a_terminal([sys.executable, "-m", "labbot", "run"], tmp_path, env)
    assert line.startswith(f"labbot: starting {starts}")


# --- Errors as sentences ---------------------------------------------------------------------


def test_run_with_a_malformed_token_is_one_line_with_the_fix(run, monkeypatch) -> None:
    """No traceback, no "unexpected failure (LoginFailure)": what `labbot run` starts, then the
    fix."""
    monkeypatch.setenv("DISCORD_TOKEN", "oops")
    assert run("run", code=1).output.splitlines() == [
        "labbot: starting the Discord bot (DISCORD_TOKEN is set).",
        "Error: DISCORD_TOKEN does not look like a bot token (three dot-separated parts);"
        " copy it again from the Developer Portal, Bot.",
    ]


def test_run_with_a_refused_token_or_no_network_is_one_line(run, monkeypatch) -> None:
    """A token Discord refuses (the loopback emulator answers 401) and a Discord that cannot be
    reached each end in one sentence with the fix: no traceback, no PyNaCl warning."""
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    with served(FakeDiscord) as fake:
        fake.patch_discord()
        fake.inject("GET", r"^/users/@me$", 401, {"message": "401: Unauthorized", "code": 0})
        refused = run("run", code=1).output.splitlines()
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port()}/api/v10")
    offline = run("run", code=1).output.splitlines()
    assert refused == [
        "labbot: starting the Discord bot (DISCORD_TOKEN is set).",
        "Error: Discord refused DISCORD_TOKEN (it was reset or mistyped). Make a new one"
        " (Developer Portal > your app > Bot > Reset Token) and set DISCORD_TOKEN to it.",
    ]
    assert len(offline) == 2 and offline[1].startswith("Error: Discord cannot be reached (")
    assert offline[1].endswith("Check this machine's network, DNS and proxy, then try again.")


async def test_the_bot_does_not_warn_about_voice(settings, monkeypatch, caplog) -> None:
    """labbot uses no voice: no "PyNaCl is not installed" warning when the bot starts."""
    monkeypatch.setattr(discord.VoiceClient, "warn_nacl", True)
    monkeypatch.setattr(discord.VoiceClient, "warn_dave", True)
    async with open_fake_app(fake_settings(settings.LABBOT_DATA_DIR), None) as app:
        with caplog.at_level(logging.WARNING):
            create_bot(app)
    assert "PyNaCl" not in caplog.text and "voice" not in caplog.text


def test_log_lines_appear_only_when_asked(run, monkeypatch, restore_logging) -> None:
    """A refused model key: `ask` says so in one sentence; the log's warning line shows on
    stderr only with --verbose."""
    with served(lambda: FakeOpenAI(api_key="sk-right")) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        monkeypatch.setenv("LLM_MAX_RETRIES", "0")
        quiet = run("ask", "hi", "-u", "1", code=1)
        loud = run("--verbose", "ask", "hi", "-u", "1", code=1)
    assert "The model API refused our credentials." in quiet.stderr
    assert "llm.error" not in quiet.output and "WARNING" not in quiet.output
    assert re.search(
        r"WARNING labbot\.llm\.client llm\.error kind=AuthenticationError", loud.stderr
    )


# --- One JSON shape ---------------------------------------------------------------------------


def test_errors_are_one_json_object_on_stdout(run, csv_file: Path) -> None:
    """With --json a failure is {"error": {type, message, hint}} on stdout, exit non-zero;
    usage errors too."""
    result = run("files", "show", "bogus", "-u", "42", "--json", code=1)
    assert json.loads(result.stdout) == {
        "error": {
            "type": "FileNotFound",
            "message": "No file with id 'bogus': it may have expired, been evicted or deleted.",
            "hint": "List your files to see what is there.",
        }
    }
    usage = json.loads(run("files", "add", "--json", code=2).stdout)
    assert usage["error"]["type"] == "UsageError" and "PATHS" in usage["error"]["message"]


def test_files_commands_default_to_the_chats_user(run, csv_file: Path) -> None:
    """Without --user the files commands act for `local`, the terminal chat's user."""
    run("files", "add", str(csv_file))
    listed = json.loads(run("files", "list", "--json").output)
    assert [r["name"] for r in listed] == ["sales.csv"]
    assert json.loads(run("files", "list", "-u", "local", "--json").output) == listed
    assert "[default: local]" in run("files", "list", "--help").output


def test_add_reports_every_file(run, csv_file: Path, tmp_path: Path) -> None:
    """`files add a b --json` when both fail prints both errors (not []); a good file among
    bad ones is stored and reported; any failure exits 1."""
    both = json.loads(
        run("files", "add", "gone.csv", str(tmp_path), "-u", "1", "--json", code=1).stdout
    )
    assert [e["error"]["message"] for e in both] == [
        "gone.csv: No such file.",
        f"{tmp_path.name}: This is a folder, not a file.",
    ]
    mixed = run("files", "add", "gone.csv", str(csv_file), "-u", "1", code=1)
    assert "Error: gone.csv: No such file." in mixed.stderr and "sales.csv" in mixed.stdout
    assert [r["name"] for r in json.loads(run("files", "list", "-u", "1", "--json").stdout)] == [
        "sales.csv"
    ]


def test_rm_tries_every_id_and_reports_each(run, csv_file: Path) -> None:
    """`files rm GOOD bogus` reports the deletion and the error; `files rm bogus GOOD` still
    deletes GOOD; both exit 1."""
    good = add_file(run, csv_file)
    result = run("files", "rm", good, "bogus", "-u", "42", code=1)
    assert f"Deleted sales.csv ({good})." in result.stdout
    assert "Error: No file with id 'bogus'" in result.stderr
    good = add_file(run, csv_file)
    entries = json.loads(run("files", "rm", "bogus", good, "-u", "42", "--json", code=1).stdout)
    assert entries[0]["error"]["type"] == "FileNotFound" and entries[1]["id"] == good
    assert json.loads(run("files", "list", "-u", "42", "--json").stdout) == []


def test_get_writes_into_a_folder_without_overwriting(run, csv_file: Path, tmp_path) -> None:
    """`files get` writes into the current folder by default under the file's name, numbered
    when taken (never over a file); -o FILE refuses an existing file unless --force."""
    file_id = add_file(run, csv_file)
    csv_file.write_text("my own edits\n")
    record = json.loads(run("files", "show", file_id, "-u", "42", "--json").stdout)
    first = json.loads(run("files", "get", file_id, "-u", "42", "--json").stdout)
    assert first == record | {"path": "sales (2).csv"}
    assert run("files", "get", file_id, "-u", "42").stdout == "sales (3).csv\n"
    assert (tmp_path / "sales (3).csv").read_bytes() == b"region,amount\nnorth,10\nsouth,20\n"
    refused = run("files", "get", file_id, "-u", "42", "-o", str(csv_file), "--json", code=1)
    assert "already exists" in json.loads(refused.stdout)["error"]["message"]
    assert csv_file.read_text() == "my own edits\n"
    run("files", "get", file_id, "-u", "42", "-o", str(csv_file), "--force")
    assert csv_file.read_text().startswith("region,amount")


@pytest.mark.sandbox
def test_exec_saves_outputs_with_the_one_file_record(run, tmp_path: Path) -> None:
    """`exec -o DIR` saves what the code wrote; its JSON names each file with the same record
    as `files list`, plus where it was saved."""
    code = "open('r.txt', 'w').write('hi'); 6 * 7"
    data = json.loads(run("exec", "-u", "7", "-o", str(tmp_path / "out"), "--json", code).stdout)
    [made] = data["files"]
    listed = {r["id"]: r for r in json.loads(run("files", "list", "-u", "7", "--json").stdout)}
    assert {k: v for k, v in made.items() if k != "path"} == listed[made["id"]]
    assert made["path"] == str(tmp_path / "out" / "r.txt")
    assert Path(made["path"]).read_text() == "hi" and data["value"] == "42"


@pytest.mark.sandbox
def test_ask_json_uses_the_one_file_record_and_error_object(run, monkeypatch, tmp_path) -> None:
    """`ask --json`: a file the code made is the record `files list` prints (plus its path);
    a failed turn is the one error object."""
    with served(FakeOpenAI) as server:
        server.enqueue(
            Reply.tool_call(TOOL_NAME, {"code": "open('r.txt', 'w').write('hi')"}),
            Reply.text("done"),
            Reply.error(401),
        )
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("LLM_MAX_RETRIES", "0")
        ok = run("ask", "make r.txt", "-u", "7", "-o", str(tmp_path / "out"), "--json")
        failed = run("ask", "again", "-u", "7", "--json", code=1)
    events = [json.loads(line) for line in ok.stdout.splitlines()]
    [made] = [e for e in events if e["type"] == "file"]
    listed = json.loads(run("files", "list", "-u", "7", "--json").stdout)
    assert made["file"] == listed[0] and Path(made["path"]).read_text() == "hi"
    assert set(made) == {"type", "call_id", "file", "path"}  # as the README says
    readme = (REPO / "README.md").read_text().replace("\n", " ")
    assert '`{"type": "file", "call_id": ..., "file": RECORD, "path": ...}`' in readme
    [error] = [json.loads(line) for line in failed.stdout.splitlines() if '"error"' in line]
    assert error["type"] == "error" and set(error["error"]) == {"type", "message", "hint"}
    assert "refused our credentials" in error["error"]["message"]


@pytest.mark.timeout(30)
def test_ask_names_every_attachment_it_refused(run, monkeypatch, tmp_path) -> None:
    """`ask --attach` with bad files among good ones: each refused file is named with why (the
    first alone was said before, without its name), the good ones are stored, and the question
    is not asked, which the last line says."""
    monkeypatch.setenv("MAX_FILE_SIZE_MB", "0.001")
    good, empty, big = tmp_path / "good.csv", tmp_path / "empty.csv", tmp_path / "big.csv"
    good.write_text("a\n1\n")
    empty.write_bytes(b"")
    big.write_text("a\n" + "1\n" * 1000)
    with served(FakeOpenAI) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        args = ["ask", "sum it", "-u", "7", "-a", str(good), "-a", str(empty), "-a", str(big)]
        said = run(*args, code=1)
        as_json = run(*args, "--json", code=1)
        assert server.requests == []  # not asked without its files
    lines = [line for line in said.stderr.splitlines() if line.startswith("Error:")]
    assert lines[0].startswith("Error: empty.csv: The file is empty")
    assert lines[1].startswith("Error: big.csv: That file is too large")
    assert "not asked" in lines[2] and "empty.csv, big.csv" in lines[2]
    assert "good.csv" in said.stderr  # its receipt: stored all the same
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e.get("type") for e in events] == ["upload", "error", "error", None]
    assert events[1]["error"]["message"].startswith("empty.csv: ")
    assert events[2]["error"]["type"] == "FileTooLarge"
    assert "not asked" in events[3]["error"]["message"] and events[3]["error"]["hint"]
    stored = json.loads(run("files", "list", "-u", "7", "--json").stdout)
    assert [f["name"] for f in stored] == ["good.csv", "good.csv"]


# --- Honest durations and the wordings ------------------------------------------------------


@pytest.mark.sandbox
def test_exec_names_the_execution_and_the_whole_command(run) -> None:
    """`exec` reports the code's own time and the whole command's (sandbox start included),
    named as such, in JSON and as text; there is no bare "duration"."""
    data = json.loads(run("exec", "-u", "7", "--json", "1 + 1").stdout)
    assert "duration" not in data
    assert 0 < data["execution_seconds"] < data["command_seconds"]
    text = run("exec", "-u", "7", "1 + 1")
    assert text.stdout == "2\n"
    assert re.fullmatch(
        r"time: execution [\d.]+ m?s, whole command [\d.]+ m?s"
        r" \(start-up and starting the sandbox included\)\n",
        text.stderr,
    )


@pytest.mark.sandbox
def test_a_timeout_is_said_once(run, monkeypatch) -> None:
    """The timeout sentence appears once, not as the error and again in the note."""
    monkeypatch.setenv("CODE_EXECUTION_TIMEOUT", "1")
    result = run("exec", "-u", "7", "import time; time.sleep(60)", code=1)
    assert result.output.count("time limit") == 1, result.output


async def _store_expired(data_dir: Path) -> None:
    clock = Clock()
    clock.now = datetime(2000, 1, 1, tzinfo=UTC)  # long expired by any real clock
    store = make_store(load_settings(LABBOT_DATA_DIR=data_dir))
    store.clock = clock
    await store.start()
    await store.save("1", "old.txt", chunks_of(b"ab"))
    await store.close()


def test_counts_are_plural_aware(run, tmp_path: Path) -> None:
    """ "Removed 1 expired file", not "1 expired files"."""
    asyncio.run(_store_expired(tmp_path / "data"))
    assert run("files", "sweep").stdout == (
        "Removed 1 expired file (2 Bytes); repaired 0 stray blobs and 0 records without contents.\n"
    )


def test_a_file_that_never_expires_says_never(run, csv_file: Path, monkeypatch) -> None:
    """ "Expires: never", not "Expires: never expires"."""
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "-1")
    added = run("files", "add", str(csv_file), "-u", "42").stdout
    assert "\nExpires: never\n" in added
    listed = run("files", "list", "-u", "42").stdout
    assert listed.rstrip().endswith("expires never")


def test_expiry_reads_alike_for_files_stored_a_minute_apart() -> None:
    """A 48 h file: "in 2 days" at upload and a minute later too (not "in 47 hours" beside
    "in 2 days"), never "in a day" with 47 hours left; hours below a day and a half."""
    stored = datetime(2026, 1, 1, tzinfo=UTC)
    expires = stored + timedelta(hours=48)
    assert format_expiry(expires, stored).startswith("in 2 days (2026-01-03 00:00 UTC)")
    later = [
        timedelta(minutes=1),
        timedelta(hours=2),
        timedelta(hours=24),
        timedelta(hours=47, minutes=30),
    ]
    assert [format_expiry(expires, stored + d).split(" (")[0] for d in later] == [
        "in 2 days",
        "in 2 days",
        "in 24 hours",
        "in 30 minutes",
    ]
    assert format_expiry(expires, expires - timedelta(seconds=20)).startswith(
        "in less than a minute"
    )


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


def test_chat_on_a_data_dir_that_is_a_file_is_one_line(run, monkeypatch, tmp_path: Path) -> None:
    """`labbot chat` (what `labbot run` starts in a terminal) on a LABBOT_DATA_DIR that is a
    file says so in one line with the fix, as every other command does: no traceback."""
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("LABBOT_DATA_DIR", str(tmp_path / "afile"))
    result = run("chat", code=1)
    assert result.output.splitlines() == [
        f"Error: The data folder {tmp_path / 'afile'} cannot be used (Not a directory)."
        " Set LABBOT_DATA_DIR to a folder labbot may write (see `labbot doctor`)."
    ]
