"""The terminal chat in process, on the in-memory fakes (InMemoryExecutor, ScriptedModel): slash
commands that survive bad input, Markdown answers, streamed text kept as sent, Ctrl-C that stops
a cell or an answer and keeps the session, and the status line naming the slow step."""

from __future__ import annotations

import asyncio
import gc
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rich.console import Console

from labbot.app import App
from labbot.core import ToolStarted, progress, progress_to
from labbot.frontends.terminal import TerminalChat
from labbot.frontends.terminal_view import TurnView
from labbot.llm.tools import TOOL_NAME
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel


class Screen(io.StringIO):
    """A console's file that can be waited on for a line."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def shows(self, pattern: str) -> None:
        while not re.search(pattern, self.getvalue(), re.M):
            self.changed.clear()
            await self.changed.wait()


def make_chat(services: App, tmp_path: Path, screen: io.StringIO, width: int = 100) -> TerminalChat:
    console = Console(file=screen, width=width, color_system=None)
    return TerminalChat(
        services, user="me", conversation="t", output_dir=tmp_path / "out", console=console
    )


async def inputs(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def typed(services: App, tmp_path: Path, *items: str, width: int = 100) -> str:
    screen = io.StringIO()
    await make_chat(services, tmp_path, screen, width).run(inputs(*items))
    return screen.getvalue()


async def test_bad_slash_commands_answer_in_one_line_and_keep_the_session(tmp_path: Path) -> None:
    """/upload of a missing file, a folder, a name with a quote; /rm of an unknown id, /rm and
    an unknown command alone: one line each, and the variables are still there. A good upload
    prints its confirmation without chat markup."""
    (tmp_path / "a folder").mkdir()
    (tmp_path / "it's.csv").write_text("a\n1\n")
    missing, folder, quoted = tmp_path / "missing.csv", tmp_path / "a folder", tmp_path / "it's.csv"
    bad = [
        f"/upload {missing}",
        f"/upload '{folder}'",
        f"/upload {tmp_path}/missing's.csv",
        "/rm nosuchid",
        "/rm",
        "/frobnicate",
    ]
    async with open_fake_app(fake_settings(tmp_path / "d"), None) as services:
        await typed(services, tmp_path, "x = 41")
        text = await typed(
            services, tmp_path, *bad, f"/upload {quoted}", "print(x + 1)", width=1000
        )
    said = text.splitlines()[1:]  # after the banner
    assert "Traceback" not in text
    assert said[:6] == [
        f"Not uploaded: {missing} does not exist.",
        f"Not uploaded: {folder} is a folder (upload the files in it).",
        f"Not uploaded: {tmp_path}/missing's.csv does not exist.",
        said[3],
        "Usage: /rm ID... (/files lists the ids)",
        "Unknown command /frobnicate. /help lists them.",
    ], said
    assert said[3].startswith("No file with id 'nosuchid'"), said
    assert "File uploaded: it's.csv" in text and "**" not in text and "`" not in text
    assert said[-1] == "42"


async def test_model_refuses_an_unknown_name_unless_forced(tmp_path: Path) -> None:
    """`/model nonexistent-model` is refused in one line naming the allowed ones, and the
    model stays; `--force` adds it."""
    async with open_fake_app(fake_settings(tmp_path / "d"), ScriptedModel()) as services:
        text = await typed(
            services, tmp_path, "/model nonexistent-model", "/model", "/model my-model --force"
        )
        assert services.engine is not None
        chosen = await services.engine.model_for("me")
    lines = text.splitlines()
    refused = [line for line in lines if "nonexistent-model" in line]
    assert len(refused) == 1 and "gpt-4o-mini" in refused[0], text
    assert any(line.startswith("Model: gpt-4o-mini (allowed:") for line in lines), text
    assert chosen.name == "my-model"


async def test_a_markdown_answer_is_rendered(tmp_path: Path) -> None:
    """The answer is shown as Markdown: a heading without `##`, a table drawn without pipes,
    inline code without backticks."""
    model = ScriptedModel()
    answer = "## Result\n\n| region | units |\n|---|---|\n| north | 10 |\n\nUse `df.head()`."
    model.enqueue(Reply.text(answer, chunks=7))
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        text = await typed(services, tmp_path, "summarise")
    answer_part = text.split("\n", 1)[1]
    assert re.search(r"^\s*Result\s*$", answer_part, re.M), text
    assert "##" not in answer_part and "|" not in answer_part and "`" not in answer_part, text
    assert re.search(r"^\s*region\s+units\s*$", answer_part, re.M), text
    assert re.search(r"^\s*north\s+10\s*$", answer_part, re.M), text
    assert "Use df.head()." in answer_part


async def test_a_streamed_answer_keeps_its_backslashes(tmp_path: Path) -> None:
    """An answer streamed one character a chunk shows each backslash once, as sent."""
    model = ScriptedModel()
    answer = "Print it with print('step 9\\nstep 10') in C:\\temp"
    model.enqueue(Reply.text(answer, chunks=len(answer)))
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        text = await typed(services, tmp_path, "how?")
    assert "print('step 9\\nstep 10') in C:\\temp" in text, text
    assert "\\\\" not in text


async def test_ctrl_c_stops_a_busy_cell_and_keeps_the_variables(tmp_path: Path) -> None:
    """Interrupting `while True: pass` stops the cell (KeyboardInterrupt shown), not the
    session: the next cell sees the earlier variable."""
    screen = Screen()
    async with open_fake_app(fake_settings(tmp_path / "d"), None) as services:
        chat = make_chat(services, tmp_path, screen)

        async def press_ctrl_c() -> None:
            await screen.shows(r"^busy$")
            chat.interrupt()

        presser = asyncio.create_task(press_ctrl_c())
        busy = "print('busy', flush=True)\nwhile True:\n    pass\n"
        async with asyncio.timeout(30):
            await chat.run(inputs("kept = 'still here'", busy, "print(kept)"))
        await presser
    text = screen.getvalue()
    assert "KeyboardInterrupt" in text, text
    assert re.search(r"^still here$", text, re.M), text


async def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(tmp_path: Path) -> None:
    """Interrupting a turn whose model never answers stops that turn only; the next works."""
    model = ScriptedModel()
    never = asyncio.Event()

    async def first_hangs(body: dict[str, Any]) -> Reply:
        if len(model.requests) == 1:
            await never.wait()
        return Reply.text("second answer")

    model.respond_with(first_hangs)
    screen = io.StringIO()
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        chat = make_chat(services, tmp_path, screen)

        async def press_ctrl_c() -> None:
            await model.wait_for_requests(1)
            chat.interrupt()

        presser = asyncio.create_task(press_ctrl_c())
        async with asyncio.timeout(30):
            await chat.run(inputs("first", "again"))
        await presser
    text = screen.getvalue()
    assert "Stopped." in text and "second answer" in text, text


def test_the_status_line_names_the_slow_step_with_its_time() -> None:
    """The status line names the turn's step, or a slow step inside it (reported through
    ``labbot.core.progress``), with the seconds it has taken."""
    now = [100.0]
    view = TurnView(Console(file=io.StringIO()), clock=lambda: now[0])
    view.step("waiting for the model")
    now[0] += 2.5
    assert view.status() == "waiting for the model · 2.5s  (Ctrl-C stops)"
    with progress_to(view.progress), progress("starting a sandbox"):
        now[0] += 1.25
        assert view.status().startswith("starting a sandbox · 1.2")
    assert view.status().startswith("waiting for the model · 3.8s")


async def test_ctrl_c_during_the_models_code_leaves_nothing_behind(tmp_path: Path) -> None:
    """Ctrl-C while the model's code runs stops the turn; no task of it is left pending for the
    event loop to complain about later (prompt_toolkit showed "Unhandled exception in event
    loop" and swallowed the next Enter), and the next turn answers."""
    model = ScriptedModel()
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": "while True:\n    pass"}),
        Reply.text("second answer"),
    )
    complaints: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: complaints.append(context))
    screen = io.StringIO()
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        chat = make_chat(services, tmp_path, screen)
        running = asyncio.Event()
        shown = chat.render

        async def render(view: Any, event: Any) -> None:
            await shown(view, event)
            if isinstance(event, ToolStarted):  # the engine goes on to wait for the code
                running.set()

        chat.render = render  # type: ignore[method-assign]

        async def press_ctrl_c() -> None:
            await running.wait()
            chat.interrupt()  # with a model, one Ctrl-C cancels the turn

        presser = asyncio.create_task(press_ctrl_c())
        async with asyncio.timeout(30):
            await chat.run(inputs("slow", "again"))
        await presser
        gc.collect()  # a pending task left behind is reported when it is collected
        await asyncio.sleep(0)
    assert complaints == []
    assert "Stopped." in screen.getvalue() and "second answer" in screen.getvalue()


