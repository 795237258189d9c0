"""End-to-end tests of the loopback Discord emulator, driving a tiny discord.py bot."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord_server import FakeDiscord, Sent, running

MESSAGE_CONTENT = 1 << 15
MiB = 1024 * 1024
FRUITS = ["apple", "apricot", "banana", "cherry"]


class Panel(discord.ui.View):
    """A button that rewrites the message and a select that answers ephemerally."""

    @discord.ui.button(label="Go", custom_id="panel:go")
    async def go(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"clicked by {interaction.user.name}")

    @discord.ui.select(
        custom_id="panel:pick",
        options=[
            discord.SelectOption(label="A", value="a"),
            discord.SelectOption(label="B", value="b"),
        ],
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.send_message(f"picked {select.values}", ephemeral=True)


def make_bot(*, sync_guild: int | None = None) -> commands.Bot:
    """A small bot exercising what labbot needs: files, edits, DMs, threads, app commands."""
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.Bot(command_prefix="!", intents=intents)

    async def setup_hook() -> None:
        if sync_guild is not None:
            guild = discord.Object(sync_guild)
            bot.tree.copy_global_to(guild=guild)
            bot.tree.clear_commands(guild=None)
            await bot.tree.sync(guild=guild)
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        if message.content.startswith("!"):
            await bot.process_commands(message)
        elif message.attachments:
            limit = message.guild.filesize_limit if message.guild else 10 * MiB
            for attachment in message.attachments:
                if attachment.size > limit:
                    await message.reply(f"{attachment.filename} is too big")
                    continue
                rows = list(csv.reader(io.StringIO((await attachment.read()).decode())))
                summary = discord.File(io.BytesIO(f"rows,{len(rows)}\n".encode()), "summary.csv")
                await message.reply(f"read {attachment.filename}", file=summary)
        elif message.mention_everyone:
            await message.channel.send("noted, everyone")
        elif bot.user in message.mentions:
            await message.reply("you called?")
        elif message.reference and isinstance(message.reference.resolved, discord.Message):
            await message.channel.send(f"you replied to {message.reference.resolved.content!r}")
        elif isinstance(message.channel, discord.DMChannel):
            await message.channel.send(f"dm: {message.content}")
        elif isinstance(message.channel, discord.Thread):
            await message.channel.send(f"in {message.channel.name}: {message.content}")

    @bot.command()
    async def ping(ctx: commands.Context) -> None:
        async with ctx.typing():
            await ctx.send("pong")

    @bot.command()
    async def countdown(ctx: commands.Context) -> None:
        message = await ctx.send("3")
        await message.edit(content="2")
        await message.delete()

    @bot.command()
    async def dmme(ctx: commands.Context) -> None:
        await ctx.author.send("psst")

    @bot.command()
    async def thread(ctx: commands.Context) -> None:
        created = await ctx.message.create_thread(name="Discussion")
        await created.send("welcome")

    @bot.command()
    async def boom(ctx: commands.Context) -> None:
        raise RuntimeError("boom")

    @bot.tree.command(description="Echo privately")
    async def echo(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(f"echo: {text}", ephemeral=True)

    @bot.tree.command(description="A slow report")
    async def report(interaction: discord.Interaction, rows: int) -> None:
        await interaction.response.defer(thinking=True)
        body = "".join(f"{i}\n" for i in range(rows)).encode()
        await interaction.followup.send(
            "report ready", file=discord.File(io.BytesIO(body), "r.csv")
        )

    @bot.tree.command(description="Buttons")
    async def panel(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("panel", view=Panel())

    @bot.tree.command(description="Pick a fruit")
    async def pick(interaction: discord.Interaction, fruit: str) -> None:
        await interaction.response.send_message(f"you picked {fruit}")

    @pick.autocomplete("fruit")
    async def pick_fruit(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice]:
        return [app_commands.Choice(name=f, value=f) for f in FRUITS if f.startswith(current)]

    @bot.tree.command(description="Size of an uploaded file")
    async def upload(interaction: discord.Interaction, file: discord.Attachment) -> None:
        data = await file.read()
        await interaction.response.send_message(f"{file.filename}: {len(data)} bytes")

    @bot.tree.command(description="What may I do here")
    async def perms(interaction: discord.Interaction) -> None:
        assert isinstance(interaction.user, discord.Member)
        assert isinstance(interaction.channel, discord.TextChannel)
        computed = interaction.channel.permissions_for(interaction.user)
        roles = sorted(r.name for r in interaction.user.roles)
        await interaction.response.send_message(
            f"{interaction.permissions.value} {computed.value} {roles}"
        )

    files = app_commands.Group(name="files", description="Your files")

    @files.command(name="list", description="List your files")
    async def files_list(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"no files for {interaction.user.name}")

    bot.tree.add_command(files)
    return bot


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[commands.Bot]:
    bot = make_bot()
    async with running(bot, fake):
        yield bot


def _text(sent: Sent) -> str | None:
    return sent.content


async def test_login_ready_and_intents(fake: FakeDiscord, bot: commands.Bot) -> None:
    """The bot logs in, identifies with message_content and sees the guild with 10 MiB uploads."""
    assert fake.identify is not None and fake.identify["intents"] & MESSAGE_CONTENT
    assert bot.user is not None and bot.user.id == int(fake.bot_user["id"])
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.name == "Lab" and guild.filesize_limit == 10 * MiB
    general = guild.get_channel(fake.channel_id)
    assert isinstance(general, discord.TextChannel) and general.name == "general"
    assert guild.me is not None and guild.member_count == 4
    assert discord.http.Route.BASE == fake.base_url + "/api/v10"


async def test_patches_are_restored() -> None:
    """close() puts Route.BASE and DEFAULT_GATEWAY back."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeDiscord() as fake:
        fake.patch_discord()
        assert discord.http.Route.BASE != base
    assert discord.http.Route.BASE == base
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == gateway


