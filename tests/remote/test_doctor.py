"""`labbot doctor` on a scaled-out bot: it checks the object store and lists the live workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.servers import S3, Nats, Process, clean_env


def doctor(env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`labbot doctor --json` as the operator runs it: the process and its checks by name."""
    done = subprocess.run(
        [sys.executable, "-m", "labbot", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    return done, {c["check"]: c for c in json.loads(done.stdout)}


def test_doctor_sees_the_workers_and_the_bucket(
    workers: dict[str, Process], nats: Nats, s3_server: S3, tmp_path: Path
) -> None:
    env = clean_env(
        **nats.bot_env(), **s3_server.env(), LABBOT_EXECUTOR="nats", LABBOT_DATA_DIR=str(tmp_path)
    )
    _, checks = doctor(env, tmp_path)
    assert checks["blob storage"]["ok"], checks["blob storage"]
    assert checks["workers"]["ok"], checks["workers"]
    assert "w1: " in checks["workers"]["detail"] and "w2: " in checks["workers"]["detail"]
    assert "sandbox" not in checks  # the bot's own machine runs no sandbox now

    env["LABBOT_NATS_PASSWORD"] = "wrong"
    done, checks = doctor(env, tmp_path)
    assert done.returncode == 1 and not checks["workers"]["ok"]
    assert "wrong" not in done.stdout + done.stderr  # the password is never echoed
