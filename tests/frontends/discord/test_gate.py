"""One gate for every way in (issue 12, findings 2 and 4, and the flood replies of 9): messages,
edits, every slash command, autocomplete, and every button and menu pass the same access rules
and rate limit. The real discord.py client against the loopback Discord emulator."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import discord
import pytest

import labbot.frontends.discord as discord_frontend
from labbot.chat.preferences import UserSettings
from labbot.frontends.discord.gate import REFUSED, ROLE_CACHE_SECONDS
from labbot.frontends.discord.views import GatedModal, GatedView
from labbot.llm.tools import TOOL_NAME
from tests.conftest import chunks_of
from tests.fakes.discord_server import Sent
from tests.fakes.openai_server import Reply
from tests.frontends.discord.world import World, answer_to, marker, replies_to

# Short sleeps, so that the in-memory executor's interrupt lands between them.
SLEEP = "import time\nprint('waiting', flush=True)\nwhile True:\n    time.sleep(0.05)"


# Every slash command, with options that would change something, and what an allowed user
# reads back.
COMMANDS: list[tuple[str, list[dict], str]] = [
    ("help", [], "analyses your data"),
    ("files", [], "Your files"),
    ("new", [{"name": "title", "value": "gated"}], "Started"),
    ("reset", [{"name": "delete_files", "value": True}], "files deleted"),
    ("stop", [], "Nothing of yours is running"),
    ("usage", [], "No model requests yet"),
    ("model", [{"name": "name", "value": "gpt-4o"}], "Model: **gpt-4o**"),
    ("code", [{"name": "show", "value": False}], "hide the code"),
    ("access", [{"name": "action", "value": "block"}, {"name": "kind", "value": "user"}], ""),
]

REFUSED_PERSONAS = [
    ("blocked user", "mallory", "general"),
    ("left out of ALLOWED_USER_IDS", "eve", "general"),
    ("blocked role, in a DM", "carol", "dm"),
    ("blocked channel", "alice", "quarantine"),
]

SETTINGS = {
    "ALLOWED_USER_IDS": ["alice", "bob", "carol", "mallory"],
    "BLOCKED_USER_IDS": ["mallory"],
    "BLOCKED_ROLE_IDS": ["muted"],
    "BLOCKED_CHANNEL_IDS": ["quarantine"],
}


async def give_a_file(world: World, user: str) -> None:
    await world.bot.services.store.save(str(world.ids[user]), "kept.csv", chunks_of(b"a\n1\n"))


@pytest.mark.parametrize("world", [SETTINGS], indirect=True)
async def test_refused_users_get_no_command_and_no_answer(world: World) -> None:
    """Refused users (blocked, left out of the allow list, carrying a blocked role in a DM, or
    in a blocked channel) get a private refusal for every slash command, nothing from
    autocomplete, no answer to messages or edits, and nothing changes."""
    fake, bot = world.fake, world.bot
    messages: list[dict] = []
    for label, user, place in REFUSED_PERSONAS:
        await give_a_file(world, user)
        channel = world.where(place, user)
        threads_before = len(fake.channels)
        for name, options, _ in COMMANDS:
            if name == "access":
                options = [*options, {"name": "target", "value": str(world.ids["bob"])}]
            sent = await fake.slash(name, options, user=user, channel_id=channel)
            answer = await answer_to(fake, sent)
            assert answer.content == REFUSED, (label, name, answer.content)
            assert answer.ephemeral, (label, name)
        choices = await fake.autocomplete(
            "model", [{"name": "name", "value": "gpt"}], user=user, channel_id=channel
        )
        assert choices == [], label
        assert len(fake.channels) == threads_before, f"{label}: /new made a thread"
        assert len(await bot.services.store.list(str(world.ids[user]))) == 1, label
        chosen = await bot.services.preferences.users.get(str(world.ids[user]))
        assert chosen == UserSettings(), label
        asked = await fake.user_message(
            "hello?",
            author=user,
            channel_id=None if place == "dm" else channel,
            dm=place == "dm",
            mention_bot=place != "dm",
        )
        await fake.user_edit(asked, "hello again?")
        messages.append(asked)
    assert bot.access.permits(user_id=world.ids["bob"], role_ids=set(), channel_ids=set())
    await marker(world)
    assert replies_to(world, messages) == []
    assert not [s for s in fake.sent if s.kind == "dm"]
    assert world.api.requests == [world.api.requests[-1]]  # only the marker reached the model


@pytest.mark.parametrize("world", [SETTINGS], indirect=True)
async def test_allowed_users_get_every_command(world: World) -> None:
    """With the same lists, an allowed user gets every command in a channel and in a DM, and
    a DM answer (she has none of the listed roles); only the admin may use /access."""
    fake, bot = world.fake, world.bot
    for place in ("general", "dm"):
        await give_a_file(world, "alice")
        for name, options, expected in COMMANDS:
            if name == "new" and place == "dm":
                continue  # threads need a server channel
            if name == "access":
                options = [*options, {"name": "target", "value": str(world.ids["bob"])}]
                expected = "Only the bot's admins"
            sent = await fake.slash(name, options, channel_id=world.where(place, "alice"))
            answer = await answer_to(fake, sent)
            assert expected in (answer.content or ""), (place, name, answer.content)
        choices = await fake.autocomplete(
            "model", [{"name": "name", "value": "gpt"}], channel_id=world.where(place, "alice")
        )
        assert "gpt-4o" in {c["value"] for c in choices}
    world.api.enqueue(Reply.text("answered in the DM"))
    await fake.user_message("and in a DM?", dm=True)  # role lists exist; alice has none of them
    await fake.wait_for(lambda s: "answered in the DM" in (s.content or ""))
    admin = await fake.slash(
        "access",
        [*COMMANDS[-1][1], {"name": "target", "value": str(world.ids["bob"])}],
        user="root",
    )
    assert "block: user" in (await answer_to(fake, admin)).content
    assert not bot.access.permits(user_id=world.ids["bob"], role_ids=set(), channel_ids=set())


async def click_refused(
    world: World, message: dict, custom_id: str, values: list[str] | None = None
) -> None:
    """alice clicks and is refused by the gate, privately."""
    sent = await world.fake.click(message, custom_id, values=values)
    answer = await answer_to(world.fake, sent)
    assert answer.content == REFUSED and answer.ephemeral, answer.content


def component(sent: Sent, label: str | None = None, kind: int = 2) -> str:
    for row in sent.components:
        for item in row.get("components", [row]):
            if item["type"] == kind and (label is None or item.get("label") == label):
                return item["custom_id"]
    raise AssertionError(f"no component {label or kind} in {sent.components}")


async def open_views(world: World, place: str) -> dict[str, Any]:
    """alice's views in a place: a running answer's Stop button, the /files menu, a file's
    Download and Delete buttons, and a delete confirmation's two buttons."""
    fake = world.fake
    channel = world.where(place, "alice")
    world.api.enqueue(Reply.tool_call(TOOL_NAME, {"code": SLEEP}))
    await fake.user_message(
        "sleep",
        channel_id=None if place == "dm" else channel,
        dm=place == "dm",
        mention_bot=place != "dm",
    )
    running_answer = await fake.wait_for(
        lambda s: s.channel_id == channel and s.kind in ("message", "dm") and bool(s.components)
    )
    listing = await answer_to(fake, await fake.slash("files", channel_id=channel))
    menu = fake.messages[listing.message_id]
    picker = component(listing, kind=3)
    file_id = listing.components[0]["components"][0]["options"][0]["value"]
    actions = await answer_to(fake, await fake.click(menu, picker, values=[file_id]))
    second = await answer_to(fake, await fake.click(menu, picker, values=[file_id]))
    await fake.click(fake.messages[second.message_id], component(second, "Delete"))
    confirm = await fake.wait_for(lambda s: "cannot be undone" in (s.content or ""))
    return {
        "stop": (fake.messages[running_answer.message_id], component(running_answer, "Stop")),
        "menu": (menu, picker, [file_id]),
        "download": (fake.messages[actions.message_id], component(actions, "Download")),
        "delete": (fake.messages[actions.message_id], component(actions, "Delete")),
        "yes": (fake.messages[confirm.message_id], component(confirm, "Yes, delete it")),
        "keep": (fake.messages[confirm.message_id], component(confirm, "Keep it")),
    }