async def test_upload_takes_a_name_with_spaces_and_quotes_as_typed(tmp_path: Path) -> None:
    """`/upload my file.csv` and `/upload it's "q".csv` upload the one file so named (shell
    quoting still works); two names that exist are two uploads."""
    (tmp_path / "my file.csv").write_text("a\n1\n")
    (tmp_path / 'it\'s "q".csv').write_text("a\n2\n")
    (tmp_path / "b.csv").write_text("a\n3\n")
    lines = [
        f"/upload {tmp_path}/my file.csv",
        f'/upload {tmp_path}/it\'s "q".csv',
        f"/upload {tmp_path}/b.csv '{tmp_path}/my file.csv'",
    ]
    async with open_fake_app(fake_settings(tmp_path / "d"), None) as services:
        text = await typed(services, tmp_path, *lines, width=1000)
        names = sorted(r.name for r in await services.store.list("me"))
    assert "Not uploaded" not in text, text
    assert text.count("File uploaded:") == 4
    assert len(names) == 4 and names.count("b.csv") == 1, names


async def test_upload_refuses_a_symlink_unless_asked(tmp_path: Path) -> None:
    """`/upload link.csv` (a link to another file) stores nothing and names the target;
    `/upload --follow-symlinks link.csv` stores it and names the real path."""
    secret = tmp_path / "secret.txt"
    secret.write_text("operator only\n")
    (tmp_path / "link.csv").symlink_to(secret)
    async with open_fake_app(fake_settings(tmp_path / "d"), None) as services:
        text = await typed(services, tmp_path, f"/upload {tmp_path}/link.csv", width=1000)
        assert "symbolic link" in text and str(secret) in text, text
        assert await services.store.list("me") == []
        line = f"/upload --follow-symlinks {tmp_path}/link.csv"
        text = await typed(services, tmp_path, line, width=1000)
        assert f"uploaded the file it points to, {secret}" in text, text
        [record] = await services.store.list("me")
    assert record.name == "link.csv"


