"""`labbot doctor`: every check prints its line whatever is wrong (a data folder that is a file,
read-only or in memory; a malformed model URL), and it checks the model API (the loopback OpenAI
server) and the Discord token (the loopback Discord emulator) for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import discord
import pytest

from labbot.cli.checks import (
    core_pattern_check,
    discord_checks,
    filesystem_type,
    model_checks,
    sandbox_uid_check,
)
from labbot.config import load_settings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.threaded import closed_port, served

TOKEN = "MTAxNjk4NzY1NDMyMTA.GhIjKl.super-secret-token"
EVERY_CHECK = [
    "settings",
    "labbot run",
    "data dir",
    "database",
    "sandbox",
    "sandbox uids",
    "memory sharing",
    "core dumps",
    "model",
    "discord",
]


def by_name(output: str) -> dict[str, dict]:
    return {c["check"]: c for c in json.loads(output)}


def test_doctor_passes_on_defaults_and_masks_secrets(run, monkeypatch, tmp_path) -> None:
    """On defaults with a stored file and a token Discord accepts: every check passes, the
    database line counts "1 file", Discord is asked about the token, the secret never shows."""
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    (tmp_path / "a.csv").write_text("a\n1\n")
    run("files", "add", str(tmp_path / "a.csv"), "-u", "1")
    with served(FakeDiscord) as fake:
        fake.patch_discord()
        checks = by_name(run("doctor", "--json").output)
        text = run("doctor").output
    assert set(checks) >= {
        "settings",
        "labbot run",
        "data dir",
        "database",
        "sandbox",
        "model",
        "discord token",
        "discord login",
        "discord invite",
    }
    assert all(c["ok"] and c["status"] == "ok" for c in checks.values()), checks
    assert checks["database"]["detail"].endswith("(1 file)")
    assert checks["discord login"]["detail"] == "accepted: the bot is LabBot"
    assert checks["labbot run"]["detail"] == "starts the Discord bot (DISCORD_TOKEN is set)"
    assert "super-secret-token" not in json.dumps(checks) + text
    invite = text.splitlines()[-1]
    assert invite.startswith("ok   discord invite: https://discord.com/oauth2")
    # Shown whole, to be opened: its id, scopes and permissions are no secret.
    assert re.search(r"client_id=\d+&scope=bot\+applications.commands&permissions=\d+$", invite)
    assert checks["discord invite"]["detail"] == invite.split(": ", 1)[1]


def test_doctor_shows_one_setting_a_line(run, monkeypatch) -> None:
    """The settings are listed one per line under their check (not one long line), secrets
    masked, and --json carries the same lines."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk-very-secret")  # used by no check here
    text = run("doctor").output
    checks = by_name(run("doctor", "--json").output)
    lines = text.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("ok   settings: ")))
    shown = [x.strip() for x in lines[start + 1 :] if x.startswith("       ")]
    assert "AWS_SECRET_ACCESS_KEY=***" in shown and "MAX_FILES_PER_USER=20" in shown
    assert len(shown) > 40 and max(len(x) for x in shown) < 200
    assert checks["settings"]["detail"].split("\n")[1:] == shown
    assert "sk-very-secret" not in text