async def access(world: World, action: str, kind: str, target: int) -> None:
    """The admin changes the access lists with /access."""
    options = [
        {"name": "action", "value": action},
        {"name": "kind", "value": kind},
        {"name": "target", "value": str(target)},
    ]
    answer = await answer_to(world.fake, await world.fake.slash("access", options, user="root"))
    assert f"{action}: {kind}" in answer.content


async def test_every_button_and_menu_is_gated(world: World) -> None:
    """Views made while alice was allowed refuse every click once she is blocked, left out of
    an allow list, carries a blocked role (in the channel and in a DM) or is in a blocked
    channel; nothing happens. Allowed again, every button and menu works."""
    fake, store = world.fake, world.bot.services.store
    alice = world.ids["alice"]
    await fake.give_role("alice", world.muted)  # not blocked yet
    await give_a_file(world, "alice")
    views = {place: await open_views(world, place) for place in ("general", "dm")}
    rules = [
        ("block", "user", alice, ("general", "dm")),
        ("allow", "user", world.ids["bob"], ("general", "dm")),  # alice is left out
        ("block", "role", world.muted, ("general", "dm")),
        ("block", "channel", fake.channel_id, ("general",)),
    ]
    for action, kind, target, places in rules:
        await access(world, action, kind, target)
        for place in places:
            for message, custom_id, *values in views[place].values():
                await click_refused(world, message, custom_id, *values)
        await access(world, "clear", kind, target)
    assert len(await store.list(str(alice))) == 1
    assert not any(s.files for s in fake.sent)
    assert len(world.bot.conversation_tasks(alice)) == 2  # both answers still running

    for place in ("general", "dm"):
        message, picker, values = views[place]["menu"]
        actions = await answer_to(fake, await fake.click(message, picker, values=values))
        assert "kept.csv" in actions.content
        download = await answer_to(fake, await fake.click(*views[place]["download"]))
        assert download.files == {"kept.csv": b"a\n1\n"}, download.content
        await fake.click(*views[place]["stop"])
        await fake.wait_for(lambda s: s.content == "Stopped.")
    kept = await answer_to(fake, await fake.click(*views["dm"]["keep"]))
    assert kept.content == "Kept."
    deleted = await answer_to(fake, await fake.click(*views["general"]["yes"]))
    assert deleted.content == "Deleted kept.csv."
    assert await store.list(str(alice)) == []


