"""Splitting long answers for Discord, and the edit-throttled reply stream (no Discord here)."""

from __future__ import annotations

from labbot.frontends.discord.render import (
    DISCORD_MESSAGE_LIMIT,
    MAX_KEPT_CHARS,
    MAX_MESSAGES_PER_ANSWER,
    STREAMING_INDICATOR,
    ReplyStream,
    show_links,
    split_message,
)


def test_short_text_is_one_piece() -> None:
    """Text under the limit comes back whole."""
    assert split_message("hello\nworld") == ["hello\nworld"]


def test_long_text_splits_at_lines_within_the_limit() -> None:
    """Every piece fits, pieces end at line breaks, and nothing is lost."""
    text = "\n".join(f"line {n} " + "x" * 50 for n in range(200))
    pieces = split_message(text)
    assert len(pieces) > 1 and all(len(p) <= DISCORD_MESSAGE_LIMIT for p in pieces)
    assert "\n".join(pieces) == text


def test_code_blocks_are_closed_and_reopened() -> None:
    """A code block cut in two is closed in one piece and reopened with its language."""
    code = "```python\n" + "\n".join(f"print({n})" for n in range(400)) + "\n```\nDone."
    pieces = split_message("Here:\n" + code)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.count("```") % 2 == 0, piece[:40]
        assert len(piece) <= DISCORD_MESSAGE_LIMIT
    assert pieces[1].startswith("```python\n") and pieces[-1].endswith("Done.")


def test_a_single_huge_line_is_cut_hard() -> None:
    """A line longer than a message is cut into message-sized pieces."""
    pieces = split_message("y" * 4500)
    assert [len(p) for p in pieces] == [2000, 2000, 500]


def recording(posts: list[list[str]]):
    """A ReplyStream ``send`` that keeps each posted message's text and its edits in ``posts``."""

    async def send(text: str):
        history = [text]
        posts.append(history)

        async def edit(new: str) -> None:
            history.append(new)

        return edit

    return send


async def test_stream_edits_are_throttled_and_overflow_starts_a_new_message() -> None:
    """Writes within the interval do not edit; a flush shows all; past 2000 characters the
    message is finished and a new one continues."""
    now = [0.0]
    posts: list[list[str]] = []
    send = recording(posts)
    stream = ReplyStream(send, interval=1.0, clock=lambda: now[0])
    await stream.write("Hello")  # first write shows at once
    await stream.write(", world")  # same instant: throttled
    assert posts == [["Hello ⏳"]]
    now[0] = 1.5
    await stream.write("!")
    assert posts[0][-1] == "Hello, world! ⏳"
    await stream.write("\n" + "z" * 2500)
    await stream.flush(final=True)
    assert len(posts) >= 2 and posts[0][-1].startswith("Hello, world!")
    assert all(len(v) <= DISCORD_MESSAGE_LIMIT for p in posts for v in p)
    assert not posts[-1][-1].endswith("⏳")
    assert "".join(p[-1] for p in posts).count("z") == 2500


def test_masked_links_show_their_address_outside_code() -> None:
    """[text](url) becomes "text (<url>)" so the real address shows (and is not previewed);
    code, inline code and an escaped bracket stay as written."""
    assert show_links("[Download your results](https://evil.example/login)!") == (
        "Download your results (<https://evil.example/login>)!"
    )
    assert (
        show_links('[a [b]](<https://x.example/w_(p)> "t")') == "a [b] (<https://x.example/w_(p)>)"
    )
    code = "`[x](https://a.example)` and\n```\n[y](https://b.example)\n```\n"
    assert show_links(code) == code
    assert show_links(r"\[z](https://c.example)") == r"\[z](https://c.example)"


async def test_a_stream_posts_at_most_max_messages_then_is_cut() -> None:
    """300,000 characters make 10 messages, the last one final, and the stream says it was
    cut; what comes later is kept for the attached copy but not posted."""
    posts: list[list[str]] = []
    send = recording(posts)
    stream = ReplyStream(send, interval=0.0)
    for _ in range(50):
        await stream.write("x " * 3000)
    await stream.flush(final=True)
    assert stream.cut and len(posts) == MAX_MESSAGES_PER_ANSWER
    assert not posts[-1][-1].endswith(STREAMING_INDICATOR)
    assert len(stream.text) == 300_000 and stream.dropped == 0
    await stream.write("y" * MAX_KEPT_CHARS)
    assert len(stream.text) == MAX_KEPT_CHARS and stream.dropped == 300_000
    assert len(posts) == MAX_MESSAGES_PER_ANSWER
