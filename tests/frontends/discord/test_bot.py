"""The real discord.py client against the loopback Discord emulator, with the real engine and
file store on the in-memory fakes (ScriptedModel, InMemoryExecutor); one conversation on the
real sandbox and the openai SDK against the loopback API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from labbot.llm.tools import TOOL_NAME
from tests.conftest import Clock
from tests.fakes.discord_server import FakeDiscord, Sent
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontends.discord.world import labbot_on

CSV = b"month,region,units\n2026-01,north,10\n2026-01,south,7\n2026-02,north,12\n"
PLOT = (
    "import matplotlib.pyplot as plt\ndf = load_file('sales.csv')\n"
    "df.groupby('region')['units'].sum().plot(kind='bar')"
)
OPTIONS = {"CODE_EXECUTION_TIMEOUT": 60, "MAX_FILE_SIZE_MB": 1}


@pytest.fixture
async def env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple]:
    """The emulator, the scripted model and the bot on the in-memory fakes."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    async with FakeDiscord() as fake:
        fake.patch_discord()
        bot_on = labbot_on(fake, tmp_path / "data", OPTIONS | overrides, guild_ready_timeout=0.05)
        async with bot_on as (model, bot):
            yield fake, model, bot


@pytest.fixture
async def real_env(tmp_path: Path) -> AsyncIterator[tuple]:
    """The emulator, the loopback model API and the bot on the real sandbox and SDK."""
    async with FakeOpenAI() as api, FakeDiscord() as fake:
        fake.patch_discord()
        bot_on = labbot_on(fake, tmp_path / "data", OPTIONS, api=api, guild_ready_timeout=0.05)
        async with bot_on as (_, bot):
            yield fake, api, bot


