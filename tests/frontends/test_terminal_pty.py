"""`labbot chat` as a person uses it: a real process on a pseudo-terminal (pexpect), its screen
read through a terminal emulator (pyte), the real sandbox, and the loopback model API."""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from labbot.llm.tools import TOOL_NAME
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontends.pty_terminal import Terminal

UP = "\x1b[A"
CTRL_C = "\x03"


@contextmanager
def chat(tmp_path: Path, **env: str) -> Iterator[Terminal]:
    """`labbot chat` on a fresh screen, at its first prompt; closed (Ctrl-D) afterwards."""
    settings = {"LABBOT_DATA_DIR": str(tmp_path / "data"), "SANDBOX_WARM_POOL": "0", **env}
    terminal = Terminal("chat", env=settings, cwd=tmp_path)
    try:
        terminal.wait(terminal.at_prompt, what="the first prompt")
        yield terminal
    finally:
        terminal.close()


def model_env(api: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": api.base_url,
        "DEFAULT_MODEL": "gpt-4o-mini",
        "LLM_MAX_RETRIES": "0",
    }


async def in_thread(scenario: Callable[[], None]) -> None:
    """Drive the terminal in a thread: pexpect blocks, the model API serves on this loop."""
    await asyncio.to_thread(scenario)


def test_a_pasted_function_runs_as_one_cell(tmp_path: Path) -> None:
    """A pasted `def` block (bracketed paste, as terminals send it) is one cell: no
    IndentationError, and the function is defined afterwards; a typed `for` loop waits for the
    blank line that ends it."""
    with chat(tmp_path) as term:
        term.paste("def double(x):\n    y = x * 2\n    return y\n")
        term.enter()
        term.enter("print(double(21))")
        term.send("for i in range(2):\r")
        term.send("print('row', i)\r")
        term.enter()
        text = term.text()
    assert "Error" not in text, text
    assert re.search(r"^42$", text, re.M), text
    assert re.search(r"^row 0\nrow 1$", text, re.M), text


def test_ctrl_c_stops_a_busy_cell_and_keeps_the_variables(tmp_path: Path) -> None:
    """Ctrl-C during `while True: pass` stops the cell, not the chat; earlier variables stay."""
    with chat(tmp_path) as term:
        term.enter("kept = 'still here'")
        prompts = term.prompts()
        term.paste("print('busy', flush=True)\nwhile True:\n    pass\n")
        term.send("\r")
        term.wait(r"^busy$", what="the cell running")
        term.send(CTRL_C)
        term.wait(lambda: term.prompts() > prompts and term.at_prompt(), what="a prompt")
        term.enter("print(kept)")
        text = term.text()
    assert "KeyboardInterrupt" in text
    assert re.search(r"^still here$", text, re.M), text


def test_ctrl_c_at_the_prompt_clears_the_line_and_twice_leaves(tmp_path: Path) -> None:
    """Ctrl-C at the prompt clears what was typed; a second one in a row ends the chat (0)."""
    with chat(tmp_path) as term:
        term.send("half typed")
        term.wait("half typed")
        term.send(CTRL_C)
        term.wait(lambda: "half typed" not in term.text() and term.at_prompt(), 30, "cleared")
        term.send(CTRL_C)
        status = term.close(keys="")
    assert status == 0


def test_bad_uploads_and_commands_keep_the_session(tmp_path: Path) -> None:
    """/upload of a missing file, a folder, or a name with a quote, and /rm of an unknown id,
    each answer in one line; the session (and its variables) goes on. A good upload prints a
    confirmation without chat markup."""
    (tmp_path / "a folder").mkdir()
    (tmp_path / "it's.csv").write_text("a\n1\n")
    with chat(tmp_path) as term:
        term.enter("x = 41")
        term.enter("/upload missing.csv")
        term.enter("/upload 'a folder'")
        term.enter("/upload it's.csv")
        term.enter("/upload missing's.csv")
        term.enter("/rm nosuchid")
        term.enter("print(x + 1)")
        text = term.text()
    assert "Traceback" not in text, text
    assert "Not uploaded: missing.csv does not exist." in text
    assert "Not uploaded: a folder is a folder" in text
    assert "Not uploaded: missing's.csv does not exist." in text
    assert "No file with id 'nosuchid'" in text
    assert "File uploaded: it's.csv" in text and "**" not in text and "`" not in text
    assert re.search(r"^42$", text, re.M), text


