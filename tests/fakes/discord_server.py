"""A loopback Discord API emulator: REST, gateway websocket and CDN, for end-to-end bot tests.

The real, unmodified discord.py client talks to this server over HTTP and a websocket; only
``discord.http.Route.BASE`` (REST *and* the interaction/webhook adapter) and
``DiscordWebSocket.DEFAULT_GATEWAY`` are redirected::

    async with FakeDiscord() as fake:
        bot = make_bot()
        async with running(bot, fake):             # patches, starts, waits for on_ready
            await fake.user_message("hi", files={"data.csv": b"a,b\\n1,2\\n"})
            sent = await fake.next_sent()
            assert sent.files["summary.csv"].startswith(b"rows")

One guild "Lab" with a text channel "general", the users "alice" (the guild's owner), "bob" and
"otherbot" (a bot) and the bot itself exist from the start; ``add_user``, ``add_role``,
``give_role``, ``add_channel`` and ``set_overwrite`` shape the guild (members carry their roles,
and interactions carry the permissions Discord computes from roles and channel overwrites).
Tests *drive* the bot by dispatching real gateway events (``user_message``, ``user_edit``,
``create_thread``, ``slash``, ``click``, ``autocomplete``) and *observe* it through ``sent``
(everything it posted, in order), ``messages`` (the current state of every message), ``typing``,
``downloads``, ``commands`` and ``reactions``.

Payload gotchas that discord.py 2.7 imposes (each one cost a failing run):

- JSON responses must carry ``Content-Type: application/json`` *exactly* (no charset), or
  discord.py treats the body as text and crashes far away.
- A non-sharded client never asks ``/gateway/bot``; it connects to the class attribute
  ``DiscordWebSocket.DEFAULT_GATEWAY``. READY's ``resume_gateway_url`` must point back here.
- The application id comes from ``GET /oauth2/applications/@me`` (a missing key is a KeyError)
  and decides the ``tree.sync()`` and followup-webhook URLs.
- ``on_ready`` waits ``guild_ready_timeout`` (2 s by default) after the last GUILD_CREATE;
  ``running`` sets it to 0.05 s. Guild members are all sent in GUILD_CREATE with a matching
  ``member_count`` so the guild counts as chunked even with the members intent.
- INTERACTION_CREATE needs ``id, application_id, type, token, version, attachment_size_limit``,
  a ``channel`` object and a ``member`` with ``flags``; responses go through the webhook adapter,
  which posts ``?with_response=1`` and parses ``{"interaction": ..., "resource": ...}``.
- A 429 is retried only with a ``Via`` header and a JSON ``retry_after``; otherwise discord.py
  assumes a Cloudflare ban and raises.
- discord.py logs exceptions from handlers instead of raising them; ``running`` collects ERROR
  records from the ``discord`` logger and fails on exit (waits fail as soon as one appears).
- Ordering: the HTTP response is written *before* the gateway echo is dispatched and the Sent is
  recorded. Otherwise a test can click a button before discord.py has read the response and
  registered the view, and the click is silently dropped.
- Never answer 500 by accident: discord.py retries 5xx with 1 s, 3 s, ... sleeps. Emulator bugs
  answer 400 and land in ``errors`` (``running`` fails on them). Under ``filterwarnings=error``
  even aiohttp's ``NotAppKeyWarning`` for ``request["key"]`` turned into such a 500.
- IDs in payloads are strings; ``guild_id``, ``channel_id``, ``application_id`` and
  ``Sent.channel_id``/``message_id`` are ints. discord.py sends ``message_reference.message_id``
  as an int.

Discord behaviour that is modelled: the bot's own messages are echoed as MESSAGE_CREATE;
ephemeral messages produce no gateway event; a thread started from a message has the message's
id; the first followup after a *thinking* defer replaces the loading message; empty messages,
content over 2000 characters, uploads over the guild's file size limit, a second interaction
acknowledgement and slash commands that were never synced are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import discord
import yarl
from aiohttp import WSMsgType, web
from discord.ext import commands

__all__ = ["FakeDiscord", "Sent", "running"]

_log = logging.getLogger(__name__)

API = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
FILESIZE_LIMIT = 10 * 1024 * 1024  # guild.filesize_limit for premium_tier 0 in discord.py 2.7
MESSAGE_CONTENT_LIMIT = 2000
EPHEMERAL = 64
LOADING = 128
SUPPRESS_EMBEDS = 4  # no link previews (embeds) on this message
_DM = 1
_THREAD_TYPES = (10, 11, 12)
# What @everyone may do in the fake guild, and what interactions report the user may do.
_PERMISSIONS = str((discord.Permissions.text() | discord.Permissions(view_channel=True)).value)
_ALL_PERMISSIONS = discord.Permissions.all().value
_ADMINISTRATOR = discord.Permissions(administrator=True).value
_VIEW_CHANNEL = discord.Permissions(view_channel=True).value
_SEND_MESSAGES = discord.Permissions(send_messages=True).value
_NEEDS_SEND = discord.Permissions(
    send_tts_messages=True, mention_everyone=True, embed_links=True, attach_files=True
).value
_MEMBERS_INTENT = 1 << 1  # GUILD_MEMBERS: without it Discord sends no GUILD_MEMBER_UPDATE
_SUBCOMMAND, _GROUP = 1, 2
_OPT_USER, _OPT_CHANNEL, _OPT_ROLE, _OPT_ATTACHMENT = 6, 7, 8, 11

Json = dict[str, Any]
Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.StreamResponse]]


@dataclass
class Sent:
    """One thing the bot posted.

    For ``edit``, ``edit_original`` and callback type 7 (update), ``content``, ``embeds`` and
    ``components`` are the message *after* the edit; ``payload`` is what the bot sent.
    """

    kind: str  # message | dm | edit | delete | interaction_response | followup | edit_original
    channel_id: int | None
    message_id: int | None
    content: str | None = None
    embeds: list[dict] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    flags: int = 0  # 64 = ephemeral, 4 = embeds (link previews) suppressed
    payload: dict = field(default_factory=dict)
    allowed_mentions: dict | None = None
    callback_type: int | None = None  # 4 message, 5 defer, 6 deferred update, 7 update, 8 choices
    route: str = ""  # "POST /channels/1/messages"

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def suppressed(self) -> bool:
        """Link previews (embeds) are off for the message as it stands after this."""
        return bool(self.flags & SUPPRESS_EMBEDS)

    @property
    def previews(self) -> list[str]:
        """The URLs Discord would fetch to show this message as it stands after this."""
        return previewed_urls(self.content or "", self.embeds, self.flags)


# Conservative: a link Discord would preview is any http(s) address not wrapped in <...>, in
# code or not, bare, spoilered or masked; the URL fields of embeds too. It runs as Discord's own
# autolink rule (simple-markdown's ``url``) does: up to whitespace or "<", so quotes, bars,
# backticks, ">" and full-width look-alikes inside it are part of it; trailing punctuation not.
_PREVIEWED = re.compile(r"(?<!<)https?://[^\s<]*[^\s<.,:;\"')\]|]", re.IGNORECASE)
_EMBED_URLS = ("url", "image", "thumbnail", "video", "author", "footer", "provider")


def previewed_urls(content: str, embeds: list[dict], flags: int) -> list[str]:
    """What Discord fetches to build a message's previews (nothing when they are suppressed)."""
    if flags & SUPPRESS_EMBEDS:
        return []
    found = _PREVIEWED.findall(content)
    for embed in embeds:
        found += _PREVIEWED.findall(json.dumps({k: embed.get(k) for k in _EMBED_URLS}))
    return found


@dataclass
class _Upload:
    index: int
    filename: str
    data: bytes


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict
    headers: dict[str, str]
    times: int


@dataclass
class _Interaction:
    payload: Json
    original_id: int | None = None
    loading: bool = False  # deferred with thinking, original not yet edited
    responded: bool = False
    callback: asyncio.Future[Json] | None = None


@dataclass
class _Outbox:
    """What a request handler does once its HTTP response has been written."""

    events: list[tuple[str, Json]] = field(default_factory=list)
    after: list[Callable[[], object]] = field(default_factory=list)