async def test_files_shows_whole_ids_in_a_narrow_terminal(tmp_path: Path) -> None:
    """/files in 80 columns shows each id whole (/rm needs it), however long the name; the
    other columns wrap instead."""
    name = "quarterly sales by region and product line, final version.csv"
    (tmp_path / name).write_text("a\n1\n")
    async with open_fake_app(fake_settings(tmp_path / "d"), None) as services:
        await typed(services, tmp_path, f"/upload '{tmp_path}/{name}'")
        [record] = await services.store.list("me")
        text = await typed(services, tmp_path, "/files", width=80)
    assert record.id in text, text


async def test_an_upload_evicted_by_the_next_is_not_given_to_the_model(tmp_path: Path) -> None:
    """With room for one file, a second /upload evicts the first (its receipt says so); the
    next message names only the live file instead of failing on the evicted one's id."""
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("x\n1\n")
    model = ScriptedModel()
    model.enqueue(Reply.text("ok"))
    settings = fake_settings(tmp_path / "d", MAX_FILES_PER_USER=1)
    async with open_fake_app(settings, model) as services:
        lines = [f"/upload {tmp_path}/a.csv", f"/upload {tmp_path}/b.csv", "what is it?"]
        text = await typed(services, tmp_path, *lines, width=1000)
        [live] = await services.store.list("me")
    assert "was removed" in text and "ok" in text, text
    asked = str(model.requests[-1]["messages"][-1]["content"])
    assert live.id in asked and "a.csv" not in asked, asked