async def test_reconnect_resumes(fake: FakeDiscord, bot: commands.Bot) -> None:
    """After an op 7 RECONNECT the bot RESUMEs its session and keeps receiving events."""
    await fake.reconnect()
    assert fake.resumes == 1
    await fake.user_message("!ping")
    assert _text(await fake.next_sent()) == "pong"


async def test_attachment_read_and_file_reply(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A CSV attachment is downloaded from the CDN and answered with a multipart file reply."""
    msg = await fake.user_message("here", files={"data.csv": b"a,b\n1,2\n3,4\n"})
    sent = await fake.next_sent()
    assert sent.kind == "message" and sent.channel_id == fake.channel_id
    assert sent.content == "read data.csv"
    assert sent.files == {"summary.csv": b"rows,3\n"}
    assert str(sent.payload["message_reference"]["message_id"]) == msg["id"]
    assert fake.downloads["data.csv"] == 1
    stored = fake.messages[sent.message_id]
    assert stored["attachments"][0]["url"].startswith(fake.base_url + "/cdn/")
    # The echo of the bot's own reply is ignored: the next thing sent answers the next command.
    await fake.user_message("!ping")
    assert _text(await fake.next_sent()) == "pong"
    assert fake.typing == [fake.channel_id]


async def test_edit_and_delete(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A message the bot sends, edits and deletes is captured in order and leaves no state."""
    await fake.user_message("!countdown")
    sent, edit, delete = [await fake.next_sent() for _ in range(3)]
    assert (sent.kind, sent.content) == ("message", "3")
    assert (edit.kind, edit.content, edit.message_id) == ("edit", "2", sent.message_id)
    assert (delete.kind, delete.message_id) == ("delete", sent.message_id)
    assert sent.message_id not in fake.messages


async def test_dm_in_and_out(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A DM to the bot is answered in the DM, and the bot can open a DM by itself."""
    msg = await fake.user_message("hello there", dm=True, author="bob")
    sent = await fake.next_sent()
    assert (sent.kind, sent.content) == ("dm", "dm: hello there")
    assert sent.channel_id == int(msg["channel_id"]) == fake.dm_channels["bob"]
    await fake.user_message("!dmme", author="bob")
    sent = await fake.next_sent()
    assert (sent.kind, sent.content, sent.channel_id) == ("dm", "psst", fake.dm_channels["bob"])


async def test_threads(fake: FakeDiscord, bot: commands.Bot) -> None:
    """The bot starts a thread from a message and answers messages inside threads."""
    msg = await fake.user_message("!thread")
    welcome = await fake.next_sent()
    thread = fake.channels[int(msg["id"])]  # a thread started from a message has its id
    assert thread["type"] == 11 and thread["owner_id"] == fake.bot_user["id"]
    assert thread["parent_id"] == str(fake.channel_id)
    assert (welcome.channel_id, welcome.content) == (int(thread["id"]), "welcome")
    assert bot.get_channel(int(thread["id"])) is not None

    user_thread = await fake.create_thread("questions", owner="bob")
    await fake.user_message("anyone?", channel_id=int(user_thread["id"]))
    sent = await fake.next_sent()
    assert (sent.channel_id, sent.content) == (int(user_thread["id"]), "in questions: anyone?")


async def test_mentions_and_replies(fake: FakeDiscord, bot: commands.Bot) -> None:
    """Mentions of the bot, @everyone and replies to the bot's messages reach the handler."""
    await fake.user_message("hey", mention_bot=True)
    called = await fake.next_sent()
    assert called.content == "you called?"
    await fake.user_message("meeting", mention_everyone=True)
    assert _text(await fake.next_sent()) == "noted, everyone"
    await fake.user_message("thanks", reply_to=fake.messages[called.message_id])
    assert _text(await fake.next_sent()) == "you replied to 'you called?'"


async def test_slash_ephemeral(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A synced slash command answers ephemerally through the interaction callback."""
    assert {c["name"] for c in fake.commands} >= {"echo", "report", "panel", "pick", "files"}
    await fake.slash("echo", [{"name": "text", "value": "hi"}], user="bob")
    sent = await fake.next_sent()
    assert (sent.kind, sent.callback_type) == ("interaction_response", 4)
    assert sent.content == "echo: hi" and sent.ephemeral and sent.flags == 64


async def test_slash_defer_then_followup_file(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A deferred command sends its file as a followup, replacing the loading message."""
    await fake.slash("report", [{"name": "rows", "value": 3}])
    defer = await fake.next_sent()
    assert (defer.kind, defer.callback_type) == ("interaction_response", 5)
    followup = await fake.next_sent()
    assert followup.kind == "followup" and followup.content == "report ready"
    assert followup.files == {"r.csv": b"0\n1\n2\n"}
    assert followup.message_id == defer.message_id
    assert fake.messages[followup.message_id]["attachments"][0]["filename"] == "r.csv"


async def test_slash_subcommand_and_attachment_option(fake: FakeDiscord, bot: commands.Bot) -> None:
    """Subcommand groups and attachment options are resolved like Discord does."""
    await fake.slash("files", subcommand="list", user="bob")
    assert _text(await fake.next_sent()) == "no files for bob"
    await fake.slash("upload", [{"name": "file", "value": ("x.bin", b"12345")}])
    assert _text(await fake.next_sent()) == "x.bin: 5 bytes"
    with pytest.raises(AssertionError, match="never synced"):
        await fake.slash("nope")
    with pytest.raises(AssertionError, match="missing required"):
        await fake.slash("echo")


async def test_guild_sync(fake: FakeDiscord) -> None:
    """Commands synced to the guild carry guild_id and are invoked as guild commands."""
    bot = make_bot(sync_guild=fake.guild_id)
    async with running(bot, fake):
        assert {c.get("guild_id") for c in fake.commands} == {str(fake.guild_id)}
        await fake.slash("echo", [{"name": "text", "value": "g"}])
        assert _text(await fake.next_sent()) == "echo: g"


async def test_button_and_select(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A button click is answered with an update of the message, a select with a reply."""
    await fake.slash("panel")
    shown = await fake.next_sent()
    assert shown.callback_type == 4 and shown.components
    await fake.click(fake.messages[shown.message_id], "panel:go", user="bob")
    update = await fake.next_sent()
    assert (update.callback_type, update.message_id) == (7, shown.message_id)
    assert fake.messages[shown.message_id]["content"] == "clicked by bob"
    await fake.click(shown, "panel:pick", values=["b"])
    picked = await fake.next_sent()
    assert picked.content == "picked ['b']" and picked.ephemeral


async def test_autocomplete(fake: FakeDiscord, bot: commands.Bot) -> None:
    """Autocomplete returns the choices the bot computed for the focused option."""
    choices = await fake.autocomplete("pick", [{"name": "fruit", "value": "ap"}])
    assert [c["value"] for c in choices] == ["apple", "apricot"]


async def test_429_is_retried(fake: FakeDiscord, bot: commands.Bot) -> None:
    """An injected 429 with Via and retry_after is retried transparently by discord.py."""
    fake.inject("POST", r"/channels/\d+/messages$", 429, {"retry_after": 0.01})
    await fake.user_message("!ping")
    assert _text(await fake.next_sent()) == "pong"
    posts = [p for m, p in fake.requests if m == "POST" and p.endswith("/messages")]
    assert len(posts) == 2


async def test_declared_size_refused_before_download(fake: FakeDiscord, bot: commands.Bot) -> None:
    """An attachment declared oversize is refused without being downloaded."""
    await fake.user_message(
        files={"big.csv": b"a\n", "small.csv": b"a\n"}, declared_sizes={"big.csv": 50 * MiB}
    )
    first, second = await fake.next_sent(), await fake.next_sent()
    assert first.content == "big.csv is too big"
    assert second.files == {"summary.csv": b"rows,1\n"}
    assert fake.downloads == {"small.csv": 1}


async def test_unknown_routes_are_recorded(fake: FakeDiscord, bot: commands.Bot) -> None:
    """A route the emulator does not know answers 404 and lands in `unhandled`."""
    route = discord.http.Route("GET", "/guilds/{guild_id}/audit-logs", guild_id=fake.guild_id)
    with pytest.raises(discord.NotFound):
        await bot.http.request(route)
    assert fake.unhandled == [f"GET /guilds/{fake.guild_id}/audit-logs"]
    fake.unhandled.clear()


async def test_running_fails_on_unhandled_routes(fake: FakeDiscord) -> None:
    """Leaving the `running` block fails when an unemulated route was hit."""
    bot = make_bot()
    with pytest.raises(AssertionError, match="unhandled routes"):
        async with running(bot, fake):
            with pytest.raises(discord.NotFound):
                await bot.http.request(discord.http.Route("GET", "/voice/regions"))


async def test_handler_errors_fail_fast(fake: FakeDiscord) -> None:
    """An exception swallowed by discord.py fails the wait at once and the block's exit."""
    bot = make_bot()
    with pytest.raises(AssertionError, match="boom"):
        async with running(bot, fake):
            await fake.user_message("!boom")
            await fake.next_sent(timeout=10)
    assert bot.is_closed()


async def test_roles_overwrites_and_permissions(fake: FakeDiscord, bot: commands.Bot) -> None:
    """Roles, members' roles and channel overwrites reach the bot, and the permissions an
    interaction carries are those discord.py computes from its cache; the owner may do all."""
    lab = await fake.add_role("lab", permissions=discord.Permissions(manage_threads=True))
    await fake.give_role("bob", lab)
    quiet = await fake.add_channel("quiet")
    await fake.set_overwrite(quiet, lab, deny=discord.Permissions(send_messages=True))
    await fake.set_overwrite(quiet, "bob", allow=discord.Permissions(attach_files=False))
    await fake.set_overwrite(
        quiet, fake.guild_id, deny=discord.Permissions(create_public_threads=True)
    )
    await fake.slash("perms", user="bob", channel_id=quiet)
    given, computed, roles = (await fake.wait_for(lambda s: bool(s.content))).content.split(" ", 2)
    assert given == computed and roles == "['@everyone', 'lab']"
    bob = discord.Permissions(int(given))
    assert bob.manage_threads and not bob.send_messages and not bob.create_public_threads
    member = await bot.get_guild(fake.guild_id).fetch_member(int(fake.users["bob"]["id"]))
    assert [r.name for r in member.roles] == ["@everyone", "lab"]
    await fake.slash("perms", channel_id=quiet)  # alice owns the guild
    given, computed, _ = (await fake.wait_for(lambda s: bool(s.content))).content.split(" ", 2)
    assert given == str(discord.Permissions.all().value)  # discord.py leaves out voice ones
    assert discord.Permissions(int(given)) >= discord.Permissions(int(computed))
