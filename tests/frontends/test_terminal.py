"""The terminal front ends: `labbot ask` as a real process (the real sandbox and the openai SDK
against the loopback API) and in process, and the chat loop on the in-memory fakes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from labbot.app import App
from labbot.cli import cli
from labbot.frontends.terminal import TerminalChat
from labbot.llm.tools import TOOL_NAME
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.scripted_model import ScriptedModel

LABBOT = str(Path(sys.executable).with_name("labbot"))


async def run_labbot(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        LABBOT,
        *args,
        env={**os.environ, "SANDBOX_WARM_POOL": "0", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def typed(services: App, output_dir: Path, *typed_lines: str, width: int = 120) -> str:
    """Type these lines into the terminal chat on ``services``; what it showed."""
    screen = io.StringIO()
    chat = TerminalChat(
        services,
        user="me",
        conversation="t",
        output_dir=output_dir,
        console=Console(file=screen, width=width),
    )
    await chat.run(lines(*typed_lines))
    return screen.getvalue()


@pytest.mark.sandbox
async def test_ask_json_streams_events_and_saves_files(tmp_path: Path) -> None:
    """`labbot ask --attach --json` uploads, runs the turn and prints one JSON event per line;
    files the code makes are saved to the output folder."""
    csv = tmp_path / "sales.csv"
    csv.write_text("region,units\nnorth,10\nsouth,7\n")
    async with FakeOpenAI() as api:
        api.enqueue(
            Reply.tool_call(TOOL_NAME, {"code": "load_file('sales.csv').to_csv('copy.csv')"}),
            Reply.text("Copied."),
        )
        env = {
            "LABBOT_DATA_DIR": str(tmp_path / "data"),
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": api.base_url,
            "DEFAULT_MODEL": "gpt-4o-mini",
        }
        code, out, err = await run_labbot(
            "ask",
            "copy it",
            "--user",
            "7",
            "--attach",
            str(csv),
            "--json",
            "--output-dir",
            str(tmp_path / "out"),
            env=env,
        )
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events][0] == "upload"
    produced = [e for e in events if e["type"] == "file"]
    assert len(produced) == 1
    saved = await asyncio.to_thread(Path(produced[0]["path"]).read_text)
    assert saved.startswith(",region")
    assert events[-2] == {"type": "final", "text": "Copied."}
    assert events[-1]["type"] == "turn_usage" and events[-1]["usage"]["requests"] == 2
    assert "sk-test" not in out + err


def test_ask_without_a_model_says_which_settings(tmp_path: Path, restore_logging: None) -> None:
    """With no model configured `labbot ask` fails in one line naming the variables."""
    env = {"LABBOT_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["ask", "hi", "--user", "7"], env=env)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "OPENAI_API_KEY" in result.stderr and "OPENAI_BASE_URL" in result.stderr


async def test_console_mode_runs_python_and_uploads(tmp_path: Path) -> None:
    """With no model, typed Python runs in the session; /upload, /files, /reset work."""
    data = tmp_path / "n.json"
    data.write_text("[1, 2]")
    async with open_fake_app(fake_settings(tmp_path / "d"), None) as services:
        text = await typed(
            services,
            tmp_path / "o",
            f"/upload {data}",
            "x = sum(load_file('n.json'))",
            "print(x * 10)",
            "/files",
            "/reset",
            "x",
            "/quit",
            "print(99)",
        )
    assert "No model configured" in text and "File uploaded: n.json" in text
    assert "30" in text and "NameError" in text and "99" not in text


async def test_chat_mode_streams_answers_and_commands(tmp_path: Path) -> None:
    """With a model, a line is a turn: the answer streams, code is shown, /usage and /model
    answer."""
    model = ScriptedModel()
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": "print('from the sandbox')"}),
        Reply.text("All done."),
    )
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        said = ("say something", "/usage", "/model gpt-4o", "/model")
        text = await typed(services, tmp_path / "o", *said)
    assert "from the sandbox" in text and "All done." in text
    assert "gpt-4o-mini" in text and "Model: gpt-4o " in text


# Escape sequences a model or a file can carry: OSC 52 (write the clipboard), ESC c (reset the
# terminal), a screen clear, 8-bit CSI, a bell, and a carriage return that overwrites the line.
EVIL = "A\x1b]52;c;ZXZpbA==\x07B\x1bcC\x1b[2JD\x9b31mE\x07F\rG\tH\n"
# Raw control characters a terminal acts on (tab and newline are kept).
CONTROLS = {chr(c) for c in range(32) if chr(c) not in "\t\n"} | {chr(c) for c in range(0x7F, 0xA0)}


def assert_inert(text: str) -> None:
    found = sorted({hex(ord(c)) for c in text if c in CONTROLS})
    assert not found, f"control characters reached the terminal: {found}"


@pytest.mark.sandbox
async def test_ask_strips_control_sequences_from_what_it_prints(tmp_path: Path) -> None:
    """`labbot ask` prints the model's text, its code and the code's output without escape
    sequences (tabs and newlines kept); --json keeps them, escaped, in the JSON."""
    code_text = f"print({EVIL!r})"
    env_base = {"OPENAI_API_KEY": "sk-test", "DEFAULT_MODEL": "gpt-4o-mini"}
    outputs = {}
    for mode in ("plain", "json"):
        async with FakeOpenAI() as api:
            api.enqueue(Reply.tool_call(TOOL_NAME, {"code": code_text}), Reply.text(EVIL))
            env = {**env_base, "OPENAI_BASE_URL": api.base_url}
            env["LABBOT_DATA_DIR"] = str(tmp_path / mode)
            args = ["ask", "show me", "--user", "7", "--output-dir", str(tmp_path / "o")]
            outputs[mode] = await run_labbot(
                *args, *(["--json"] if mode == "json" else []), env=env
            )
    status, out, err = outputs["plain"]
    assert status == 0, err
    assert_inert(out)
    assert_inert(err)
    assert "ABCDEF\nG\tH" in out and "ABCDEF\nG\tH" in err  # answer on stdout, output on stderr
    status, out, err = outputs["json"]
    assert status == 0, err
    assert_inert(out)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["text"] for e in events if e["type"] == "final"] == [EVIL]


async def test_chat_strips_control_sequences(tmp_path: Path) -> None:
    """The terminal chat shows model text, code, output, values and errors without escape
    sequences, in console mode and in chat mode."""
    code_text = f"print({EVIL!r}); v = {EVIL!r}; raise ValueError({EVIL!r})"
    model = ScriptedModel()
    model.enqueue(Reply.tool_call(TOOL_NAME, {"code": code_text}), Reply.text(EVIL))
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        chat = await typed(services, tmp_path / "o", "say something", width=200)
    async with open_fake_app(fake_settings(tmp_path / "c"), None) as services:
        typed_code = code_text.replace("raise", "v; raise")
        console = await typed(services, tmp_path / "o", typed_code, "v", width=200)
    for text in (chat, console):
        assert_inert(text)
        assert "ABCDEF" in text and "ValueError" in text


def model_env(tmp_path: Path, api: FakeOpenAI) -> dict[str, str]:
    """The environment of a `labbot` command that talks to ``api``."""
    return {
        "LABBOT_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_WARM_POOL": "0",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": api.base_url,
        "DEFAULT_MODEL": "gpt-4o-mini",
    }


async def test_chat_reads_piped_lines(tmp_path: Path, restore_logging: None) -> None:
    """`labbot chat` with its input piped (no terminal) reads plain lines: a message, a bad
    command answered in one line, /quit; the answer is printed once, its log lines are not."""
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text("Piped answer."))
        env = model_env(tmp_path, api)
        piped = "hello\n/upload nowhere.csv\n/quit\nnever sent\n"
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["chat"], input=piped, env=env, catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    assert result.output.count("Piped answer.") == 1, result.output
    assert "Not uploaded: nowhere.csv does not exist." in result.output
    assert len(api.requests) == 1 and "INFO" not in result.output


async def test_ask_prints_the_upload_receipt_without_chat_markup(
    tmp_path: Path, restore_logging: None
) -> None:
    """`labbot ask --attach` confirms the upload in plain words (no `**` or backticks)."""
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text("Read it."))
        env = model_env(tmp_path, api)
        args = ["ask", "read it", "--user", "7", "--attach", str(note)]
        result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "File uploaded: notes.txt" in result.stderr, result.stderr
    assert "**" not in result.stderr and "`" not in result.stderr, result.stderr


@pytest.mark.sandbox
async def test_console_says_out_of_memory_once(tmp_path: Path) -> None:
    """A cell that runs out of memory: the console says so once (the note), not the error and
    then the note repeating it."""
    from labbot.app import open_app
    from labbot.config import load_settings

    settings = load_settings(
        LABBOT_DATA_DIR=tmp_path / "d", SANDBOX_MEMORY_MB=300, SANDBOX_WARM_POOL=0
    )
    async with open_app(settings) as services:
        text = await typed(services, tmp_path / "o", "x = bytearray(2 * 10**9)", width=400)
    assert text.count("ran out of memory") == 1, text
