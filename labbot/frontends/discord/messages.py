"""Messages in, answers out: when the bot answers, which conversation a message belongs to,
attachments into the file store, and the streamed reply with its files and a Stop button."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.ext import commands

from labbot.chat.attachments import Taken, Upload
from labbot.chat.budgets import BudgetWarning, Payer
from labbot.chat.reports import TurnTotals
from labbot.core import Failed, FileProduced, OutputFile, TextDelta, ToolStarted, Usage
from labbot.errors import FileNotFound, LabbotError
from labbot.frontends.discord.conversations import conversation_id
from labbot.frontends.discord.downloads import too_large
from labbot.frontends.discord.errors import error_text
from labbot.frontends.discord.posting import edit, link_scope, reply, send
from labbot.frontends.discord.render import (
    MAX_MESSAGES_PER_ANSWER,
    ReplyStream,
    shown_name,
    shown_text,
    split_message,
    upload_confirmation,
)
from labbot.frontends.discord.views import StopView

if TYPE_CHECKING:
    from labbot.frontends.discord.bot import LabBot

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 1024 * 1024
FILES_PER_MESSAGE = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # DMs, and guilds without a boost
ANSWER_FILE = "answer.md"  # the whole of an answer too long to post


class Messages(commands.Cog):
    """on_message: the bot's main path."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot
        self._withdrawn: set[asyncio.Task[None]] = set()  # turns whose question was deleted

    # When to answer ---------------------------------------------------------------------
    def addressed(self, message: discord.Message) -> bool | None:
        """DMs, mentions of the bot (not @everyone/@here), replies to the bot, and messages in
        threads the bot started; never bots (itself included) or system messages. None: a
        reply whose message discord.py does not hold (asked of Discord only once admitted)."""
        me = self.bot.user
        if (
            message.author.bot
            or me is None
            or message.type not in (discord.MessageType.default, discord.MessageType.reply)
        ):
            return False
        if message.guild is None:
            return True
        if isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id:
            return True
        if any(user.id == me.id for user in message.mentions):
            return True
        reference = message.reference
        if reference is None or reference.message_id is None:
            return False
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved.author.id == me.id
        return None if reference.resolved is None else False  # else: deleted

    async def replied(self, message: discord.Message) -> discord.Message | None:
        """The message this one replies to: as discord.py holds it, else fetched (once the
        message is admitted); None when there is none or it is gone."""
        reference = message.reference
        if reference is None or reference.message_id is None:
            return None
        if reference.resolved is not None:
            return reference.resolved if isinstance(reference.resolved, discord.Message) else None
        try:
            return await message.channel.fetch_message(reference.message_id)
        except discord.HTTPException:
            return None

    async def conversation(self, message: discord.Message, replied: discord.Message | None) -> str:
        """Threads are one conversation; replies continue the replied-to answer's conversation;
        a DM is one conversation; a fresh mention in a channel starts a new one."""
        in_guild = message.guild is not None
        if isinstance(message.channel, discord.Thread) or not in_guild:
            return str(conversation_id(message.channel, in_guild=in_guild))
        if replied is not None and self.bot.user and replied.author.id == self.bot.user.id:
            known = await self.bot.services.preferences.replies.conversation(
                replied.id, owner=str(message.author.id)
            )
            if known:
                return known
        return str(conversation_id(message.channel, in_guild=True, message_id=message.id))

    def say(self, message: discord.Message, text: str, **options: Any) -> Awaitable[Any]:
        """Reply to ``message`` (in its channel should it be deleted meanwhile)."""
        return reply(message, text, links=self.bot.links, **options)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """A question deleted while it is answered: its turn stops (and says nothing)."""
        task = self.bot.questions.get(payload.message_id)
        if task is not None and not task.done():
            log.info("message.deleted_mid_turn message=%s", payload.message_id)
            self._withdrawn.add(task)
            task.cancel()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer a message when it is for us; every failure becomes a short reply."""
        current = asyncio.current_task()
        if current is not None:
            self.bot.handling(current)
        addressed = self.addressed(message)  # no API call before the gate
        if addressed is False or not await self.bot.gate.admit_message(message):
            return
        replied = await self.replied(message)
        me = self.bot.user
        if addressed is None and (replied is None or me is None or replied.author.id != me.id):
            return
        try:
            await self.handle(message, replied)
        except Exception as exc:
            await self.say(message, error_text(exc, where="message"))

    # The turn ----------------------------------------------------------------------------
    async def handle(self, message: discord.Message, replied: discord.Message | None) -> None:
        """Store the attachments, confirm them, and answer the text in the same turn."""
        user = str(message.author.id)
        text = self._clean(message)
        taken = await self._ingest(message)
        now = self.bot.services.store.clock()
        private = message.guild is None  # a guild channel never names evicted files
        notices = [upload_confirmation(s, now=now, private=private) for s in taken.saved]
        notices += [f"⚠️ {shown_name(r.name)}: {shown_text(r.reason)}" for r in taken.refused]
        if notices:
            for piece in split_message("\n\n".join(notices)):
                await self.say(message, piece)
        if not text:
            if not taken.saved and not taken.refused:
                await self.say(message, "Ask me something about your data, or attach a file.")
            return
        engine = self.bot.services.engine
        if engine is None:
            await self.say(message, "No model is configured on this bot (OPENAI_API_KEY).")
            return
        conversation = await self.conversation(message, replied)
        self.bot.links.remember(link_scope(user, conversation), message.content)
        running = self.bot.conversation_tasks(message.author.id)
        if running:
            await self.say(
                message, "I'm still working on your previous question; this one starts right after."
            )
        task = asyncio.create_task(
            self._answer(message, user, conversation, text, taken.file_ids, taken.image_ids)
        )
        running[task] = conversation
        self.bot.questions[message.id] = task
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            if task not in self._withdrawn:
                await self.say(message, "Stopped.")
        finally:
            running.pop(task, None)
            self.bot.questions.pop(message.id, None)
            self._withdrawn.discard(task)

    def _clean(self, message: discord.Message) -> str:
        me = self.bot.user
        text = message.content
        if me is not None:
            text = re.sub(rf"<@!?{me.id}>", "", text)
        return text.strip()

    async def _ingest(self, message: discord.Message) -> Taken:
        """Every attachment into the store: one over the size Discord declares is not
        downloaded, the others stream."""
        uploads = [
            Upload(a.filename, self._download(a.url), declared_size=a.size)
            for a in message.attachments
        ]
        return await self.bot.services.attachments.take(str(message.author.id), uploads)

    async def _download(self, url: str) -> AsyncIterator[bytes]:
        try:
            async with self.bot.http_session.get(url) as response:
                if response.status != 200:
                    raise LabbotError(
                        f"Discord did not hand over the file (HTTP {response.status})."
                    )
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    yield chunk
        except aiohttp.ClientError as exc:  # this upload's, never the whole message's
            log.warning("upload.download_failed error=%s", type(exc).__name__)
            raise LabbotError(
                "The download from Discord broke off, so nothing of it was kept.",
                hint="Send the file again.",
            ) from exc

    async def _answer(
        self,
        message: discord.Message,
        user: str,
        conversation: str,
        text: str,
        file_ids: list[str],
        image_ids: list[str],
    ) -> None:
        services = self.bot.services
        assert services.engine is not None
        show_code = (await services.preferences.users.get(user)).show_code
        view = StopView(message.author.id, asyncio.current_task())
        posted: list[discord.Message] = []
        links = self.bot.links
        scope = link_scope(user, conversation)  # the links this user posted here

        async def post(content: str) -> Callable[[str], Awaitable[None]]:
            sent = await reply(
                message,
                content,
                links=links,
                conversation=scope,
                view=view if not posted else discord.utils.MISSING,
            )
            index = len(posted)
            posted.append(sent)
            await services.preferences.replies.link(sent.id, owner=user, conversation=conversation)

            async def change(new: str) -> None:
                posted[index] = await edit(
                    posted[index], links=links, conversation=scope, content=new
                )

            return change

        stream = ReplyStream(post)
        produced: list[OutputFile] = []
        totals = TurnTotals()
        roles = getattr(message.author, "roles", [])  # a member's, in a guild
        payer = Payer(
            user,
            guild=str(message.guild.id) if message.guild else None,
            roles=frozenset(str(role.id) for role in roles),
            admin=self.bot.access.is_admin(message.author.id),
        )
        try:
            async with message.channel.typing():
                async for event in services.engine.turn(
                    user, conversation, text, file_ids=file_ids, image_ids=image_ids, payer=payer
                ):
                    match event:
                        case TextDelta(text=piece):
                            await stream.write(piece)
                        case ToolStarted(code=code) if show_code:
                            await stream.write(f"\n```python\n{code.strip()}\n```\n")
                        case FileProduced(file=file):
                            produced.append(file)
                        case Failed(text=problem):
                            await stream.write(f"\n⚠️ {shown_text(problem)}")
                        case BudgetWarning(text=warning):
                            await stream.write(f"\n-# ⚠️ {shown_text(warning)}\n")
                        case Usage() if self.bot.settings.DISCORD_USAGE_FOOTER:
                            totals.add(event)
                        case _:
                            pass  # status, output, usage and the final text: not shown here
            if totals.requests:
                await stream.write(f"\n-# {totals.line()}")
        finally:
            await stream.flush(final=True)
            view.stop()
            if posted:
                await edit(posted[0], links=links, conversation=scope, view=None)
        if stream.cut:
            await self._send_whole(message, stream)
        await self._send_files(message, user, produced)

    async def _send_whole(self, message: discord.Message, stream: ReplyStream) -> None:
        """An answer cut after MAX_MESSAGES_PER_ANSWER messages: say so, with all of it
        (up to MAX_KEPT_CHARS) attached as a Markdown file."""
        size = len(stream.text) + stream.dropped
        kept = f" (its first {len(stream.text):,})" if stream.dropped else ""
        await send(
            message.channel,
            f"✂️ This answer is {size:,} characters, too long to post here: it was cut after"
            f" {MAX_MESSAGES_PER_ANSWER} messages. The whole answer{kept} is attached as"
            f" {ANSWER_FILE}.",
            file=discord.File(io.BytesIO(stream.text.encode()), filename=ANSWER_FILE),
            links=self.bot.links,
        )

    async def _send_files(
        self, message: discord.Message, user: str, files: list[OutputFile]
    ) -> None:
        """Attach what the code made, within the upload limit; name the rest by id."""
        limit = message.guild.filesize_limit if message.guild else DEFAULT_UPLOAD_LIMIT
        store = self.bot.services.store
        attachable: list[OutputFile] = []
        too_big: list[OutputFile] = []
        for file in files:
            (attachable if file.size <= limit else too_big).append(file)
        for start in range(0, len(attachable), FILES_PER_MESSAGE):
            batch = []
            for file in attachable[start : start + FILES_PER_MESSAGE]:
                try:
                    data = await store.read_bytes(user, file.id)
                except FileNotFound:  # evicted by a later output of the same answer
                    continue
                batch.append(discord.File(io.BytesIO(data), filename=file.name))
            if batch:
                await send(message.channel, files=batch, links=self.bot.links)
        if too_big and (text := await too_large(self.bot.downloads, user, too_big, limit)):
            for piece in split_message(text):
                await send(message.channel, piece, links=self.bot.links)


async def setup(bot: LabBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Messages(bot))