_OUTBOX = web.RequestKey("fake_discord_outbox", _Outbox)


class _GatewayConnection:
    """One websocket; frames are zlib-/zstd-compressed when the client asked for it."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.identified = False
        self._lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = None
        if compress == "zstd-stream":
            with contextlib.suppress(ImportError):  # without it, send text (always accepted)
                import zstandard

                self._zstd = (zstandard.ZstdCompressor().compressobj(), zstandard)

    async def send(self, payload: Json) -> None:
        raw = json.dumps(payload).encode()
        async with self._lock:
            if self.ws.closed:
                return
            if self._zlib is not None:
                await self.ws.send_bytes(
                    self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                )
            elif self._zstd is not None:
                cobj, module = self._zstd
                await self.ws.send_bytes(
                    cobj.compress(raw) + cobj.flush(module.COMPRESSOBJ_FLUSH_BLOCK)
                )
            else:
                await self.ws.send_str(raw.decode())


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    # Exactly "application/json": discord.py compares the header with ==.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return _json_response({"message": message, "code": code, **extra}, status=status)


def _find_component(components: list[dict], custom_id: str) -> dict | None:
    for comp in components:
        if comp.get("custom_id") == custom_id:
            return comp
        children = list(comp.get("components", []))
        if isinstance(comp.get("accessory"), dict):
            children.append(comp["accessory"])
        if found := _find_component(children, custom_id):
            return found
    return None


class FakeDiscord:
    """A loopback Discord: ``async with FakeDiscord() as fake: fake.patch_discord(); ...``."""

    def __init__(self, *, ratelimit_headers: bool = True) -> None:
        self.ratelimit_headers = ratelimit_headers
        self._last_snowflake = 0
        self.base_url = ""
        self.application_id = self._snowflake()
        self.bot_user = self._user("LabBot", bot=True) | {
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
        }
        self.users: dict[str, dict] = {
            "alice": self._user("alice"),
            "bob": self._user("bob"),
            "otherbot": self._user("otherbot", bot=True),
        }
        self.guild_id = self._snowflake()
        self.channel_id = self._snowflake()
        self._joined_at = _now()
        self.channels: dict[int, dict] = {
            self.channel_id: {
                "id": str(self.channel_id),
                "type": 0,
                "guild_id": str(self.guild_id),
                "name": "general",
                "position": 0,
                "parent_id": None,
                "topic": None,
                "nsfw": False,
                "rate_limit_per_user": 0,
                "permission_overwrites": [],
                "last_message_id": None,
                "flags": 0,
            }
        }
        self.dm_channels: dict[str, int] = {}  # user key -> DM channel id
        self.roles: list[dict] = [self._role(self.guild_id, "@everyone", _PERMISSIONS)]
        self.member_roles: dict[str, list[str]] = {}  # user id -> role ids

        # Observations.
        self.sent: list[Sent] = []
        self.messages: dict[int, dict] = {}
        self.typing: list[int] = []
        self.downloads: dict[str, int] = Counter()
        self.cdn_gone: set[str] = set()  # attachment names the CDN answers 404 for
        self.cdn_cut: set[str] = set()  # attachment names whose download breaks off half-way
        self.reactions: list[tuple[int, str]] = []  # (message id, emoji) the bot added
        self.unhandled: list[str] = []
        self.errors: list[str] = []  # exceptions inside the emulator itself
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        self.identify: dict | None = None  # the last IDENTIFY payload ("d")
        self.resumes = 0  # RESUMEs received
        self.log_errors: list[logging.LogRecord] = []  # filled by running()

        self._global_commands: list[dict] = []
        self._guild_commands: dict[int, list[dict]] = {}
        self._cdn: dict[int, tuple[str, bytes]] = {}
        self._interactions: dict[str, _Interaction] = {}
        self._faults: list[_Fault] = []
        self._consumed: set[int] = set()
        self._changed = asyncio.Event()
        self._conns: set[_GatewayConnection] = set()
        self._live: _GatewayConnection | None = None
        self._seq = 0
        self._session_id = secrets.token_hex(16)
        self._bot_task: asyncio.Task[Any] | None = None
        self._runner: web.AppRunner | None = None
        self._saved_patch: tuple[str, yarl.URL] | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._add_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def patch_discord(self) -> None:
        """Point discord.py's REST, webhook and gateway URLs here; ``close()`` restores them."""
        if not self.base_url:
            raise RuntimeError("start() the FakeDiscord before patching")
        if self._saved_patch is None:
            self._saved_patch = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        discord.http.Route.BASE = self.base_url + API
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/gateway"

    async def close(self) -> None:
        if self._saved_patch is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
                self._saved_patch
            )
            self._saved_patch = None
        for conn in list(self._conns):
            await conn.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ model helpers

    def _snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._last_snowflake = max(self._last_snowflake + 1, ms << 22)
        return self._last_snowflake

    def _user(self, name: str, *, bot: bool = False) -> dict:
        return {
            "id": str(self._snowflake()),
            "username": name,
            "discriminator": "0",
            "global_name": None if bot else name.title(),
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }

    @property
    def bot_id(self) -> int:
        return int(self.bot_user["id"])

    def _role(self, role_id: int, name: str, permissions: str) -> dict:
        return {
            "id": str(role_id),
            "name": name,
            "permissions": permissions,
            "position": len(getattr(self, "roles", [])),
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _member(self, user: dict | None = None) -> dict:
        member = {
            "roles": list(self.member_roles.get(user["id"], [])) if user else [],
            "joined_at": self._joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if user is not None:
            member["user"] = user
        return member

    def _user_by_id(self, user_id: int | str) -> dict | None:
        for user in [self.bot_user, *self.users.values()]:
            if user["id"] == str(user_id):
                return user
        return None

    def _resolve_user(self, user: str | dict) -> dict:
        if isinstance(user, dict):
            return user
        if user not in self.users:
            raise KeyError(f"unknown user {user!r}; known: {sorted(self.users)}")
        return self.users[user]

    def guild_payload(self) -> dict:
        """The full guild as sent in GUILD_CREATE."""
        members = [self._member(u) for u in [self.bot_user, *self.users.values()]]
        return {
            "id": str(self.guild_id),
            "name": "Lab",
            "icon": None,
            "owner_id": self.users["alice"]["id"],
            "features": [],
            "premium_tier": 0,  # -> filesize_limit 10 MiB
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": str(self.channel_id),
            "afk_timeout": 300,
            "large": False,
            "unavailable": False,
            "joined_at": self._joined_at,
            "member_count": len(members),  # == len(members): counts as chunked
            "members": members,
            "roles": [dict(r) for r in self.roles],  # @everyone first: it has the guild's id
            "channels": [c for c in self.channels.values() if c["type"] in (0, 2, 4, 5)],
            "threads": [c for c in self.channels.values() if c["type"] in _THREAD_TYPES],
            "emojis": [],
            "stickers": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
        }

    def _is_guild_channel(self, channel_id: int) -> bool:
        return "guild_id" in self.channels.get(channel_id, {})

    def _dm_channel(self, user: dict) -> int:
        key = next((k for k, u in self.users.items() if u["id"] == user["id"]), user["id"])
        if key not in self.dm_channels:
            cid = self._snowflake()
            self.channels[cid] = {
                "id": str(cid),
                "type": _DM,
                "last_message_id": None,
                "recipients": [user],
                "flags": 0,
            }
            self.dm_channels[key] = cid
        return self.dm_channels[key]

    def _store_attachment(
        self, channel_id: int, filename: str, data: bytes, *, size: int | None = None, **extra: Any
    ) -> dict:
        att_id = self._snowflake()
        self._cdn[att_id] = (filename, data)
        url = f"{self.base_url}/cdn/attachments/{channel_id}/{att_id}/{quote(filename)}"
        return {
            "id": str(att_id),
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            **{k: v for k, v in extra.items() if v is not None},
        }

    def _attachments_from_uploads(
        self, channel_id: int, uploads: list[_Upload], described: list[dict] | None
    ) -> list[dict]:
        meta = {str(a.get("id")): a for a in described or []}
        out = []
        for up in uploads:
            info = meta.get(str(up.index), {})
            out.append(
                self._store_attachment(
                    channel_id,
                    info.get("filename") or up.filename,
                    up.data,
                    description=info.get("description"),
                )
            )
        return out

    def _bot_message(self, channel_id: int, payload: dict, uploads: dict, **extra: Any) -> dict:
        """A message the bot posts (a message or a followup), from its JSON payload."""
        return self._new_message(
            channel_id,
            self.bot_user,
            content=payload.get("content") or "",
            embeds=payload.get("embeds"),
            components=payload.get("components"),
            attachments=self._attachments_from_uploads(
                channel_id, uploads, payload.get("attachments")
            ),
            flags=payload.get("flags") or 0,
            **extra,
        )

    def _new_message(
        self,
        channel_id: int,
        author: dict,
        *,
        content: str = "",
        embeds: list[dict] | None = None,
        components: list[dict] | None = None,
        attachments: list[dict] | None = None,
        flags: int = 0,
        msg_type: int = 0,
        reference: dict | None = None,
        mentions: list[dict] | None = None,
        mention_everyone: bool = False,
        webhook: bool = False,
    ) -> dict:
        mid = self._snowflake()
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": author,
            "content": content or "",
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "reactions": [],
            "pinned": False,
            "type": msg_type,
            "flags": flags,
        }
        if self._is_guild_channel(channel_id):
            msg["guild_id"] = str(self.guild_id)
            msg["member"] = {k: v for k, v in self._member(author).items() if k != "user"}
        if webhook:
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
        if reference is not None:
            ref_id = int(reference["message_id"])
            msg["message_reference"] = {
                "type": reference.get("type", 0),
                "message_id": str(ref_id),
                "channel_id": str(reference.get("channel_id") or channel_id),
                **({"guild_id": str(self.guild_id)} if "guild_id" in msg else {}),
            }
            referenced = self.messages.get(ref_id)
            if referenced is not None:  # Discord nests one level only
                referenced = {k: v for k, v in referenced.items() if k != "referenced_message"}
            msg["referenced_message"] = referenced
            if msg_type == 0:
                msg["type"] = 19  # reply
        self.messages[mid] = msg
        channel = self.channels.get(channel_id)
        if channel is not None:
            channel["last_message_id"] = str(mid)
            if channel["type"] in _THREAD_TYPES:
                channel["message_count"] += 1
                channel["total_message_sent"] += 1
        return msg

    def _apply_edit(self, msg: dict, payload: dict, uploads: list[_Upload]) -> dict:
        for key in ("content", "embeds", "components"):
            if key in payload:
                msg[key] = (
                    payload[key] if payload[key] is not None else ([] if key != "content" else "")
                )
        if payload.get("flags") is not None:
            msg["flags"] = payload["flags"] | (msg["flags"] & EPHEMERAL)
        channel_id = int(msg["channel_id"])
        if "attachments" in payload:
            keep = {str(a["id"]) for a in payload["attachments"] or []}
            msg["attachments"] = [a for a in msg["attachments"] if a["id"] in keep]
        if uploads:
            msg["attachments"] = msg["attachments"] + self._attachments_from_uploads(
                channel_id, uploads, payload.get("attachments")
            )
        msg["edited_timestamp"] = _now()
        return msg

    def _sent(
        self,
        kind: str,
        request: web.Request,
        *,
        channel_id: int | None,
        message: dict | None = None,
        payload: dict | None = None,
        body: dict | None = None,
        uploads: list[_Upload] | None = None,
        callback_type: int | None = None,
        message_id: int | None = None,
    ) -> Sent:
        """Record a Sent; ``body`` is the message-shaped part of ``payload``."""
        payload = payload or {}
        body = payload if body is None else body
        source = message if (message is not None and kind != "delete") else body
        sent = Sent(
            kind=kind,
            channel_id=channel_id,
            message_id=int(message["id"]) if message is not None else message_id,
            content=source.get("content"),
            embeds=list(source.get("embeds") or []),
            components=list(source.get("components") or []),
            files={u.filename: u.data for u in uploads or []},
            flags=int((message or body).get("flags") or 0),
            payload=payload,
            allowed_mentions=body.get("allowed_mentions"),
            callback_type=callback_type,
            route=f"{request.method} {self._rel(request.path)}",
        )
        request[_OUTBOX].after.append(lambda: self.sent.append(sent))
        return sent

    def _event(self, request: web.Request, name: str, data: Json) -> None:
        """Dispatch a gateway event once the HTTP response has been written."""
        request[_OUTBOX].events.append((name, data))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("GET", "/gateway"))
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConnection(ws, request.query.get("compress"))
        self._conns.add(conn)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    await self._gateway_op(conn, json.loads(msg.data))
                except Exception as exc:  # keep serving; the fixture reports it
                    self.errors.append(f"gateway: {exc!r}")
                    _log.exception("FakeDiscord gateway error")
        finally:
            self._conns.discard(conn)
            if self._live is conn:
                self._live = None
        return ws

    async def _gateway_op(self, conn: _GatewayConnection, message: Json) -> None:
        op, data = message.get("op"), message.get("d")
        if op == 1:  # HEARTBEAT
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:  # IDENTIFY
            self.identify = data
            self._session_id = secrets.token_hex(16)
            self._live, conn.identified = conn, True
            ready = {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": self._session_id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            if data.get("shard"):
                ready["shard"] = data["shard"]
            await self._send_event(conn, "READY", ready)
            await self._send_event(conn, "GUILD_CREATE", self.guild_payload())
        elif op == 6:  # RESUME
            if data.get("session_id") != self._session_id:
                await conn.send({"op": 9, "d": False, "s": None, "t": None})  # INVALID_SESSION
                return
            self._live, conn.identified = conn, True
            self.resumes += 1
            await self._send_event(conn, "RESUMED", {})
            self._notify()
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            chunk = {
                "guild_id": str(self.guild_id),
                "members": self.guild_payload()["members"],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if data.get("nonce") is not None:
                chunk["nonce"] = data["nonce"]
            await self._send_event(conn, "GUILD_MEMBERS_CHUNK", chunk)
        # op 3 (presence), 4 (voice) and others: accepted and ignored.

    async def _send_event(self, conn: _GatewayConnection, name: str, data: Json) -> None:
        self._seq += 1
        await conn.send({"op": 0, "t": name, "s": self._seq, "d": data})

    async def dispatch(self, name: str, data: Json, *, required: bool = True) -> None:
        """Send a gateway DISPATCH event to the connected bot."""
        conn = self._live
        if conn is None or conn.ws.closed:
            if required:
                raise RuntimeError(f"cannot dispatch {name}: the bot is not connected/identified")
            return
        await self._send_event(conn, name, data)

    async def reconnect(self, *, timeout: float = 15) -> None:  # noqa: ASYNC109
        """Send op 7 RECONNECT and wait until the bot has RESUMEd on a new connection."""
        conn, resumes = self._live, self.resumes
        if conn is None:
            raise RuntimeError("the bot is not connected")
        await conn.send({"op": 7, "d": None, "s": None, "t": None})
        try:
            async with asyncio.timeout(timeout):
                while self.resumes == resumes:
                    changed = self._changed
                    if problem := self._failure():
                        raise AssertionError(f"while waiting for RESUME: {problem}")
                    await changed.wait()
        except TimeoutError:
            raise AssertionError(f"the bot did not RESUME within {timeout}s") from None

    # ------------------------------------------------------------------ HTTP plumbing

    @staticmethod
    def _rel(path: str) -> str:
        return path[len(API) :] if path.startswith(API + "/") else path

    def _route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._routes.append((method, re.compile(pattern), handler))
            return handler

        return register

    def _ratelimit_headers(self, method: str, rel: str) -> dict[str, str]:
        if not self.ratelimit_headers:
            return {}
        template = re.sub(r"\d{5,}", ":id", rel)
        bucket = hashlib.sha1(f"{method} {template}".encode()).hexdigest()
        return {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset-After": "1.0",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Bucket": bucket[:16],
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route_request(request)
        except Exception as exc:  # a 500 would make discord.py retry with long sleeps
            self.errors.append(f"{request.method} {request.path}: {exc!r}")
            _log.exception("FakeDiscord error in %s %s", request.method, request.path)
            return _error(400, 0, f"FakeDiscord error: {exc!r}")

    async def _route_request(self, request: web.Request) -> web.StreamResponse:
        method, rel = request.method, self._rel(request.path)
        self.requests.append((method, request.path))
        for fault in self._faults:
            if fault.times > 0 and fault.method == method and fault.pattern.search(rel):
                fault.times -= 1
                await request.read()
                return _json_response(fault.body, status=fault.status, headers=fault.headers)
        for route_method, pattern, handler in self._routes:
            if route_method == method and (match := pattern.fullmatch(rel)):
                request[_OUTBOX] = _Outbox()
                response = await handler(request, match)
                if not rel.startswith("/cdn/"):
                    response.headers.update(self._ratelimit_headers(method, rel))
                return await self._finish(request, response)
        self.unhandled.append(f"{method} {rel}")
        return _error(404, 0, f"404: Not Found (not emulated by FakeDiscord: {method} {rel})")

    async def _finish(self, request: web.Request, response: web.Response) -> web.Response:
        """Write the response, *then* dispatch gateway events and record what was sent.

        So a test that sees a Sent can act on it: by then discord.py has the HTTP answer (e.g.
        it registered the view of a message before the click on it arrives).
        """
        await response.prepare(request)
        await response.write_eof()
        outbox = request[_OUTBOX]
        for name, data in outbox.events:
            await self.dispatch(name, data, required=False)
        for action in outbox.after:
            action()
        if outbox.events or outbox.after:
            self._notify()
        return response

    async def _read(self, request: web.Request) -> tuple[Any, list[_Upload]]:
        """A JSON body, or multipart ``payload_json`` plus ``files[n]`` parts."""
        if request.content_type.startswith("multipart/"):
            payload: Any = {}
            uploads: list[_Upload] = []
            async for part in await request.multipart():
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.name and (m := re.fullmatch(r"files\[(\d+)\]", part.name)):
                    data = bytes(await part.read())
                    uploads.append(_Upload(int(m[1]), part.filename or part.name, data))
            return payload, uploads
        raw = await request.read()
        return (json.loads(raw) if raw else {}), []

    def _check_message(
        self, body: dict, uploads: list[_Upload], *, edit: bool = False
    ) -> web.Response | None:
        content = body.get("content") or ""
        if len(content) > MESSAGE_CONTENT_LIMIT:
            return _error(
                400,
                50035,
                "Invalid Form Body",
                errors={"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}},
            )
        if not edit and not (content or body.get("embeds") or body.get("components") or uploads):
            if not body.get("sticker_ids") and not body.get("poll"):
                return _error(400, 50006, "Cannot send an empty message")
        if sum(len(u.data) for u in uploads) > FILESIZE_LIMIT:
            return _error(413, 40005, "Request entity too large")
        return None

    # ------------------------------------------------------------------ routes

    def _add_routes(self) -> None:
        route = self._route

        @route("GET", r"/users/@me")
        async def me(request, m):
            return _json_response(self.bot_user)

        @route("GET", r"/users/(\d+)")
        async def get_user(request, m):
            user = self._user_by_id(m[1])
            return _json_response(user) if user else _error(404, 10013, "Unknown User")

        @route("GET", r"/oauth2/applications/@me")
        async def app_info(request, m):
            return _json_response(
                {
                    "id": str(self.application_id),
                    "name": "LabBot",
                    "description": "",
                    "icon": None,
                    "bot_public": False,
                    "bot_require_code_grant": False,
                    "owner": self.users["alice"],
                    "verify_key": "0" * 64,
                    "flags": 0,
                    "team": None,
                    "summary": "",
                    "bot": self.bot_user,
                }
            )

        @route("GET", r"/gateway(/bot)?")
        async def gateway(request, m):
            return _json_response(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )

        @route("GET", r"/guilds/(\d+)")
        async def get_guild(request, m):
            if int(m[1]) != self.guild_id:
                return _error(404, 10004, "Unknown Guild")
            guild = self.guild_payload()
            for key in ("members", "channels", "threads", "presences", "voice_states"):
                guild.pop(key)
            return _json_response(guild)

        @route("GET", r"/guilds/(\d+)/members/(\d+)")
        async def get_member(request, m):
            user = self._user_by_id(m[2])
            if int(m[1]) != self.guild_id or user is None:
                return _error(404, 10007, "Unknown Member")
            return _json_response(self._member(user))

        @route("GET", r"/channels/(\d+)")
        async def get_channel(request, m):
            channel = self.channels.get(int(m[1]))
            return _json_response(channel) if channel else _error(404, 10003, "Unknown Channel")

        @route("PATCH", r"/channels/(\d+)")
        async def edit_channel(request, m):
            channel = self.channels.get(int(m[1]))
            if channel is None:
                return _error(404, 10003, "Unknown Channel")
            payload, _ = await self._read(request)
            meta = channel.get("thread_metadata")
            for key, value in payload.items():
                if meta is not None and key in ("archived", "locked", "auto_archive_duration"):
                    meta[key] = value
                else:
                    channel[key] = value
            event = "THREAD_UPDATE" if meta is not None else "CHANNEL_UPDATE"
            self._event(request, event, channel)
            return _json_response(channel)

        @route("POST", r"/users/@me/channels")
        async def open_dm(request, m):
            payload, _ = await self._read(request)
            user = self._user_by_id(payload.get("recipient_id", ""))
            if user is None:
                return _error(400, 50033, "Invalid Recipients")
            return _json_response(self.channels[self._dm_channel(user)])

        @route("POST", r"/channels/(\d+)/typing")
        async def typing(request, m):
            request[_OUTBOX].after.append(lambda: self.typing.append(int(m[1])))
            return web.Response(status=204)

        @route("POST", r"/channels/(\d+)/messages")
        async def send_message(request, m):
            cid = int(m[1])
            channel = self.channels.get(cid)
            if channel is None:
                return _error(404, 10003, "Unknown Channel")
            payload, uploads = await self._read(request)
            if (problem := self._check_message(payload, uploads)) is not None:
                return problem
            reference = payload.get("message_reference")
            if reference and int(reference["message_id"]) not in self.messages:
                if reference.get("fail_if_not_exists", True):
                    return _error(400, 50035, "Invalid Form Body: Unknown message")
                reference = None
            msg = self._bot_message(cid, payload, uploads, reference=reference)
            kind = "dm" if channel["type"] == _DM else "message"
            self._sent(kind, request, channel_id=cid, message=msg, payload=payload, uploads=uploads)
            self._event(request, "MESSAGE_CREATE", msg)
            return _json_response(msg)

        @route("GET", r"/channels/(\d+)/messages")
        async def history(request, m):
            cid = int(m[1])
            limit = int(request.query.get("limit", 50))
            before = int(request.query.get("before", 1 << 63))
            after = int(request.query.get("after", 0))
            found = [
                msg
                for mid, msg in sorted(self.messages.items(), reverse=True)
                if int(msg["channel_id"]) == cid
                and after < mid < before
                and not msg["flags"] & EPHEMERAL
            ]
            return _json_response(found[:limit])

        @route("GET", r"/channels/(\d+)/messages/(\d+)")
        async def get_message(request, m):
            msg = self.messages.get(int(m[2]))
            if msg is None or msg["channel_id"] != m[1]:
                return _error(404, 10008, "Unknown Message")
            return _json_response(msg)

        @route("PATCH", r"/channels/(\d+)/messages/(\d+)")
        async def edit_message(request, m):
            msg = self.messages.get(int(m[2]))
            if msg is None or msg["channel_id"] != m[1]:
                return _error(404, 10008, "Unknown Message")
            if msg["author"]["id"] != self.bot_user["id"]:
                return _error(403, 50005, "Cannot edit a message authored by another user")
            payload, uploads = await self._read(request)
            if (problem := self._check_message(payload, uploads, edit=True)) is not None:
                return problem
            self._apply_edit(msg, payload, uploads)
            self._sent(
                "edit", request, channel_id=int(m[1]), message=msg, payload=payload, uploads=uploads
            )
            self._event(request, "MESSAGE_UPDATE", msg)
            return _json_response(msg)

        @route("DELETE", r"/channels/(\d+)/messages/(\d+)")
        async def delete_message(request, m):
            msg = self.messages.get(int(m[2]))
            if msg is None or msg["channel_id"] != m[1]:
                return _error(404, 10008, "Unknown Message")
            self._delete(request, msg)
            return web.Response(status=204)

        @route("PUT", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me")
        async def add_reaction(request, m):
            if int(m[2]) not in self.messages:
                return _error(404, 10008, "Unknown Message")
            reaction = (int(m[2]), unquote(m[3]))
            request[_OUTBOX].after.append(lambda: self.reactions.append(reaction))
            return web.Response(status=204)

        @route("DELETE", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me")
        async def remove_reaction(request, m):
            with contextlib.suppress(ValueError):
                self.reactions.remove((int(m[2]), unquote(m[3])))
            return web.Response(status=204)

        @route("POST", r"/channels/(\d+)/messages/(\d+)/threads")
        async def thread_from_message(request, m):
            cid, mid = int(m[1]), int(m[2])
            if cid not in self.channels or mid not in self.messages:
                return _error(404, 10008, "Unknown Message")
            if mid in self.channels:
                return _error(400, 160004, "A thread has already been created for this message")
            payload, _ = await self._read(request)
            thread = self._new_thread(payload, parent_id=cid, owner=self.bot_user, thread_id=mid)
            self.messages[mid]["thread"] = thread
            self._event(request, "THREAD_CREATE", thread | {"newly_created": True})
            return _json_response(thread)

        @route("POST", r"/channels/(\d+)/threads")
        async def thread_without_message(request, m):
            cid = int(m[1])
            if cid not in self.channels:
                return _error(404, 10003, "Unknown Channel")
            payload, _ = await self._read(request)
            thread = self._new_thread(payload, parent_id=cid, owner=self.bot_user)
            self._event(request, "THREAD_CREATE", thread | {"newly_created": True})
            return _json_response(thread)

        @route("PUT", r"/channels/(\d+)/thread-members/(@me|\d+)")
        async def join_thread(request, m):
            return web.Response(status=204)

        @route("DELETE", r"/channels/(\d+)/thread-members/(@me|\d+)")
        async def leave_thread(request, m):
            return web.Response(status=204)

        @route("GET", r"/cdn/attachments/(\d+)/(\d+)/([^/]+)")
        async def cdn(request, m):
            stored = self._cdn.get(int(m[2]))
            if stored is None or stored[0] in self.cdn_gone:
                return web.Response(status=404, text="Not Found")
            filename, data = stored
            self.downloads[filename] += 1
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            if filename in self.cdn_cut:  # the whole length promised, half sent, then closed
                cut = web.StreamResponse(headers={"Content-Length": str(len(data))})
                cut.content_type = content_type
                await cut.prepare(request)
                await cut.write(data[: len(data) // 2])
                assert request.transport is not None
                request.transport.close()
                return cut
            return web.Response(body=data, content_type=content_type)

        # -- application commands (tree.sync)

        def commands_for(app_id: str, guild_id: str | None) -> list[dict] | None:
            if int(app_id) != self.application_id:
                return None
            if guild_id is None:
                return self._global_commands
            return self._guild_commands.get(int(guild_id), [])

        @route("GET", r"/applications/(\d+)(?:/guilds/(\d+))?/commands")
        async def get_commands(request, m):
            found = commands_for(m[1], m[2])
            return (
                _error(404, 10002, "Unknown Application")
                if found is None
                else (_json_response(found))
            )

        @route("PUT", r"/applications/(\d+)(?:/guilds/(\d+))?/commands")
        async def sync_commands(request, m):
            previous = commands_for(m[1], m[2])
            if previous is None:
                return _error(404, 10002, "Unknown Application")
            if m[2] is not None and int(m[2]) != self.guild_id:
                return _error(403, 50001, "Missing Access")
            uploaded, _ = await self._read(request)
            old = {(c["name"], c.get("type", 1)): c for c in previous}
            stored = []
            for cmd in uploaded:
                kept = old.get((cmd["name"], cmd.get("type", 1)))
                stored.append(
                    {
                        "type": 1,
                        "description": "",
                        "options": [],
                        "default_member_permissions": None,
                        "nsfw": False,
                        **cmd,
                        "id": kept["id"] if kept else str(self._snowflake()),
                        "application_id": str(self.application_id),
                        "version": str(self._snowflake()),
                        **({"guild_id": m[2]} if m[2] else {}),
                    }
                )
            if m[2] is None:
                self._global_commands = stored
            else:
                self._guild_commands[int(m[2])] = stored
            self._notify()
            return _json_response(stored)

        # -- interactions

        @route("POST", r"/interactions/(\d+)/([^/]+)/callback")
        async def callback(request, m):
            return await self._interaction_callback(request, m[1], m[2])

        def webhook_itx(app_id: str, token: str) -> _Interaction | None:
            itx = self._interactions.get(token)
            if int(app_id) != self.application_id or itx is None or not itx.responded:
                return None
            return itx

        @route("POST", r"/webhooks/(\d+)/([^/]+)")
        async def followup(request, m):
            itx = webhook_itx(m[1], m[2])
            if itx is None:
                return _error(404, 10015, "Unknown Webhook")
            payload, uploads = await self._read(request)
            if (problem := self._check_message(payload, uploads)) is not None:
                return problem
            cid = int(itx.payload["channel_id"])
            if itx.loading and itx.original_id in self.messages:
                # Discord: the first followup after a thinking defer replaces the loading message.
                msg = self.messages[itx.original_id]
                itx.loading = False
                keep = msg["flags"] & EPHEMERAL
                self._apply_edit(msg, payload, uploads)
                msg["flags"] = (msg["flags"] & ~(LOADING | EPHEMERAL)) | keep
                msg["edited_timestamp"] = None
                event = "MESSAGE_UPDATE"
            else:
                msg = self._bot_message(cid, payload, uploads, webhook=True)
                event = "MESSAGE_CREATE"
            self._sent(
                "followup", request, channel_id=cid, message=msg, payload=payload, uploads=uploads
            )
            if not msg["flags"] & EPHEMERAL:
                self._event(request, event, msg)
            return _json_response(msg)

        def webhook_message(itx: _Interaction, which: str) -> dict | None:
            mid = itx.original_id if which == "@original" else int(which)
            return self.messages.get(mid) if mid is not None else None

        @route("GET", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)")
        async def get_webhook_message(request, m):
            itx = webhook_itx(m[1], m[2])
            msg = webhook_message(itx, m[3]) if itx else None
            return _json_response(msg) if msg else _error(404, 10008, "Unknown Message")

        @route("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)")
        async def edit_webhook_message(request, m):
            itx = webhook_itx(m[1], m[2])
            msg = webhook_message(itx, m[3]) if itx else None
            if itx is None or msg is None:
                return _error(404, 10008, "Unknown Message")
            payload, uploads = await self._read(request)
            if (problem := self._check_message(payload, uploads, edit=True)) is not None:
                return problem
            self._apply_edit(msg, payload, uploads)
            if m[3] == "@original":
                itx.loading = False
                msg["flags"] &= ~LOADING
            kind = "edit_original" if m[3] == "@original" else "edit"
            self._sent(
                kind,
                request,
                channel_id=int(msg["channel_id"]),
                message=msg,
                payload=payload,
                uploads=uploads,
            )
            if not msg["flags"] & EPHEMERAL:
                self._event(request, "MESSAGE_UPDATE", msg)
            return _json_response(msg)

        @route("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)")
        async def delete_webhook_message(request, m):
            itx = webhook_itx(m[1], m[2])
            msg = webhook_message(itx, m[3]) if itx else None
            if msg is None:
                return _error(404, 10008, "Unknown Message")
            self._delete(request, msg)
            return web.Response(status=204)

    def _delete(self, request: web.Request, msg: dict) -> None:
        mid, cid = int(msg["id"]), int(msg["channel_id"])
        self.messages.pop(mid, None)
        self._sent("delete", request, channel_id=cid, message_id=mid)
        event = {"id": str(mid), "channel_id": str(cid)}
        if "guild_id" in msg:
            event["guild_id"] = msg["guild_id"]
        if not msg["flags"] & EPHEMERAL:
            self._event(request, "MESSAGE_DELETE", event)

    def _new_thread(
        self, payload: dict, *, parent_id: int, owner: dict, thread_id: int | None = None
    ) -> dict:
        tid = thread_id or self._snowflake()
        thread = {
            "id": str(tid),
            "type": payload.get("type") or 11,
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": owner["id"],
            "name": payload.get("name") or "thread",
            "last_message_id": None,
            "rate_limit_per_user": payload.get("rate_limit_per_user") or 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": payload.get("auto_archive_duration") or 1440,
                "archive_timestamp": _now(),
                "locked": False,
                "invitable": payload.get("invitable", True),
                "create_timestamp": _now(),
            },
        }
        if owner["id"] == self.bot_user["id"]:
            thread["member"] = {
                "id": str(tid),
                "user_id": owner["id"],
                "join_timestamp": _now(),
                "flags": 0,
            }
        self.channels[tid] = thread
        return thread

    async def _interaction_callback(
        self, request: web.Request, interaction_id: str, token: str
    ) -> web.StreamResponse:
        itx = self._interactions.get(token)
        if itx is None or itx.payload["id"] != interaction_id:
            return _error(404, 10062, "Unknown interaction")
        body, uploads = await self._read(request)
        if itx.responded:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        ctype, data = body.get("type"), body.get("data") or {}
        cid = int(itx.payload["channel_id"])
        message: dict | None = None
        if ctype == 4 and (problem := self._check_message(data, uploads)) is not None:
            return problem
        itx.responded = True
        if ctype in (4, 5):
            flags = (data.get("flags") or 0) | (LOADING if ctype == 5 else 0)
            message = self._new_message(
                cid,
                self.bot_user,
                content=data.get("content", "") if ctype == 4 else "",
                embeds=data.get("embeds") if ctype == 4 else None,
                components=data.get("components") if ctype == 4 else None,
                attachments=self._attachments_from_uploads(cid, uploads, data.get("attachments")),
                flags=flags,
                msg_type=20 if itx.payload["type"] == 2 else 0,
                webhook=True,
            )
            itx.original_id, itx.loading = int(message["id"]), ctype == 5
            if not flags & EPHEMERAL:
                self._event(request, "MESSAGE_CREATE", message)
        elif ctype in (6, 7) and "message" in itx.payload:
            target = self.messages.get(int(itx.payload["message"]["id"]))
            itx.original_id = int(itx.payload["message"]["id"])
            if ctype == 7 and target is not None:
                message = self._apply_edit(target, data, uploads)
                if not target["flags"] & EPHEMERAL:
                    self._event(request, "MESSAGE_UPDATE", target)
        self._sent(
            "interaction_response",
            request,
            channel_id=cid,
            message=message if ctype != 5 else None,
            payload=body,
            body=data,
            uploads=uploads,
            callback_type=ctype,
            message_id=itx.original_id,
        )
        future = itx.callback
        if future is not None and not future.done():
            request[_OUTBOX].after.append(lambda: future.set_result(body))
        response: Json = {
            "interaction": {
                "id": interaction_id,
                "type": itx.payload["type"],
                "response_message_id": str(itx.original_id) if itx.original_id else None,
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL),
            },
            "resource": {"type": ctype},
        }
        if message is not None:
            response["resource"]["message"] = message
        return _json_response(response)

    # ------------------------------------------------------------------ fault injection

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        ``path_regex`` is searched in the path without the ``/api/v10`` prefix, e.g.
        ``r"/channels/\\d+/messages$"`` (CDN paths start with ``/cdn/``). A 429 gets the ``Via``
        header and a ``retry_after`` (0.01 s unless given) that discord.py needs to retry.
        """
        body = dict(body or {"message": f"injected {status}", "code": 0})
        headers = dict(headers or {})
        if status == 429:
            body.setdefault("message", "You are being rate limited.")
            body.setdefault("retry_after", 0.01)
            body.setdefault("global", False)
            headers.setdefault("Via", "1.1 google")
            headers.setdefault("Retry-After", str(max(1, round(body["retry_after"]))))
            headers.setdefault("X-RateLimit-Scope", "user")
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, body, headers, times)
        )

    # ------------------------------------------------------------------ driving the bot

    def _message_of(self, message: dict | Sent) -> dict:
        mid = message.message_id if isinstance(message, Sent) else int(message["id"])
        if mid is None or mid not in self.messages:
            raise KeyError(f"no such message {mid} (deleted, or never sent)")
        return self.messages[mid]

    async def user_message(
        self,
        content: str = "",
        *,
        author: str = "alice",
        channel_id: int | None = None,
        files: dict[str, bytes] | None = None,
        declared_sizes: dict[str, int] | None = None,
        mention_bot: bool = False,
        mention_everyone: bool = False,
        reply_to: dict | Sent | int | None = None,
        dm: bool = False,
    ) -> dict:
        """Dispatch MESSAGE_CREATE from a user; returns the message payload. ``reply_to`` may
        be a message id, of one deleted since (Discord then sends a null referenced message)."""
        user = self._resolve_user(author)
        if dm:
            cid = self._dm_channel(user)
        else:
            cid = self.channel_id if channel_id is None else channel_id
            if cid not in self.channels:
                raise KeyError(f"unknown channel {cid}")
        mentions = []
        if mention_bot:
            content = f"<@{self.bot_user['id']}> {content}".rstrip()
            mention = dict(self.bot_user)
            if not dm:
                mention["member"] = self._member()
            mentions.append(mention)
        if mention_everyone:
            content = f"@everyone {content}".rstrip()
        sizes = declared_sizes or {}
        attachments = [
            self._store_attachment(cid, name, data, size=sizes.get(name))
            for name, data in (files or {}).items()
        ]
        reference = None
        if isinstance(reply_to, int):  # a message id, maybe of one deleted since
            reference = {"message_id": str(reply_to), "channel_id": str(cid)}
        elif reply_to is not None:
            target = self._message_of(reply_to)
            reference = {"message_id": target["id"], "channel_id": target["channel_id"]}
        msg = self._new_message(
            cid,
            user,
            content=content,
            attachments=attachments,
            reference=reference,
            mentions=mentions,
            mention_everyone=mention_everyone,
        )
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    # -- the guild: users, roles, channels and permissions (before or while the bot runs)

    def add_user(self, name: str) -> dict:
        """A new guild member ``name``. Add users before the bot starts: without the members
        intent Discord tells a running bot nothing about members who join."""
        self.users[name] = self._user(name)
        return self.users[name]

    async def add_role(self, name: str, *, permissions: discord.Permissions | None = None) -> int:
        """A guild role (no permissions unless given); a running bot gets GUILD_ROLE_CREATE."""
        role = self._role(
            self._snowflake(), name, str((permissions or discord.Permissions()).value)
        )
        self.roles.append(role)
        await self.dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(self.guild_id), "role": role}, required=False
        )
        return int(role["id"])

    async def give_role(self, user: str, role_id: int) -> None:
        """Give a member a role. Like Discord, GUILD_MEMBER_UPDATE reaches only a bot that asked
        for the members intent; others see the role on the member's next message or
        interaction, or by fetching the member."""
        who = self._resolve_user(user)
        roles = self.member_roles.setdefault(who["id"], [])
        if str(role_id) not in roles:
            roles.append(str(role_id))
        if self.identify and int(self.identify.get("intents", 0)) & _MEMBERS_INTENT:
            update = self._member(who) | {"guild_id": str(self.guild_id)}
            await self.dispatch("GUILD_MEMBER_UPDATE", update, required=False)

    async def add_channel(self, name: str) -> int:
        """A new text channel in the guild; a running bot gets CHANNEL_CREATE."""
        cid = self._snowflake()
        self.channels[cid] = dict(self.channels[self.channel_id]) | {
            "id": str(cid),
            "name": name,
            "position": len(self.channels),
            "permission_overwrites": [],
            "last_message_id": None,
        }
        await self.dispatch("CHANNEL_CREATE", self.channels[cid], required=False)
        return cid

    async def set_overwrite(
        self,
        channel_id: int,
        target: str | int,
        *,
        allow: discord.Permissions | None = None,
        deny: discord.Permissions | None = None,
    ) -> None:
        """Set a channel permission overwrite for a member (user key) or a role (role id);
        a running bot gets CHANNEL_UPDATE."""
        channel = self.channels[channel_id]
        if isinstance(target, str):
            target_id, kind = self._resolve_user(target)["id"], 1
        else:
            target_id, kind = str(target), 0
        kept = [o for o in channel["permission_overwrites"] if o["id"] != target_id]
        overwrite = {
            "id": target_id,
            "type": kind,
            "allow": str((allow or discord.Permissions()).value),
            "deny": str((deny or discord.Permissions()).value),
        }
        channel["permission_overwrites"] = [*kept, overwrite]
        await self.dispatch("CHANNEL_UPDATE", channel, required=False)

    def permissions_for(self, user: str | dict, channel_id: int) -> int:
        """What ``user`` may do in a guild channel, computed as Discord does: the owner may do
        everything; else @everyone and the member's roles, then the channel's (a thread's
        parent's) overwrites for @everyone, the member's roles, and the member, then the
        implicit denials."""
        who = self._resolve_user(user)
        if who["id"] == self.users["alice"]["id"]:  # the guild owner
            return _ALL_PERMISSIONS
        mine = {str(self.guild_id), *self.member_roles.get(who["id"], [])}
        value = 0
        for role in self.roles:
            if role["id"] in mine:
                value |= int(role["permissions"])
        if value & _ADMINISTRATOR:
            return _ALL_PERMISSIONS
        channel = self.channels[channel_id]
        if channel["type"] in _THREAD_TYPES:
            channel = self.channels[int(channel["parent_id"])]
        overwrites = {o["id"]: o for o in channel.get("permission_overwrites") or []}
        everyone = overwrites.get(str(self.guild_id))
        if everyone:
            value = (value & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for role_id in mine - {str(self.guild_id)}:
            if role_id in overwrites:
                allow |= int(overwrites[role_id]["allow"])
                deny |= int(overwrites[role_id]["deny"])
        value = (value & ~deny) | allow
        member = overwrites.get(who["id"])
        if member and member["type"] == 1:
            value = (value & ~int(member["deny"])) | int(member["allow"])
        # Implicit denials: nothing without View Channel; no TTS, @everyone, embeds or files
        # without Send Messages.
        if not value & _VIEW_CHANNEL:
            return 0
        if not value & _SEND_MESSAGES:
            value &= ~_NEEDS_SEND
        return value

    def dm_channel_of(self, user: str) -> int:
        """The id of the DM channel between ``user`` and the bot (opened if needed)."""
        return self._dm_channel(self._resolve_user(user))

    async def user_delete(self, message: dict) -> None:
        """A user deletes their message: it is gone, and MESSAGE_DELETE says so."""
        msg = self._message_of(message)
        self.messages.pop(int(msg["id"]), None)
        event = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if "guild_id" in msg:
            event["guild_id"] = msg["guild_id"]
        await self.dispatch("MESSAGE_DELETE", event)

    def user_links(self) -> set[str]:
        """Every link users posted (Discord previewed those when they posted them)."""
        bot = self.bot_user["id"]
        return {
            url
            for msg in self.messages.values()
            if msg["author"]["id"] != bot
            for url in previewed_urls(msg.get("content") or "", [], 0)
        }

    async def user_edit(self, message: dict, content: str) -> dict:
        """A user edits their message: MESSAGE_UPDATE with the new content."""
        msg = self._message_of(message)
        msg["content"] = content
        msg["edited_timestamp"] = _now()
        await self.dispatch("MESSAGE_UPDATE", msg)
        return msg

    async def create_thread(
        self,
        name: str,
        *,
        parent_id: int | None = None,
        owner: str = "alice",
        announce: bool = True,
    ) -> dict:
        """Dispatch THREAD_CREATE for a public thread a user started; returns the channel.
        ``announce=False`` sends no event: the bot learns of the thread only from its messages
        (as for a thread it was not in when it started), so discord.py does not cache it."""
        parent = self.channel_id if parent_id is None else parent_id
        thread = self._new_thread({"name": name}, parent_id=parent, owner=self._resolve_user(owner))
        if announce:
            await self.dispatch("THREAD_CREATE", thread | {"newly_created": True})
        return thread

    def _interaction(self, itype: int, data: dict, *, user: str, channel_id: int) -> Json:
        who = self._resolve_user(user)
        channel = self.channels[channel_id]
        token = "fake-interaction-" + secrets.token_urlsafe(24)
        payload: Json = {
            "id": str(self._snowflake()),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "channel_id": str(channel_id),
            "channel": channel,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(
                self.permissions_for(self.bot_user, channel_id)
                if "guild_id" in channel
                else int(_PERMISSIONS)
            ),
            "attachment_size_limit": FILESIZE_LIMIT,
            "entitlements": [],
        }
        if "guild_id" in channel:
            payload |= {
                "guild_id": str(self.guild_id),
                "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
                "guild_locale": "en-US",
                "member": self._member(who)
                | {"permissions": str(self.permissions_for(who, channel_id))},
                "authorizing_integration_owners": {"0": str(self.guild_id)},
                "context": 0,
            }
        else:
            payload |= {
                "user": who,
                "authorizing_integration_owners": {"1": who["id"]},
                "context": 1,
            }
        self._interactions[token] = _Interaction(payload)
        return payload

    def _find_command(self, name: str) -> dict:
        for cmd in [*self._guild_commands.get(self.guild_id, []), *self._global_commands]:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        synced = sorted(c["name"] for c in self.commands)
        raise AssertionError(f"/{name} was never synced with tree.sync(); synced: {synced}")

    def _command_data(
        self, name: str, options: list[dict] | None, subcommand: str | None, *, partial: bool
    ) -> dict:
        cmd = self._find_command(name)
        container, wrappers = cmd, []
        for part in (subcommand or "").split():
            sub = next(
                (
                    o
                    for o in container.get("options") or []
                    if o["name"] == part and o["type"] in (_SUBCOMMAND, _GROUP)
                ),
                None,
            )
            if sub is None:
                raise AssertionError(f"/{name} has no subcommand {subcommand!r}")
            wrappers.append(sub)
            container = sub
        schema = {o["name"]: o for o in container.get("options") or []}
        if any(o["type"] in (_SUBCOMMAND, _GROUP) for o in schema.values()):
            raise AssertionError(f"/{name} needs a subcommand, one of {sorted(schema)}")
        resolved: dict[str, dict] = {}
        filled = [self._fill_option(name, schema, opt, resolved) for opt in options or []]
        given = {o["name"] for o in filled}
        missing = [n for n, o in schema.items() if o.get("required") and n not in given]
        if missing and not partial:
            raise AssertionError(f"/{name} is missing required options {missing}")
        for sub in reversed(wrappers):
            filled = [{"name": sub["name"], "type": sub["type"], "options": filled}]
        data = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": filled}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    def _fill_option(self, command: str, schema: dict, option: dict, resolved: dict) -> dict:
        spec = schema.get(option["name"])
        if spec is None:
            raise AssertionError(
                f"/{command} has no option {option['name']!r}; options: {sorted(schema)}"
            )
        filled = {"type": spec["type"], **option}
        value = option.get("value")
        choices = [c["value"] for c in spec.get("choices") or []]
        if choices and not option.get("focused") and value not in choices:
            raise AssertionError(f"{option['name']}={value!r} is not one of the choices {choices}")
        otype = spec["type"]
        if otype == _OPT_USER:
            user = (
                self._resolve_user(value)
                if isinstance(value, str) and not value.isdigit()
                else (self._user_by_id(value))
            )
            if user is None:
                raise AssertionError(f"unknown user {value!r}")
            filled["value"] = user["id"]
            resolved.setdefault("users", {})[user["id"]] = user
            resolved.setdefault("members", {})[user["id"]] = self._member() | {
                "permissions": _PERMISSIONS
            }
        elif otype == _OPT_CHANNEL:
            channel = self.channels[int(value)]
            filled["value"] = channel["id"]
            resolved.setdefault("channels", {})[channel["id"]] = channel | {
                "permissions": _PERMISSIONS
            }
        elif otype == _OPT_ROLE:
            role = self.guild_payload()["roles"][0]
            filled["value"] = role["id"]
            resolved.setdefault("roles", {})[role["id"]] = role
        elif otype == _OPT_ATTACHMENT:
            # value: (filename, bytes) or {filename: bytes}
            filename, data = next(iter(value.items())) if isinstance(value, dict) else value
            att = self._store_attachment(self.channel_id, filename, data)
            filled["value"] = att["id"]
            resolved.setdefault("attachments", {})[att["id"]] = att
        return filled

    async def slash(
        self,
        name: str,
        options: list[dict] | None = None,
        *,
        user: str = "alice",
        channel_id: int | None = None,
        subcommand: str | None = None,
    ) -> dict:
        """Dispatch INTERACTION_CREATE (type 2) for a synced slash command.

        ``options`` are ``{"name", "value"}`` dicts; ``type`` is taken from the synced schema.
        ``subcommand`` is ``"list"`` for ``/files list`` or ``"group sub"`` for nested groups.
        User options take a user key or id, attachment options ``(filename, bytes)``.
        """
        data = self._command_data(name, options, subcommand, partial=False)
        cid = self.channel_id if channel_id is None else channel_id
        payload = self._interaction(2, data, user=user, channel_id=cid)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def click(
        self,
        message: dict | Sent,
        custom_id: str,
        *,
        user: str = "alice",
        values: list[str] | None = None,
    ) -> dict:
        """Dispatch INTERACTION_CREATE (type 3) for a button or select on a bot message."""
        msg = self._message_of(message)
        comp = _find_component(msg.get("components") or [], custom_id)
        if comp is None:
            raise AssertionError(f"message {msg['id']} has no component {custom_id!r}")
        if comp.get("disabled"):
            raise AssertionError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp["type"]}
        if comp["type"] != 2:
            allowed = [o["value"] for o in comp.get("options") or []]
            if comp["type"] == 3 and allowed and any(v not in allowed for v in values or []):
                raise AssertionError(f"{values} not among the select options {allowed}")
            data["values"] = list(values or [])
        elif values is not None:
            raise AssertionError(f"{custom_id!r} is a button; values make no sense")
        payload = self._interaction(3, data, user=user, channel_id=int(msg["channel_id"]))
        payload["message"] = msg
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def autocomplete(
        self,
        name: str,
        options: list[dict],
        *,
        user: str = "alice",
        channel_id: int | None = None,
        subcommand: str | None = None,
        timeout: float = 15,  # noqa: ASYNC109 - mirrors next_sent()
    ) -> list[dict]:
        """Dispatch an autocomplete interaction (type 4) and return the choices the bot sent.

        The option marked ``"focused": True`` (default: the last one) is being typed.
        The returned Sent is consumed, so ``next_sent()`` does not see it.
        """
        opts = [dict(o) for o in options]
        if opts and not any(o.get("focused") for o in opts):
            opts[-1]["focused"] = True
        data = self._command_data(name, opts, subcommand, partial=True)
        cid = self.channel_id if channel_id is None else channel_id
        payload = self._interaction(4, data, user=user, channel_id=cid)
        itx = self._interactions[payload["token"]]
        itx.callback = asyncio.get_running_loop().create_future()
        await self.dispatch("INTERACTION_CREATE", payload)
        body = await self._await(itx.callback, timeout, f"autocomplete /{name}")
        for i, s in enumerate(self.sent):
            if s.payload is body:
                self._consumed.add(i)
        if body.get("type") != 8:
            raise AssertionError(f"autocomplete answered with callback type {body.get('type')}")
        return list((body.get("data") or {}).get("choices") or [])

    # ------------------------------------------------------------------ observing the bot

    @property
    def commands(self) -> list[dict]:
        """Every command ``tree.sync()`` uploaded: global ones, then guild ones (``guild_id``)."""
        guild = [c for cmds in self._guild_commands.values() for c in cmds]
        return [*self._global_commands, *guild]

    def _failure(self) -> str | None:
        if self.log_errors:
            record = self.log_errors[0]
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f": {record.exc_info[1]!r}"
            return f"the bot logged an error: {text}"
        if self.errors:
            return f"FakeDiscord failed: {self.errors[0]}"
        task = self._bot_task
        if task is not None and task.done():
            exc = None if task.cancelled() else task.exception()
            return f"the bot stopped: {exc!r}"
        return None

    async def _await(self, future: asyncio.Future[Any], seconds: float, what: str) -> Any:
        try:
            async with asyncio.timeout(seconds):
                while not future.done():
                    changed = self._changed
                    if problem := self._failure():
                        raise AssertionError(f"while waiting for {what}: {problem}")
                    await changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}") from None
        return future.result()

    async def wait_for(
        self,
        predicate: Callable[[Sent], bool],
        *,
        timeout: float = 15,  # noqa: ASYNC109 - part of the test API
    ) -> Sent:
        """The earliest not-yet-consumed Sent matching ``predicate``; waits for it if needed.

        Fails fast when the bot logs an ERROR (under ``running``) or stops.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    for i, sent in enumerate(self.sent):
                        if i not in self._consumed and predicate(sent):
                            self._consumed.add(i)
                            return sent
                    if problem := self._failure():
                        raise AssertionError(problem)
                    await changed.wait()
        except TimeoutError:
            summary = [f"{s.kind} {s.content!r}" for s in self.sent]
            raise AssertionError(
                f"nothing matching was sent within {timeout}s; sent so far: {summary}; "
                f"unhandled routes: {self.unhandled}"
            ) from None

    async def next_sent(self, *, timeout: float = 15) -> Sent:  # noqa: ASYNC109
        """The earliest Sent not yet returned by ``next_sent``/``wait_for``."""
        return await self.wait_for(lambda _: True, timeout=timeout)


@asynccontextmanager
async def running(
    bot: commands.Bot | discord.Client,
    fake: FakeDiscord,
    *,
    token: str = "fake-token",
    guild_ready_timeout: float = 0.05,
    ready_timeout: float = 15,
) -> AsyncIterator[list[logging.LogRecord]]:
    """Run ``bot`` against ``fake`` until the block ends; yields when ``on_ready`` has fired.

    Patches discord.py, starts ``bot.start(token)`` as a task and fails fast if it dies before
    ready. Yields the list of ERROR records from the ``discord`` logger (clear expected ones).
    On exit it closes the bot, then fails on ERROR records, emulator errors and unhandled routes.
    """
    fake.patch_discord()
    records: list[logging.LogRecord] = []
    fake.log_errors = records

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            fake._notify()

    handler = _Collect(logging.ERROR)
    logger = logging.getLogger("discord")
    logger.addHandler(handler)
    bot._connection.guild_ready_timeout = guild_ready_timeout
    runner = asyncio.create_task(bot.start(token), name="discord-bot")
    fake._bot_task = runner
    runner.add_done_callback(lambda _: fake._notify())
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        try:
            async with asyncio.timeout(ready_timeout):
                await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise AssertionError(f"the bot was not ready within {ready_timeout}s") from None
        finally:
            ready.cancel()
        if runner.done():
            runner.result()  # raises the login/connect error
            raise AssertionError("bot.start() returned before the bot was ready")
        yield records
    finally:
        try:
            if not bot.is_closed():
                await bot.close()
            async with asyncio.timeout(ready_timeout):
                await asyncio.wait({runner})
            if not runner.cancelled():
                runner.result()  # a crash of the bot's main task
        finally:
            logger.removeHandler(handler)
            fake._bot_task = None
    problems = []
    if records:
        problems.append(
            "ERROR logged by discord: "
            + "; ".join(
                r.getMessage() + (f" ({r.exc_info[1]!r})" if r.exc_info and r.exc_info[1] else "")
                for r in records
            )
        )
    if fake.errors:
        problems.append(f"FakeDiscord errors: {fake.errors}")
    if fake.unhandled:
        problems.append(f"unhandled routes (not emulated): {fake.unhandled}")
    assert not problems, "\n".join(problems)
