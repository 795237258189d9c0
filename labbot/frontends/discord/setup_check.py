"""`labbot doctor`'s Discord checks: the token's form, the application id in it, the intents
the bot needs, and the invite URL with the permissions it uses."""

from __future__ import annotations

import base64
import binascii

import discord

# View channels, send messages, send in threads, create public threads, embed links, attach
# files, read history, add reactions, use slash commands.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_application_commands=True,
)


def application_id(token: str) -> int | None:
    """The bot's user id, which the first part of a bot token encodes; None if malformed."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    head = parts[0] + "=" * (-len(parts[0]) % 4)
    try:
        decoded = base64.urlsafe_b64decode(head).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(decoded) if decoded.isdigit() else None


def invite_url(app_id: int) -> str:
    """The URL that adds the bot to a server with the permissions and scopes it needs."""
    return discord.utils.oauth_url(
        app_id, permissions=PERMISSIONS, scopes=("bot", "applications.commands")
    )


def checks(token: str | None) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) lines for doctor."""
    if not token:
        return [("discord", True, "DISCORD_TOKEN not set: the bot is off (terminal chat only)")]
    app_id = application_id(token)
    if app_id is None:
        return [
            (
                "discord token",
                False,
                "DISCORD_TOKEN does not look like a bot token"
                " (three dot-separated parts); copy it again from the Developer Portal, Bot",
            )
        ]
    return [
        ("discord token", True, f"well-formed, application {app_id}"),
        (
            "discord intents",
            True,
            "the bot needs the privileged MESSAGE CONTENT intent: Developer"
            " Portal > your app > Bot > Privileged Gateway Intents > Message Content Intent (on)",
        ),
        ("discord invite", True, invite_url(app_id)),
    ]
