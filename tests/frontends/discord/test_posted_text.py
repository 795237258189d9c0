"""What the bot posts cannot be turned against the channel (security review of issue 12): a
hostile model's huge answer is cut after MAX_MESSAGES_PER_ANSWER messages with the whole of it
attached; its masked links show their real address; names and error texts are posted
Markdown-escaped. The real discord.py client against the loopback Discord emulator."""

from __future__ import annotations

from labbot.frontends.discord.render import MAX_MESSAGES_PER_ANSWER
from tests.fakes.openai_server import Reply
from tests.frontends.discord.world import World, marker

PHISH = "[Download your results](https://evil.example/login)"
NAME = "**bold** ||spoiler|| `x` # head.csv"


def bot_messages(world: World) -> list[dict]:
    """Every message the bot has posted (as it reads now), in order."""
    me = str(world.fake.bot_user["id"])
    return [m for m in world.fake.messages.values() if m["author"]["id"] == me]


async def test_a_huge_answer_is_cut_and_attached(world: World) -> None:
    """A 300,000-character answer makes at most MAX_MESSAGES_PER_ANSWER messages and one line
    saying it was cut, with the whole answer attached as answer.md."""
    fake = world.fake
    answer = "x " * 150_000
    world.api.enqueue(Reply.text(answer, chunks=50))
    await fake.user_message("hi", mention_bot=True)
    cut = await fake.wait_for(lambda s: "too long to post here" in (s.content or ""))
    assert "300,000 characters" in cut.content and "answer.md" in cut.content
    assert cut.files == {"answer.md": answer.encode()}
    await marker(world)
    posted = [m for m in bot_messages(world) if m["content"].startswith("x x")]
    assert len(posted) == MAX_MESSAGES_PER_ANSWER


async def test_masked_links_show_their_address(world: World) -> None:
    """The model's masked link is posted as its text and its real address."""
    fake = world.fake
    world.api.enqueue(Reply.text(f"Done. {PHISH}"))
    await fake.user_message("hi", mention_bot=True)
    sent = await fake.wait_for(
        lambda s: (s.content or "").startswith("Done.") and "⏳" not in s.content
    )
    assert sent.content == "Done. Download your results (<https://evil.example/login>)"


async def test_error_texts_repeat_names_escaped(world: World) -> None:
    """An empty file's error names it escaped, so nothing turns bold or hidden."""
    fake = world.fake
    await fake.user_message("", files={NAME: b""}, mention_bot=True)
    error = await fake.wait_for(lambda s: "empty" in (s.content or ""))
    for markdown in ("**bold**", "||spoiler||", "`x`"):
        assert markdown not in error.content, error.content
    assert error.content.count("\\*\\*bold\\*\\* \\|\\|spoiler\\|\\|") == 1
