"""A nats-server configuration with one user per role: the bot may call any worker; each worker
may only take its own subjects, say it is alive and answer the requests it was sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from labbot.remote import bus


def server_config(
    *,
    listen: str,
    store_dir: Path,
    bot_password: str,
    workers: dict[str, str],
    tls: tuple[Path, Path] | None = None,
    reply_window: str = "1h",
) -> str:
    """The text of a nats-server config file (JetStream on; ``workers`` maps host id to
    password; ``tls`` = (certificate, key) turns TLS on for every client; ``reply_window`` is
    how long a worker may take to answer a request, as a NATS duration)."""
    q = json.dumps  # NATS config strings and lists accept JSON syntax
    bot = {
        "publish": ["labbot.exec.*", "labbot.ctl.*", "$JS.API.>", f"$KV.{bus.KV_BUCKET}.>"],
        "subscribe": ["labbot.hb.*", "labbot.stream.>", "_INBOX.>"],
    }
    users = [_user("bot", bot_password, bot)]
    for host, password in sorted(workers.items()):
        worker = {
            "publish": [bus.heartbeat_subject(host), "labbot.stream.>"],
            "subscribe": [bus.exec_subject(host), bus.ctl_subject(host)],
            # One reply per request, for as long as an execution may take (the server's
            # default is 2 minutes, shorter than CODE_EXECUTION_TIMEOUT).
            "allow_responses": {"max": 1, "expires": reply_window},
        }
        users.append(_user(f"worker-{host}", password, worker))
    lines = [
        f"listen: {listen}",
        "jetstream {",
        f"  store_dir: {q(str(store_dir))}",
        "  max_memory_store: 64MB",
        "  max_file_store: 1GB",
        "}",
    ]
    if tls:
        lines += ["tls {", f"  cert_file: {q(str(tls[0]))}", f"  key_file: {q(str(tls[1]))}", "}"]
    lines += ["authorization {", "  users: [", ",\n".join(users), "  ]", "}", ""]
    return "\n".join(lines)


def _user(name: str, password: str, permissions: Mapping[str, object]) -> str:
    rules = "\n".join(f"      {key}: {json.dumps(value)}" for key, value in permissions.items())
    return (
        f"    {{user: {json.dumps(name)}, password: {json.dumps(password)}, permissions: {{\n"
        f"{rules}\n    }}}}"
    )
