"""`labbot chat` as a person uses it: a real process on a pseudo-terminal (pexpect), its screen
read through a terminal emulator (pyte). Few and long on purpose (each starts `labbot`): what
needs a real terminal (bracketed paste, arrow keys, Ctrl-C as a key and as a signal, the status
line); the rest is in test_terminal_chat.py and test_terminal_input.py, in process."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontends.pty_terminal import Terminal

UP = "\x1b[A"
CTRL_C = "\x03"


@contextmanager
def chat(tmp_path: Path, **env: str) -> Iterator[Terminal]:
    """`labbot chat` on a fresh screen, at its first prompt; ended (Ctrl-D) afterwards."""
    settings = {"LABBOT_DATA_DIR": str(tmp_path / "data"), "SANDBOX_WARM_POOL": "0", **env}
    terminal = Terminal("chat", env=settings, cwd=tmp_path)
    try:
        terminal.wait(terminal.at_prompt, what="the first prompt")
        yield terminal
    finally:
        terminal.close()


@pytest.mark.sandbox
def test_console_paste_ctrl_c_and_history_across_runs(tmp_path: Path) -> None:
    """In the Python console: a pasted `def` is one cell; a typed `for` waits for its blank
    line; Ctrl-C (SIGINT) stops a busy cell and the variables stay; a bad /upload is one line;
    the status line named the sandbox start. In the next run Up recalls the last input; at the
    prompt Ctrl-C clears the line, and twice leaves with status 0."""
    with chat(tmp_path) as term:
        term.paste("def double(x):\n    y = x * 2\n    return y\n")
        term.enter()
        term.enter("print(double(21))")
        term.send("for i in range(2):\r")
        term.send("print('row', i)\r")
        term.enter()
        prompts = term.prompts()
        term.paste("print('busy', flush=True)\nwhile True:\n    pass\n")
        term.send("\r")
        term.wait(r"^busy$", what="the cell running")
        term.send(CTRL_C)
        term.wait(lambda: term.prompts() > prompts and term.at_prompt(), what="a prompt")
        term.enter("/upload missing.csv")
        term.enter("print(double(2), i)")
        text, raw = term.text(), term.raw
    assert "IndentationError" not in text and "NameError" not in text, text
    assert re.search(r"^42$", text, re.M) and re.search(r"^row 0\nrow 1$", text, re.M), text
    assert "KeyboardInterrupt" in text and re.search(r"^4 1$", text, re.M), text
    after_upload = text.split(">>> /upload missing.csv\n", 1)[1]
    assert after_upload.startswith("Not uploaded: missing.csv does not exist.\n>>> "), text
    assert "^[[A" not in text and re.search(r"starting a sandbox · \d+\.\ds", raw), raw[-2000:]

    again = {"LABBOT_DATA_DIR": str(tmp_path / "data"), "SANDBOX_WARM_POOL": "0"}
    term = Terminal("chat", env=again, cwd=tmp_path)
    term.wait(term.at_prompt, what="the second run's prompt")
    term.send(UP)
    term.wait(r"^>>> print\(double\(2\), i\)$", what="the last run's input")
    term.send(CTRL_C)
    hint = "(Ctrl-C again or Ctrl-D to leave)"  # in the cleared prompt line, not printed above

    def hinted() -> bool:
        return term.screen.display[term.screen.cursor.y].startswith(f">>> {hint}")

    term.wait(hinted, 30, "the hint")
    term.send(CTRL_C)
    assert term.close(keys="") == 0


async def test_model_chat_markdown_backslashes_ctrl_c_and_logs(tmp_path: Path) -> None:
    """With a model: the answer is rendered as Markdown with its backslashes as sent; Ctrl-C
    while the model has not answered stops that turn (the status line named the wait, with
    its time) and the next works; a failed turn is one sentence and its log line goes to
    chat.log, not the screen."""
    answer = "## Result\n\n| region | units |\n|---|---|\n| north | 10 |\n\nRun `f('C:\\temp')`."
    async with FakeOpenAI() as api:
        api.enqueue(
            Reply.text(answer, chunks=len(answer)),
            Reply.hang(),
            Reply.text("second answer"),
            Reply.error(400, "bad request"),
        )
        env = {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": api.base_url,
            "DEFAULT_MODEL": "gpt-4o-mini",
            "LLM_MAX_RETRIES": "0",
        }

        def scenario() -> tuple[str, str]:
            with chat(tmp_path, **env) as term:
                term.enter("summarise")
                prompts = term.prompts()
                term.send("first\r")
                term.wait(lambda: len(api.requests) >= 2 and "waiting for the model" in term.raw)
                term.send(CTRL_C)
                term.wait(lambda: term.prompts() > prompts and term.at_prompt(), what="prompt")
                term.enter("again")
                term.enter("fail now")
                return term.text(), term.raw

        text, raw = await asyncio.to_thread(scenario)
    assert re.search(r"^\s*Result\s*$", text, re.M) and "##" not in text, text
    assert re.search(r"^\s*north\s+10\s*$", text, re.M) and "|" not in text, text
    assert "Run f('C:\\temp')." in text and "\\\\" not in text, text
    assert "Stopped." in text and "second answer" in text, text
    assert re.search(r"waiting for the model · \d+\.\ds", raw)
    assert "WARNING" not in raw and "turn.failed" not in raw, text
    assert "turn.failed" in (tmp_path / "data" / "chat.log").read_text()


@pytest.mark.sandbox
def test_console_completes_lists_variables_and_fills_the_width(tmp_path: Path) -> None:
    """In the Python console: Tab completes a variable, an attribute and (in quotes) a stored
    file's name, asked of the session; /vars lists each variable's type, shape and memory; a
    wide DataFrame uses the terminal's 200 columns (not pandas' 80); a traceback shows the
    user's code, not the kernel's frames."""
    (tmp_path / "sales_2024.csv").write_text("region,amount\nnorth,10\nsouth,20\n")
    settings = {"LABBOT_DATA_DIR": str(tmp_path / "data"), "SANDBOX_WARM_POOL": "0"}
    term = Terminal("chat", env=settings, cwd=tmp_path, cols=200)
    try:
        term.wait(term.at_prompt, what="the first prompt")
        term.enter(f"/upload {tmp_path / 'sales_2024.csv'}")
        term.enter(
            "import pandas as pd; wide_frame = pd.DataFrame("
            "{f'width_{i}': range(3) for i in range(17)})"
        )
        term.wait(lambda: term.at_prompt() and term.prompts() >= 3, what="the cell")
        term.send("wide_f\t")
        term.wait(r">>> wide_frame$", what="the name completed")
        term.send(".colu\t")
        term.wait(r">>> wide_frame\.columns$", what="the attribute completed")
        term.send("\x15")  # Ctrl-U: clear the line
        term.send("sales = load_file('sales_\t")
        term.wait(r"load_file\('sales_2024\.csv$", what="the file name completed")
        term.enter("')")
        term.enter("/vars")
        term.wait(r"^wide_frame\s+DataFrame\s+3 x 17\s+\S", what="the variables")
        term.enter("wide_frame")
        term.wait(r"width_16", what="the frame")
        term.enter("load_file('nope.csv')")
        term.wait(r"FileNotFoundError", what="the error")
        text = term.text()
    finally:
        term.close()
    assert re.search(r"^sales\s+DataFrame\s+2 x 2\s+", text, re.M), text
    shown = text.split(">>> wide_frame\n", 1)[1]
    header = shown.splitlines()[0]
    assert "width_0" in header and "width_16" in header and "..." not in header, shown
    assert 150 < len(header) <= 200, header
    assert "kernel.py" not in text and "<cell" in text, text


@pytest.mark.sandbox
@pytest.mark.parametrize(
    ("env", "sequence"),
    [
        ({"TERM": "xterm-kitty"}, "\x1b_Gf=100,a=T,m="),
        ({"TERM_PROGRAM": "iTerm.app"}, "\x1b]1337;File=inline=1;"),
        ({}, None),
    ],
    ids=["kitty", "iterm2", "plain"],
)
def test_console_shows_the_last_figure_where_the_terminal_can(
    tmp_path: Path, env: dict[str, str], sequence: str | None
) -> None:
    """A cell that draws a figure: in kitty or iTerm2 the figure is shown in the terminal
    (its image protocol); in any other terminal only its path is printed."""
    settings = {"LABBOT_DATA_DIR": str(tmp_path / "data"), "SANDBOX_WARM_POOL": "0", **env}
    term = Terminal("chat", env=settings, cwd=tmp_path)
    try:
        term.wait(term.at_prompt, what="the first prompt")
        term.enter("import matplotlib.pyplot as plt; plt.plot([1, 3, 2]);")
        term.wait(r"^file: .*\.png", what="the figure's file")
        term.wait(lambda: term.at_prompt() and term.prompts() >= 2, what="the prompt")
        raw = term.raw
    finally:
        term.close()
    if sequence is None:
        assert "\x1b_G" not in raw and "\x1b]1337;" not in raw
    else:
        assert sequence in raw
