"""Access lists and doctor's Discord checks (no Discord needed)."""

from __future__ import annotations

import base64
from pathlib import Path

from labbot.chat.preferences import open_sqlite_preferences
from labbot.config import load_settings
from labbot.frontends.discord.access import AccessPolicy
from labbot.frontends.discord.setup_check import application_id, checks, invite_url
from labbot.sqlite import SqliteDatabase


async def policy(tmp_path: Path, **settings) -> tuple[AccessPolicy, SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "a.sqlite3")
    store = (await open_sqlite_preferences(db)).admin
    access = AccessPolicy(load_settings(LABBOT_DATA_DIR=tmp_path, **settings), store)
    await access.load()
    return access, db


async def test_open_by_default_blocks_win_admins_pass(tmp_path: Path) -> None:
    """No lists: everyone; a blocked user or role is refused; admins always pass."""
    access, db = await policy(tmp_path, BLOCKED_USER_IDS="2", BLOCKED_ROLE_IDS="9", ADMIN_IDS="2 3")
    assert access.permits(user_id=1, role_ids=set(), channel_ids={10})
    assert not access.permits(user_id=4, role_ids={9}, channel_ids={10})
    assert access.permits(user_id=2, role_ids=set(), channel_ids={10})  # admin beats block
    await db.close()


async def test_allow_lists_combine_users_or_roles_and_channels(tmp_path: Path) -> None:
    """With user and role allow lists, either admits; a channel allow list limits guild
    channels (a thread's parent counts) but not DMs."""
    access, db = await policy(
        tmp_path, ALLOWED_USER_IDS="1", ALLOWED_ROLE_IDS="7", ALLOWED_CHANNEL_IDS="100"
    )
    assert access.permits(user_id=1, role_ids=set(), channel_ids={100})
    assert access.permits(user_id=5, role_ids={7}, channel_ids={555, 100})
    assert not access.permits(user_id=5, role_ids=set(), channel_ids={100})
    assert not access.permits(user_id=1, role_ids=set(), channel_ids={200})
    assert access.permits(user_id=1, role_ids=set(), channel_ids=set())  # DM
    await db.close()


async def test_commanded_changes_persist(tmp_path: Path) -> None:
    """/access changes survive a restart, and clear removes an id from both lists."""
    access, db = await policy(tmp_path)
    await access.change("block", "user", 42)
    assert not access.permits(user_id=42, role_ids=set(), channel_ids=set())
    await db.close()
    again, db = await policy(tmp_path)
    assert not again.permits(user_id=42, role_ids=set(), channel_ids=set())
    await again.change("clear", "user", 42)
    assert again.permits(user_id=42, role_ids=set(), channel_ids=set())
    await db.close()


def test_token_form_and_invite_url() -> None:
    """A token's first part encodes the application id; the invite asks for bot and commands
    scopes; a malformed token is reported."""
    app = 1016987654321012345
    token = base64.urlsafe_b64encode(str(app).encode()).decode().rstrip("=") + ".GhIjKl.secret"
    assert application_id(token) == app
    url = invite_url(app)
    assert f"client_id={app}" in url and "applications.commands" in url and "permissions=" in url
    assert application_id("not-a-token") is None
    ((name, ok, detail),) = checks("not-a-token")
    assert not ok and "Developer Portal" in detail
    assert [c[0] for c in checks(token)] == ["discord token", "discord intents", "discord invite"]
