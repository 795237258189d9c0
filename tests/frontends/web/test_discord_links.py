"""The bot on the loopback Discord emulator with its download endpoint on loopback: a file the
code makes over the upload limit comes with a working link (the only link of the bot's it lets
Discord preview); without the endpoint the answer says how to turn links on; /export sends
the conversation's notebook privately."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import nbformat

from labbot.frontends.discord import create_bot
from labbot.frontends.discord.bot import LabBot
from labbot.frontends.web import ENABLE_HINT
from labbot.llm.tools import TOOL_NAME
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.discord_server import FILESIZE_LIMIT, FakeDiscord, running
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel
from tests.servers import free_port

BIG = FILESIZE_LIMIT + 1024  # over the emulated guild's upload limit
WRITE_BIG = f"open('big.bin', 'wb').write(b'x' * {BIG})\nprint('written')"


@asynccontextmanager
async def bot_on(
    fake: FakeDiscord, data_dir: Path, **options: Any
) -> AsyncIterator[tuple[ScriptedModel, LabBot]]:
    model = ScriptedModel()
    settings = fake_settings(data_dir, MAX_FILE_SIZE_MB=20, MAX_STORAGE_MB_PER_USER=100, **options)
    async with open_fake_app(settings, model) as app:
        bot = create_bot(app)
        async with running(bot, fake, guild_ready_timeout=0.05):
            yield model, bot
            async with asyncio.timeout(30):
                await bot.wait_idle()


async def test_a_large_output_gets_a_link_that_works(tmp_path: Path) -> None:
    port = free_port()
    async with FakeDiscord() as fake:
        endpoint = {
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "DOWNLOAD_LISTEN": f"127.0.0.1:{port}",
        }
        async with bot_on(fake, tmp_path / "data", **endpoint) as (model, bot):
            model.enqueue(Reply.tool_call(TOOL_NAME, {"code": WRITE_BIG}), Reply.text("Made it."))
            await fake.user_message("make a big file", mention_bot=True)
            posted = await fake.wait_for(lambda s: "📥 big.bin" in (s.content or ""))
            url = posted.content.split(": ", 1)[1].strip()
            assert url.startswith(f"http://127.0.0.1:{port}/f/") and not posted.suppressed
            assert posted.previews == [url]  # the bot's own link: the one it lets be previewed
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                assert response.status == 200
                assert await response.read() == b"x" * BIG
            forged = url[:-3] + ("abc" if not url.endswith("abc") else "abd")
            assert not bot.links.previews([forged])
        fetched = {u for sent in fake.sent for u in sent.previews}
        assert fetched - fake.user_links() == {url}


async def test_without_the_endpoint_the_answer_says_how_to_enable_it(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        async with bot_on(fake, tmp_path / "data") as (model, _):
            model.enqueue(Reply.tool_call(TOOL_NAME, {"code": WRITE_BIG}), Reply.text("Made it."))
            await fake.user_message("make a big file", mention_bot=True)
            posted = await fake.wait_for(lambda s: "Too large to attach here" in (s.content or ""))
            assert "big.bin" in posted.content and ENABLE_HINT in posted.content
            assert "PUBLIC_URL" in posted.content and "DOWNLOAD_LISTEN" in posted.content


async def test_export_sends_the_dm_conversation_as_a_notebook(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        async with bot_on(fake, tmp_path / "data") as (model, _):
            model.enqueue(
                Reply.tool_call(TOOL_NAME, {"code": "x = 6 * 7\nprint(x)\nx"}), Reply.text("42.")
            )
            dm = await fake.user_message("compute", dm=True)
            await fake.wait_for(lambda s: (s.content or "").endswith("42."))
            await fake.slash("export", channel_id=int(dm["channel_id"]))
            sent = await fake.wait_for(lambda s: any(n.endswith(".ipynb") for n in s.files))
            assert sent.ephemeral
            (data,) = sent.files.values()
            notebook = nbformat.reads(data.decode(), as_version=4)
            nbformat.validate(notebook)
            code = [c for c in notebook.cells if c.cell_type == "code"][1]
            assert code.source == "x = 6 * 7\nprint(x)\nx"
            assert [o.get("text") for o in code.outputs if o.output_type == "stream"] == ["42\n"]
            assert json.loads(data)["metadata"]["labbot"]["conversation"].startswith("dm:")
            await fake.slash("export")  # a server channel is no conversation
            await fake.wait_for(lambda s: "Run /export in the thread or DM" in (s.content or ""))