def test_doctor_names_a_misspelled_setting(run, monkeypatch, tmp_path) -> None:
    """MAX_FILES_PER_USR in .env (silently ignored by the settings) is a warning naming the
    closest real setting; a stray LABBOT_ variable in the environment too; others' are not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_FILES_PER_USR=5\nSANDBOX_MEMORY=1\n")
    monkeypatch.setenv("LABBOT_EXECUTER", "local")
    monkeypatch.setenv("MAX_JOBS", "4")  # another program's
    checks = by_name(run("doctor", "--json").output)
    typos = checks["unknown settings"]
    assert typos["status"] == "warn" and typos["ok"]
    assert typos["detail"].split("\n")[1:] == [
        "MAX_FILES_PER_USR (in .env): did you mean MAX_FILES_PER_USER?",
        "SANDBOX_MEMORY (in .env): did you mean SANDBOX_MEMORY_MB?",
        "LABBOT_EXECUTER (in the environment): did you mean LABBOT_EXECUTOR?",
    ]


@pytest.mark.timeout(60)
def test_a_down_mongodb_fails_the_database_line_within_its_timeout(run, monkeypatch) -> None:
    """MongoDB not answering: the database line fails, naming MongoDB and its timeout, after
    one try (not the bot's three); the sandbox is not blamed (it is not checked)."""
    monkeypatch.setenv("MONGODB_URI", f"mongodb://u:pw-mongo-1@127.0.0.1:{closed_port()}/x")
    monkeypatch.setenv("MONGODB_TIMEOUT_SECONDS", "1")
    result = run("doctor", "--json", code=1)
    checks = by_name(result.output)
    assert checks["database"]["status"] == "fail"
    assert "MongoDB cannot be reached within 1 s" in checks["database"]["detail"]
    assert checks["sandbox"]["status"] == "skip"
    assert "the database cannot be opened" in checks["sandbox"]["detail"]
    assert [n for n, c in checks.items() if c["status"] == "fail"] == ["database"]
    assert "pw-mongo-1" not in result.output


def test_doctor_reports_a_malformed_discord_token(run, monkeypatch) -> None:
    """A token that is not three dot-separated parts fails the check with the fix, exit 1."""
    monkeypatch.setenv("DISCORD_TOKEN", "oops")
    result = run("doctor", "--json", code=1)
    failed = [c for c in json.loads(result.output) if not c["ok"]]
    assert [c["check"] for c in failed] == ["discord token"]
    assert "Developer Portal" in failed[0]["detail"] and "oops" not in result.output


def test_a_data_dir_that_is_a_file_gets_every_line(run, monkeypatch, tmp_path) -> None:
    """LABBOT_DATA_DIR naming a file: no traceback; every check prints its line, the data dir
    fails with the fix and what needs it says it was not checked; --json carries the same."""
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("LABBOT_DATA_DIR", str(tmp_path / "afile"))
    text = run("doctor", code=1).output
    checks = by_name(run("doctor", "--json", code=1).output)
    assert "Traceback" not in text and "unexpected" not in text
    heads = [line.split(":")[0][5:] for line in text.splitlines() if not line.startswith(" ")]
    assert heads == EVERY_CHECK
    assert list(checks) == EVERY_CHECK
    assert checks["data dir"]["status"] == "fail"
    assert "is a file, not a folder; set LABBOT_DATA_DIR" in checks["data dir"]["detail"]
    assert checks["database"]["status"] == checks["sandbox"]["status"] == "skip"


def test_a_read_only_data_dir_fails_its_line(tmp_path: Path) -> None:
    """A data folder on a read-only mount (made with a private mount namespace): the data dir
    line says it is not writable, and every other line is there."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private read-only mount")
    data = tmp_path / "ro"
    data.mkdir()
    script = 'mount --bind "$D" "$D" && mount -o remount,ro,bind "$D" && exec "$@"'
    env = {**os.environ, "D": str(data), "LABBOT_DATA_DIR": str(data)}
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh"]
        + [sys.executable, "-m", "labbot", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if "unshare failed" in done.stderr or "mount:" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 1, done.stderr
    checks = by_name(done.stdout)
    assert list(checks) == EVERY_CHECK
    assert "is not writable (Read-only file system)" in checks["data dir"]["detail"]


def test_memory_data_dir_is_warned_and_a_bad_model_url_fails(run, monkeypatch) -> None:
    """A data folder on tmpfs works but is warned (gone at reboot); OPENAI_BASE_URL=not-a-url
    fails the model check without repeating the value; the other checks still run."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or filesystem_type(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    data = shm / f"labbot-doctor-{uuid.uuid4().hex}"
    monkeypatch.setenv("LABBOT_DATA_DIR", str(data))
    monkeypatch.setenv("OPENAI_BASE_URL", "not-a-url")
    try:
        checks = by_name(run("doctor", "--json", code=1).output)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert checks["data dir"]["status"] == "warn" and checks["data dir"]["ok"]
    assert "is on tmpfs (memory)" in checks["data dir"]["detail"]
    assert checks["database"]["ok"] and checks["sandbox"]["ok"]
    endpoint = checks["model endpoint"]
    assert endpoint["status"] == "fail" and "not an http(s) URL" in endpoint["detail"]
    assert [name for name, c in checks.items() if not c["ok"]] == ["model endpoint"]


@pytest.mark.parametrize(
    ("key", "model", "expected"),
    [
        ("sk-right", "gpt-4o-mini", {"model API": "ok", "model": "ok"}),
        ("sk-wrong", "gpt-4o-mini", {"model API": "fail"}),
        ("sk-right", "no-such-model", {"model API": "ok", "model": "fail"}),
    ],
)
async def test_model_checks_against_the_loopback_api(data_dir, key, model, expected) -> None:
    """The key accepted or refused, the default model listed or not."""
    async with FakeOpenAI(api_key="sk-right") as server:
        settings = load_settings(
            LABBOT_DATA_DIR=data_dir,
            OPENAI_API_KEY=key,
            OPENAI_BASE_URL=server.base_url,
            DEFAULT_MODEL=model,
        )
        checks = await model_checks(settings)
    assert {c.name: c.status for c in checks} == expected
    details = " ".join(c.detail for c in checks)
    assert "sk-right" not in details and "sk-wrong" not in details
    if key == "sk-wrong":
        assert "refused the key; check OPENAI_API_KEY" in details
    elif model == "no-such-model":
        assert "gpt-4o-mini" in details and "set DEFAULT_MODEL" in details
    else:
        assert "the key is accepted, 4 models listed" in details


async def test_model_checks_say_when_the_api_cannot_be_reached(data_dir) -> None:
    """Nothing listening at OPENAI_BASE_URL: one failed line saying so (no retries)."""
    settings = load_settings(
        LABBOT_DATA_DIR=data_dir, OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1"
    )
    [check] = await model_checks(settings)
    assert (check.name, check.status) == ("model API", "fail")
    assert "cannot be reached" in check.detail


async def test_discord_checks_ask_discord(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted, refused (401) and unreachable: ok, failed with the fix, warned."""
    async with FakeDiscord() as fake:
        fake.patch_discord()
        accepted = {c.name: c for c in await discord_checks(TOKEN)}
        fake.inject("GET", r"^/users/@me$", 401, {"message": "401: Unauthorized", "code": 0})
        refused = {c.name: c for c in await discord_checks(TOKEN)}
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port()}/api/v10")
    unreachable = {c.name: c for c in await discord_checks(TOKEN)}
    assert accepted["discord login"].status == "ok"
    assert refused["discord login"].status == "fail"
    assert "Discord refused DISCORD_TOKEN" in refused["discord login"].detail
    assert "Reset Token" in refused["discord login"].detail
    assert unreachable["discord login"].status == "warn"
    assert "Discord cannot be reached" in unreachable["discord login"].detail


def test_a_piped_core_pattern_is_warned(tmp_path: Path) -> None:
    """A core_pattern that pipes crashes to a program (started as root) is a warning naming
    the program and the fix; a file pattern is fine; an unreadable one is not checked."""
    pattern = tmp_path / "core_pattern"
    pattern.write_text("|/usr/share/apport/apport -p%p -s%s -c%c\n")
    piped = core_pattern_check(pattern)
    assert piped.status == "warn" and "/usr/share/apport/apport" in piped.detail
    assert "kernel.core_pattern=core" in piped.detail
    pattern.write_text("core\n")
    assert core_pattern_check(pattern).status == "ok"
    assert core_pattern_check(tmp_path / "missing").status == "skip"


def test_an_unprivileged_bot_is_warned_that_sandboxes_share_its_uid(tmp_path: Path) -> None:
    """As root each sandbox has a uid of its own; otherwise doctor says they all share the
    bot's, and what that means."""
    settings = load_settings(LABBOT_DATA_DIR=tmp_path)
    assert sandbox_uid_check(settings, euid=0).status == "ok"
    shared = sandbox_uid_check(settings, euid=1000)
    assert shared.status == "warn" and "uid, 1000" in shared.detail
    assert "epoll watches" in shared.detail and "run the bot as root" in shared.detail
    off = load_settings(LABBOT_DATA_DIR=tmp_path, LABBOT_SANDBOX="off")
    assert sandbox_uid_check(off, euid=1000).status == "skip"