def test_history_with_the_arrow_keys_across_runs(tmp_path: Path) -> None:
    """Up brings back the last input, in this run and in the next; the history file is the
    user's alone (0600)."""
    with chat(tmp_path) as term:
        term.enter("print(6 * 7)")
        term.send(UP)
        term.wait(lambda: term.lines().count(">>> print(6 * 7)") == 2, what="the input recalled")
        term.enter()
        first = term.text()
    assert first.count("\n42") == 2 and "^[[A" not in first, first
    history = tmp_path / "data" / "chat-history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    with chat(tmp_path) as term:
        term.send(UP)
        term.wait(r"^>>> print\(6 \* 7\)$", what="the last run's input")
        term.enter()
        second = term.text()
    assert re.search(r"^42$", second, re.M), second


async def test_a_markdown_answer_is_rendered(tmp_path: Path) -> None:
    """Once the answer is complete it is shown as Markdown: a heading without its `##`, a table
    drawn without pipes, inline code without backticks."""
    answer = "## Result\n\n| region | units |\n|---|---|\n| north | 10 |\n\nUse `df.head()`."
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text(answer, chunks=6))

        def scenario() -> None:
            with chat(tmp_path, **model_env(api)) as term:
                term.enter("summarise")
                screen.append(term.text())

        screen: list[str] = []
        await in_thread(scenario)
    text = screen[0]
    assert re.search(r"^\s*Result\s*$", text, re.M), text
    assert "##" not in text and "|" not in text and "`" not in text, text
    assert re.search(r"^\s*region\s+units\s*$", text, re.M), text
    assert re.search(r"^\s*north\s+10\s*$", text, re.M) and "─" in text, text
    assert "Use df.head()." in text


async def test_streamed_backslashes_stay_as_sent(tmp_path: Path) -> None:
    """An answer streamed one character a chunk keeps every backslash (no escaping per chunk)."""
    answer = "Print it with print('step 9\\nstep 10') in C:\\temp"
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text(answer, chunks=len(answer)))

        def scenario() -> None:
            with chat(tmp_path, **model_env(api)) as term:
                term.enter("how?")
                screen.append(term.text())

        screen: list[str] = []
        await in_thread(scenario)
    assert "print('step 9\\nstep 10') in C:\\temp" in screen[0], screen[0]
    assert "\\\\" not in screen[0]


async def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(tmp_path: Path) -> None:
    """Ctrl-C while the model has not answered stops that turn only; the next one works. The
    status line names what it waits for, with the time."""
    async with FakeOpenAI() as api:
        api.enqueue(Reply.hang(), Reply.text("second answer"))

        def scenario() -> None:
            with chat(tmp_path, **model_env(api)) as term:
                prompts = term.prompts()
                term.send("first\r")
                term.wait(lambda: api.requests and "waiting for the model" in term.raw, 60, "sent")
                term.send(CTRL_C)
                term.wait(lambda: term.prompts() > prompts and term.at_prompt())
                term.enter("again")
                screen.append(term.text())
                raw.append(term.raw)

        screen: list[str] = []
        raw: list[str] = []
        await in_thread(scenario)
    assert "Stopped." in screen[0] and "second answer" in screen[0], screen[0]
    assert re.search(r"waiting for the model · \d+\.\ds", raw[0])


async def test_status_names_the_sandbox_start_and_logs_stay_off_screen(tmp_path: Path) -> None:
    """While the model's code waits for a sandbox the status line says so; a failed turn is one
    sentence on screen, its log line goes to chat.log."""
    async with FakeOpenAI() as api:
        api.enqueue(
            Reply.tool_call(TOOL_NAME, {"code": "print('ran')"}),
            Reply.text("done"),
            Reply.error(400, "bad request"),
        )

        def scenario() -> None:
            with chat(tmp_path, **model_env(api)) as term:
                term.enter("run something")
                term.enter("fail now")
                screen.append(term.text())
                raw.append(term.raw)

        screen: list[str] = []
        raw: list[str] = []
        await in_thread(scenario)
    assert "starting a sandbox ·" in raw[0] and "running code ·" in raw[0]
    assert re.search(r"^ran$", screen[0], re.M) and "done" in screen[0]
    assert "WARNING" not in raw[0] and "turn.failed" not in raw[0], screen[0]
    log = (tmp_path / "data" / "chat.log").read_text()
    assert "turn.failed" in log