def png() -> bytes:
    """A small PNG."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(out, "PNG")
    return out.getvalue()


def components(sent: Sent) -> list[dict]:
    """Every component (button, select) in a sent message, flattened."""
    found = []
    for row in sent.components:
        found.extend(row.get("components", [row]))
    return found


def button(sent: Sent, label: str) -> str:
    return next(c["custom_id"] for c in components(sent) if c.get("label") == label)


def text_of(fake: FakeDiscord, channel_id: int) -> str:
    """Everything the bot currently shows in a channel, in order."""
    return "\n".join(
        m.get("content") or ""
        for m in fake.messages.values()
        if int(m["channel_id"]) == channel_id and m["author"]["id"] == str(fake.bot_user["id"])
    )


@pytest.mark.sandbox
async def test_mention_with_csv_and_question(real_env) -> None:
    """A mention with a CSV and a question: the upload confirmation, then an answer with the
    plot attached."""
    fake, api, _ = real_env
    api.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": PLOT}),
        Reply.text("North sold the most; see the chart."),
    )
    await fake.user_message("who sold most? plot it", files={"sales.csv": CSV}, mention_bot=True)
    confirmation = await fake.wait_for(lambda s: "File uploaded: sales.csv" in (s.content or ""))
    assert "Your files: 1/20" in confirmation.content
    with_plot = await fake.wait_for(lambda s: any(n.endswith(".png") for n in s.files))
    assert next(iter(with_plot.files.values())).startswith(b"\x89PNG")
    assert "North sold the most" in text_of(fake, fake.channel_id)
    assert "```python" in text_of(fake, fake.channel_id)  # the code that ran is shown
    for sent in fake.sent:
        if sent.kind == "message":  # nothing the bot writes can ping anyone
            assert sent.allowed_mentions and sent.allowed_mentions["parse"] == [], sent
            assert not sent.allowed_mentions.get("replied_user"), sent


async def test_dm_is_answered(env) -> None:
    """A direct message gets an answer without a mention."""
    fake, api, _ = env
    api.enqueue(Reply.text("Hello from labbot."))
    message = await fake.user_message("hi there", dm=True)
    reply = await fake.wait_for(lambda s: "Hello from labbot" in (s.content or ""))
    assert reply.channel_id == int(message["channel_id"])


async def test_new_thread_is_answered_without_mention(env) -> None:
    """/new starts a thread; messages in it are answered without a mention and share one
    conversation."""
    fake, api, _ = env
    api.enqueue(Reply.text("First."), Reply.text("Second."))
    await fake.slash("new", [{"name": "title", "type": 3, "value": "Q3 sales"}])
    greeting = await fake.wait_for(lambda s: "ask away" in (s.content or ""))
    thread_id = greeting.channel_id
    assert thread_id != fake.channel_id
    await fake.user_message("one", channel_id=thread_id)
    await fake.wait_for(lambda s: "First." in (s.content or ""))
    await fake.user_message("two", channel_id=thread_id)
    await fake.wait_for(lambda s: "Second." in (s.content or ""))
    roles = [m["role"] for m in api.requests[1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


async def test_everyone_and_other_bots_are_ignored(env) -> None:
    """@everyone, other bots, and plain channel chatter get no answer."""
    fake, api, _ = env
    api.enqueue(Reply.text("Only this one."))
    await fake.user_message("@everyone look", mention_everyone=True)
    await fake.user_message("hey bot", author="otherbot", mention_bot=True)
    await fake.user_message("just chatting")
    real = await fake.user_message("real question", mention_bot=True)
    first = await fake.next_sent()  # the first thing the bot posts answers the real question
    assert int(first.payload["message_reference"]["message_id"]) == int(real["id"])
    await fake.wait_for(lambda s: "Only this one." in (s.content or ""))
    assert len(api.requests) == 1


async def test_three_attachments_and_an_oversize_one(env) -> None:
    """Every attachment is stored and confirmed; one over the limit is refused before it is
    downloaded."""
    fake, _, bot = env
    files = {"a.csv": b"x\n1\n", "b.json": b'{"k": 1}', "c.txt": b"hello", "big.csv": b"y"}
    await fake.user_message(
        "", files=files, declared_sizes={"big.csv": 50 * 2**20}, mention_bot=True
    )
    reply = await fake.wait_for(lambda s: "big.csv" in (s.content or ""))
    for name in ("a.csv", "b.json", "c.txt"):
        assert f"File uploaded: {name}" in reply.content
    assert "not downloaded" in reply.content and fake.downloads.get("big.csv", 0) == 0
    stored = await bot.services.store.list(str(fake.users["alice"]["id"]))
    assert sorted(r.name for r in stored) == ["a.csv", "b.json", "c.txt"]


async def test_a_failed_download_stops_none_of_the_others(env) -> None:
    """An attachment Discord does not hand over is named with why; the others are stored and
    the question is answered, the image among them shown to the model."""
    fake, model, bot = env
    model.enqueue(Reply.text("Two files, one chart."))
    fake.cdn_gone.add("gone.csv")
    files = {"a.csv": b"x\n1\n", "gone.csv": b"y\n2\n", "chart.png": png()}
    await fake.user_message("what are these?", files=files, mention_bot=True)
    notice = await fake.wait_for(lambda s: "gone.csv" in (s.content or ""))
    assert "File uploaded: a.csv" in notice.content and "File uploaded: chart.png" in notice.content
    assert "Discord did not hand over the file (HTTP 404)" in notice.content
    await fake.wait_for(lambda s: "Two files, one chart." in (s.content or ""))
    stored = await bot.services.store.list(str(fake.users["alice"]["id"]))
    assert sorted(r.name for r in stored) == ["a.csv", "chart.png"]
    question = model.requests[0]["messages"][-1]["content"]
    kinds = [part["type"] for part in question]
    assert kinds == ["text", "image_url"], kinds
    assert "gone.csv" not in question[0]["text"] and "a.csv" in question[0]["text"]


async def test_a_download_cut_off_half_way_stops_none_of_the_others(env) -> None:
    """An attachment whose download breaks off (the connection closes before the length it
    promised) is named with why and nothing of it is kept; the others are stored and the
    question is answered (before: the error ended the whole message, no file confirmed and
    the question unanswered)."""
    fake, model, bot = env
    model.enqueue(Reply.text("One table."))
    fake.cdn_cut.add("cut.csv")
    files = {"a.csv": b"x\n1\n", "cut.csv": b"y,z\n" * 50_000, "b.txt": b"notes"}
    await fake.user_message("what are these?", files=files, mention_bot=True)
    notice = await fake.wait_for(lambda s: "cut.csv" in (s.content or ""))
    assert "File uploaded: a.csv" in notice.content and "File uploaded: b.txt" in notice.content
    assert "broke off" in notice.content
    await fake.wait_for(lambda s: "One table." in (s.content or ""))
    stored = await bot.services.store.list(str(fake.users["alice"]["id"]))
    assert sorted(r.name for r in stored) == ["a.csv", "b.txt"]


async def test_long_answer_is_split(env) -> None:
    """A 5,000-character answer arrives in several messages of at most 2,000 characters."""
    fake, api, _ = env
    words = " ".join(f"word{n}" for n in range(800))
    api.enqueue(Reply.text(words))
    await fake.user_message("talk a lot", mention_bot=True)
    await fake.wait_for(lambda s: "word799" in (s.content or ""))
    mine = [m["content"] for m in fake.messages.values() if "word" in (m.get("content") or "")]
    assert len(mine) >= 3 and all(len(c) <= 2000 for c in mine)
    assert " ".join(c.replace(" ⏳", "") for c in mine).split() == words.split()


async def test_files_list_download_and_delete(env) -> None:
    """/files lists with expiry; picking a file offers download and delete; delete asks first;
    only the owner may use the menu."""
    fake, _, bot = env
    await fake.user_message("", files={"sales.csv": CSV}, mention_bot=True)
    await fake.wait_for(lambda s: "File uploaded" in (s.content or ""))
    listing = await fake.slash("files")
    shown = await fake.wait_for(lambda s: s.kind == "interaction_response")
    assert "sales.csv" in shown.content and "expires in 2 days" in shown.content
    assert shown.flags & 64
    select = next(c for c in components(shown) if c["type"] == 3)
    file_id = select["options"][0]["value"]
    stranger = await fake.click(
        shown.payload | {"id": shown.message_id}, select["custom_id"], user="bob", values=[file_id]
    )
    assert stranger is not None
    await fake.wait_for(lambda s: "not your files" in (s.content or ""))
    await fake.click(
        shown.payload | {"id": shown.message_id}, select["custom_id"], values=[file_id]
    )
    actions = await fake.wait_for(
        lambda s: bool(s.components) and "sales.csv" in (s.content or "") and s is not shown
    )
    await fake.click(actions.payload | {"id": actions.message_id}, button(actions, "Download"))
    download = await fake.wait_for(lambda s: "sales.csv" in s.files)
    assert download.files["sales.csv"] == CSV
    await fake.click(actions.payload | {"id": actions.message_id}, button(actions, "Delete"))
    confirm = await fake.wait_for(lambda s: "cannot be undone" in (s.content or ""))
    await fake.click(
        confirm.payload | {"id": actions.message_id}, button(confirm, "Yes, delete it")
    )
    await fake.wait_for(lambda s: "Deleted sales.csv" in (s.content or ""))
    assert await bot.services.store.list(str(fake.users["alice"]["id"])) == []
    assert listing["data"]["name"] == "files"


async def test_reset_and_usage(env) -> None:
    """/reset forgets the DM conversation; /usage shows tokens per model."""
    fake, api, _ = env
    api.enqueue(Reply.text("one"), Reply.text("two"))
    dm = await fake.user_message("first", dm=True)
    await fake.wait_for(lambda s: (s.content or "").startswith("one"))
    await fake.slash("reset", channel_id=int(dm["channel_id"]))
    await fake.wait_for(lambda s: "was reset" in (s.content or ""))
    await fake.user_message("second", dm=True)
    await fake.wait_for(lambda s: (s.content or "").startswith("two"))
    assert [m["role"] for m in api.requests[1]["messages"]] == ["system", "user"]
    await fake.slash("usage")
    usage = await fake.wait_for(lambda s: "Your usage" in (s.content or ""))
    assert "gpt-4o-mini" in usage.content


async def test_stop_cancels_an_infinite_loop(env) -> None:
    """/stop cancels the answer and the running code; the session still works afterwards."""
    fake, api, bot = env
    api.enqueue(
        Reply.tool_call(
            TOOL_NAME, {"code": "x = 5\nprint('looping', flush=True)\nwhile True:\n    pass"}
        )
    )
    await fake.user_message("spin", mention_bot=True)
    await fake.wait_for(lambda s: "while True" in (s.content or ""))
    await fake.slash("stop")
    await fake.wait_for(lambda s: "Stopped 1 running answer" in (s.content or ""))
    await fake.wait_for(lambda s: (s.content or "") == "Stopped.")
    assert bot.turns[int(fake.users["alice"]["id"])] == {}


@pytest.mark.parametrize("env", [{"MAX_FILES_PER_USER": 2}], indirect=True)
async def test_eviction_is_announced_by_name_only_in_private(env) -> None:
    """Storing one file past the limit removes the oldest. In a DM the confirmation names it;
    in a server channel it says an older file was removed and names none: the evicted file
    may have been uploaded in a DM (issue 18, finding 4)."""
    fake, _, _ = env
    uploads = [("hiv-test-result-private.txt", True), ("two.csv", True), ("three.csv", False)]
    uploads += [("four.csv", True)]
    for name, dm in uploads:
        await fake.user_message("", files={name: b"a\n1\n"}, mention_bot=not dm, dm=dm)
        await fake.wait_for(lambda s, n=name: f"File uploaded: {n}" in (s.content or ""))
    public = [s for s in fake.sent if "three.csv" in (s.content or "")][-1]
    assert public.kind == "message"
    assert "hiv-test" not in public.content and "`" not in public.content.split("\n")[4]
    assert "an older file was removed (see /files)" in public.content
    private = [s for s in fake.sent if "four.csv" in (s.content or "")][-1]
    assert private.kind == "dm" and "two.csv" in private.content and "removed" in private.content


async def test_expired_file_is_no_longer_listed(env) -> None:
    """After its expiry a file disappears from /files."""
    fake, _, bot = env
    clock = Clock()
    bot.services.store.clock = clock
    await fake.user_message("", files={"old.csv": b"a\n1\n"}, mention_bot=True)
    await fake.wait_for(lambda s: "File uploaded: old.csv" in (s.content or ""))
    clock.advance(hours=49)
    await fake.slash("files")
    listing = await fake.wait_for(lambda s: s.kind == "interaction_response")
    assert "no files" in listing.content


async def test_stop_button_stops_only_for_the_asker(env) -> None:
    """The Stop button under a running answer refuses others and stops it for the asker."""
    fake, api, _ = env
    api.enqueue(Reply.tool_call(TOOL_NAME, {"code": "while True:\n    pass"}))
    await fake.user_message("spin", mention_bot=True)
    running_answer = await fake.wait_for(lambda s: bool(s.components) and s.kind == "message")
    stop = button(running_answer, "Stop")
    message = fake.messages[running_answer.message_id]
    await fake.click(message, stop, user="bob")
    await fake.wait_for(lambda s: "not your question" in (s.content or ""))
    await fake.click(message, stop)
    await fake.wait_for(lambda s: (s.content or "") == "Stopped.")


async def test_model_autocomplete_and_choice(env) -> None:
    """/model autocompletes configured models and remembers the choice."""
    fake, _, _ = env
    choices = await fake.autocomplete(
        "model", [{"name": "name", "type": 3, "value": "4o", "focused": True}]
    )
    assert {"gpt-4o", "gpt-4o-mini"} <= {c["value"] for c in choices}
    assert len(choices) <= 25
    await fake.slash("model", [{"name": "name", "type": 3, "value": "gpt-4o"}])
    chosen = await fake.wait_for(lambda s: "Model: **gpt-4o**" in (s.content or ""))
    assert chosen.flags & 64


@pytest.mark.parametrize("env", [{"RATE_LIMIT_MESSAGES": 1}], indirect=True)
async def test_rate_limit_has_a_clear_message(env) -> None:
    """Past the per-user rate limit the bot says when to try again instead of answering."""
    fake, api, _ = env
    api.enqueue(Reply.text("first answer"))
    await fake.user_message("one", mention_bot=True)
    await fake.wait_for(lambda s: "first answer" in (s.content or ""))
    await fake.user_message("two", mention_bot=True)
    await fake.wait_for(lambda s: "Slow down" in (s.content or ""))
    assert len(api.requests) == 1
