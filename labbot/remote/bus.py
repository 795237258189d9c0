"""The NATS side of scaling out: connecting with the operator's credentials, and the subjects
that bot processes and worker machines use (the messages are in ``labbot.remote.wire``).

Subjects (``<host>`` is a worker's LABBOT_HOST_ID; a worker's credentials let it take only its
own exec and ctl subjects and beat only on its own hb subject, so the subject says who it is):
  labbot.exec.<host>      request-reply: run code in a session held by that worker
  labbot.ctl.<host>       request-reply: stop, reset, drain, status
  labbot.hb.<host>        heartbeat, once a second: free slots, sessions, draining, time limit
  labbot.stream.<id>      live output of one execution, in order
KV bucket ``labbot_sessions``: session key -> host id, TTL = the session idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from typing import Any

from nats.aio.client import Client

from labbot.config import Settings
from labbot.errors import SandboxUnavailable
from labbot.logs import mask_urls

log = logging.getLogger(__name__)

CONNECT_BUDGET = 8.0  # seconds to reach the broker at start
KV_BUCKET = "labbot_sessions"


def exec_subject(host: str) -> str:
    """Where a worker takes executions."""
    return f"labbot.exec.{host}"


def ctl_subject(host: str) -> str:
    """Where a worker takes stop, reset and drain."""
    return f"labbot.ctl.{host}"


def heartbeat_subject(host: str) -> str:
    """Where a worker says it is alive ("*" for every worker)."""
    return f"labbot.hb.{host}"


def stream_subject(request_id: str) -> str:
    """Where one execution's live output goes."""
    return f"labbot.stream.{request_id}"


def session_key(user: str, conversation: str) -> str:
    """The KV key of a conversation's session: a digest, so any conversation id fits a key
    and no user id appears in the broker."""
    return hashlib.sha256(f"{user}\0{conversation}".encode()).hexdigest()[:40]


async def connect(settings: Settings, name: str) -> Client:
    """A NATS connection with the configured credentials and TLS; reconnects forever.

    :raises SandboxUnavailable: the broker cannot be reached or refused the credentials.
    """
    options: dict[str, Any] = {
        "servers": [url.strip() for url in settings.LABBOT_NATS_URL.split(",") if url.strip()],
        "name": name,
        "connect_timeout": 2,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": _on_error,
        "disconnected_cb": _on_disconnect,
        "reconnected_cb": _on_reconnect,
    }
    if settings.LABBOT_NATS_CREDS:
        options["user_credentials"] = str(settings.LABBOT_NATS_CREDS)
    if settings.LABBOT_NATS_USER:
        options["user"] = settings.LABBOT_NATS_USER
    if settings.LABBOT_NATS_PASSWORD:
        options["password"] = settings.LABBOT_NATS_PASSWORD.get_secret_value()
    if settings.LABBOT_NATS_TLS_CA or settings.LABBOT_NATS_TLS_CERT:
        context = ssl.create_default_context(
            cafile=str(settings.LABBOT_NATS_TLS_CA) if settings.LABBOT_NATS_TLS_CA else None
        )
        if settings.LABBOT_NATS_TLS_CERT:
            key = settings.LABBOT_NATS_TLS_KEY
            context.load_cert_chain(str(settings.LABBOT_NATS_TLS_CERT), str(key) if key else None)
        options["tls"] = context
    client = Client()
    try:
        # The client would retry a failed first connection forever (TLS errors included).
        async with asyncio.timeout(CONNECT_BUDGET):
            await client.connect(**options)
        return client
    except Exception as exc:  # nats raises several unrelated types for "cannot connect"
        with contextlib.suppress(Exception):
            await client.close()  # no half-open socket left behind
        log.error("nats.connect_failed error=%s", type(exc).__name__)
        raise SandboxUnavailable(
            f"The message broker cannot be reached at {mask_urls(settings.LABBOT_NATS_URL)}"
            f" ({type(exc).__name__}).",
            hint="Check LABBOT_NATS_URL, the credentials, and that nats-server runs with -js.",
        ) from exc


async def _on_error(exc: Exception) -> None:
    log.warning("nats.error error=%s", type(exc).__name__)


async def _on_disconnect() -> None:
    log.warning("nats.disconnected")


async def _on_reconnect() -> None:
    log.info("nats.reconnected")
