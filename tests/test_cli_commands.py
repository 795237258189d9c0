"""The command tree: light commands import nothing heavy (start-up stays instant), --help's
lazy table agrees with the commands, and every `labbot ...` line of the README names a real
command and real options."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from labbot.cli.group import COMMANDS, FILES_COMMANDS, cli

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("openai", "pandas", "discord", "prompt_toolkit", "pymongo", "labbot.sandbox")
# Imports the command whose module is imported, then prints what was imported at exit.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("MODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["labbot", *json.loads(sys.argv[1])]
from labbot.cli import main
main()
"""


def imported_by(args: list[str], tmp_path: Path) -> set[str]:
    """The modules `labbot ARGS` imports, run in a fresh interpreter."""
    env = os.environ | {"LABBOT_DATA_DIR": str(tmp_path / "data")}
    env.pop("DISCORD_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["files", "--help"], ["files", "list", "--help"]]
    + [["files", "list"], ["files", "list", "--user", "42", "--json"], ["exec", "--help"]],
    ids=" ".join,
)
def test_light_commands_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    """No model client, data stack, Discord client or sandbox for a command that needs none."""
    modules = imported_by(args, tmp_path)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == []


def test_version_and_help_import_only_the_group(tmp_path: Path) -> None:
    """`--version` and `--help` import the group alone: no settings (pydantic), no store."""
    for args in (["--version"], ["--help"]):
        ours = {m for m in imported_by(args, tmp_path) if m.startswith("labbot")}
        assert ours <= {
            "labbot",
            "labbot.cli",
            "labbot.cli.group",
            "labbot.frontends",
            "labbot.frontends.escapes",
        }, ours
        assert "pydantic" not in imported_by(args, tmp_path)


def test_the_lazy_table_agrees_with_the_commands() -> None:
    """Each lazily listed command exists in its module, with the one-line help --help shows."""
    ctx = click.Context(cli)
    files = cli.get_command(ctx, "files")
    assert isinstance(files, click.Group)
    for group, table in ((cli, COMMANDS), (files, FILES_COMMANDS)):
        for name, (_module, text) in table.items():
            command = group.get_command(ctx, name)
            assert command is not None, name
            shown = click.Command(name, help=text).get_short_help_str(1000)
            assert command.get_short_help_str(1000) == shown, name
        assert set(group.list_commands(ctx)) == set(table) | {"files"} & set(group.commands)


def readme_commands() -> list[str]:
    """The lines of the README's code blocks that run `labbot`."""
    lines, inside = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        text = line.strip().removeprefix("$ ")
        if inside and (text.startswith("labbot ") or text == "labbot"):
            lines.append(text.split(" #")[0].rstrip(" \\"))
    return lines


def check_command_line(line: str) -> None:
    """Walk ``line`` down click's command tree: every word is a command, an option the
    command takes (with its value) or an argument."""
    words = shlex.split(line)[1:]
    command: click.Command = cli
    ctx = click.Context(cli)
    while words:
        word = words.pop(0)
        if word.startswith("-") and word != "-":
            name = word.split("=")[0]
            option = next(
                (
                    p
                    for p in command.params
                    if isinstance(p, click.Option) and name in p.opts + p.secondary_opts
                ),
                None,
            )
            if option is None and name in ("-h", "--help", "--version") and command is cli:
                continue
            if option is None and name in ("-h", "--help"):
                continue
            assert option is not None, f"{line!r}: {command.name} has no option {name}"
            if not option.is_flag and "=" not in word and words:
                words.pop(0)
        elif isinstance(command, click.Group):
            sub = command.get_command(ctx, word)
            assert sub is not None, f"{line!r}: no command {word!r} in {command.name}"
            command = sub


def test_the_readmes_commands_are_real() -> None:
    """Every `labbot ...` line in the README's code blocks names a real command and options."""
    lines = readme_commands()
    assert len(lines) >= 10, lines
    for line in lines:
        check_command_line(line)


def test_the_checker_catches_a_wrong_line() -> None:
    """The README check fails on an unknown command or option (it can fail)."""
    for wrong in ("labbot filez list", "labbot files list --usr 42"):
        with pytest.raises(AssertionError):
            check_command_line(wrong)


def test_deploy_files_run_documented_commands() -> None:
    """The systemd unit and compose.yaml run a command the README documents, and the unit
    delegates its cgroup (the README's advice for the sandbox's limits)."""
    documented = {shlex.split(x)[1] for x in readme_commands() if len(shlex.split(x)) > 1}
    unit = (REPO / "deploy" / "labbot.service").read_text()
    start = re.search(r"^ExecStart=\S*labbot (\S+)", unit, re.M)
    assert start and start[1] in documented, start
    assert re.search(r"^Delegate=yes$", unit, re.M)
    compose = (REPO / "compose.yaml").read_text()
    assert "service_healthy" in compose and "healthcheck" in compose