@pytest.mark.parametrize("world", [{"RATE_LIMIT_MESSAGES": 2}], indirect=True)
async def test_floods_are_told_to_slow_down_once_per_window(world: World) -> None:
    """Commands, buttons and messages draw on one allowance per user. Past it the user is
    told once when to come back: five /new make two threads and one "Slow down"; ten more
    messages get no reply at all and never reach the model."""
    fake = world.fake
    threads_before = len(fake.channels)
    answers = []
    for _ in range(5):
        answers.append(await fake.slash("new", [{"name": "title", "value": "flood"}]))
    started = [await answer_to(fake, answers[0]), await answer_to(fake, answers[1])]
    assert all("Started" in s.content for s in started)
    slow = await answer_to(fake, answers[2])
    assert slow.content.startswith("Slow down") and slow.ephemeral
    for n in range(10):
        await fake.user_message(f"flood {n}", mention_bot=True)
    await marker(world)
    assert len(fake.channels) == threads_before + 2
    assert [s for s in fake.sent if "Slow down" in (s.content or "")] == [slow]
    for late in answers[3:]:  # over the limit and already told: no answer at all
        assert not [s for s in fake.sent if late["id"] in s.route or late["token"] in s.route]
    assert len(world.api.requests) == 1  # the marker
    autocomplete = await fake.autocomplete("model", [{"name": "name", "value": "gpt"}])
    assert autocomplete == []  # over the limit: nothing offered (and nothing counted)


async def test_new_needs_the_permission_to_create_threads(world: World) -> None:
    """/new refuses a caller who may not create threads in the channel, and says so when the
    bot may not; with the permission it starts the thread."""
    fake = world.fake
    no_threads = discord.Permissions(create_public_threads=True)
    await fake.set_overwrite(fake.channel_id, "bob", deny=no_threads)
    before = len(fake.channels)
    refused = await answer_to(fake, await fake.slash("new", user="bob"))
    assert "Create Public Threads permission" in refused.content and refused.ephemeral
    await fake.set_overwrite(fake.channel_id, fake.guild_id, deny=no_threads)  # the bot too
    bot_cannot = await answer_to(fake, await fake.slash("new"))  # alice owns the guild
    assert "I may not create threads" in bot_cannot.content
    assert len(fake.channels) == before
    await fake.set_overwrite(fake.channel_id, fake.guild_id)
    await fake.set_overwrite(fake.channel_id, "bob")
    started = await answer_to(fake, await fake.slash("new", user="bob"))
    assert "Started" in started.content and len(fake.channels) == before + 1


def test_every_view_and_modal_passes_the_gate() -> None:
    """Every view and modal of the Discord front end goes through the gate and keeps its own
    rule in ``allows`` (overriding interaction_check would skip the gate)."""
    for module in pkgutil.walk_packages(discord_frontend.__path__, "labbot.frontends.discord."):
        importlib.import_module(module.name)
    found = []
    for base in (discord.ui.View, discord.ui.Modal):
        pending = [base]
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            if cls.__module__.startswith("labbot."):
                found.append(cls)
    assert {c.__name__ for c in found} >= {"StopView", "OwnerView", "FilePicker", "FileActions"}
    for cls in found:
        assert issubclass(cls, GatedView | GatedModal), cls
        if cls not in (GatedView, GatedModal):
            assert "interaction_check" not in vars(cls), cls
            assert inspect.iscoroutinefunction(cls.allows), cls


@pytest.mark.parametrize("world", [{"BLOCKED_ROLE_IDS": ["muted"]}], indirect=True)
async def test_blocked_roles_apply_in_direct_messages(world: World) -> None:
    """A DM's author has no roles of their own: the bot looks them up in the guilds it shares
    with them (kept for ROLE_CACHE_SECONDS), so a blocked role given meanwhile counts too."""
    fake = world.fake
    now = [1000.0]
    world.bot.gate.clock = lambda: now[0]
    asked = [await fake.user_message("hi from carol", author="carol", dm=True)]
    world.api.enqueue(Reply.text("hello bob"))
    await fake.user_message("hi from bob", author="bob", dm=True)
    await fake.wait_for(lambda s: "hello bob" in (s.content or ""))
    await fake.give_role("bob", world.muted)
    now[0] += ROLE_CACHE_SECONDS
    asked.append(await fake.user_message("still there?", author="bob", dm=True))
    await marker(world, "alice")
    assert replies_to(world, asked) == []
    assert len(world.api.requests) == 2  # bob's first question and the marker
