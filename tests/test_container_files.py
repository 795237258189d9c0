"""The container files agree with what scripts/test-container.sh proves and README documents
(the script itself needs a Docker engine; these checks run everywhere)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}


def _compose_list(key: str) -> set[str]:
    """The `- item` lines under `key:` in compose.yaml's labbot service."""
    lines = (ROOT / "compose.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}:")
    items = set()
    for line in lines[start + 1 :]:
        if not line.strip().startswith("- "):
            break
        items.add(line.strip()[2:])
    return items


def test_compose_sets_the_options_the_script_proves() -> None:
    """compose.yaml, the script and README's docker run name the same security options, and
    they are the ones bubblewrap needs in a container (systempaths too, for /proc)."""
    script = (ROOT / "scripts" / "test-container.sh").read_text()
    tested = set(re.findall(r"--security-opt ([^\s)]+)", script.split("PROBES=")[0]))
    readme = (ROOT / "README.md").read_text()
    docker_run = readme.split("### With Docker Compose")[1].split("| Option |")[0]
    documented = set(re.findall(r"--security-opt ([^\s)]+)", docker_run))
    assert _compose_list("security_opt") == tested == documented == NEEDED


def test_compose_refuses_to_start_without_a_token() -> None:
    """Without a token `labbot run` in a container has nothing to run: Compose stops with a
    sentence instead of restarting it in a loop."""
    compose = (ROOT / "compose.yaml").read_text()
    assert re.search(r"DISCORD_TOKEN: \$\{DISCORD_TOKEN:\?[^}]+\}", compose)


def test_mongo_is_optional() -> None:
    """The bot starts where no MongoDB image can be had: MongoDB is a profile."""
    compose = (ROOT / "compose.yaml").read_text()
    mongo = compose.split("\n  mongo:\n", 1)[1]
    assert "profiles: [mongo]" in mongo.split("\n\n")[0]


def test_the_image_never_holds_the_env_file() -> None:
    """`COPY . .` would bake .env's token and keys into the image's layers."""
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and "!.env.example" in ignored


def test_setup_runs_where_the_image_user_may_write() -> None:
    """The checkout folder belongs to `labbot` before set-up runs as `labbot`."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"install -d -o labbot -g labbot /opt/labbot", dockerfile)
    assert dockerfile.index("/opt/labbot /data") < dockerfile.index("USER labbot")
