"""`labbot doctor`'s Discord checks: the token's form, the application id in it, whether
Discord accepts it, the intents the bot needs, and the invite URL with the permissions it uses;
and the sentences `labbot run` gives when logging in fails."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import aiohttp
import discord

from labbot.errors import ConfigError, LabbotError

LOGIN_TIMEOUT = 10.0  # seconds to wait for Discord's answer to the token
MALFORMED = (
    "DISCORD_TOKEN does not look like a bot token (three dot-separated parts);"
    " copy it again from the Developer Portal, Bot"
)
RESET_HINT = (
    "Make a new one (Developer Portal > your app > Bot > Reset Token) and set DISCORD_TOKEN to it."
)

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
        return [("discord token", False, MALFORMED)]
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


class DiscordUnreachable(LabbotError):
    """Discord could not be reached (no network, DNS, a proxy): the token is not verified."""


def login_error(exc: BaseException) -> LabbotError | None:
    """The sentence for a failed Discord login, or None when ``exc`` is not one."""
    if isinstance(exc, discord.LoginFailure):
        return ConfigError(
            "Discord refused DISCORD_TOKEN (it was reset or mistyped).", hint=RESET_HINT
        )
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return ConfigError(
            "Discord refused the bot's intents.",
            hint="Developer Portal > your app > Bot > Privileged Gateway Intents: turn on"
            " Message Content Intent.",
        )
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError | discord.GatewayNotFound):
        return DiscordUnreachable(
            f"Discord cannot be reached ({type(exc).__name__}).",
            hint="Check this machine's network, DNS and proxy, then try again.",
        )
    return None


async def login(token: str) -> dict[str, Any]:
    """The bot user Discord returns for ``token`` (GET /users/@me, as the bot logs in).

    :raises ConfigError: the token is malformed or refused.
    :raises DiscordUnreachable: Discord did not answer.
    """
    if application_id(token) is None:
        raise ConfigError(f"{MALFORMED}.")
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    try:
        async with asyncio.timeout(LOGIN_TIMEOUT):
            return dict(await http.static_login(token))
    except discord.HTTPException as exc:
        raise DiscordUnreachable(
            f"Discord answered HTTP {exc.status} to the login.", hint="Try again later."
        ) from exc
    except Exception as exc:
        if (error := login_error(exc)) is None:
            raise
        raise error from exc
    finally:
        await http.close()
