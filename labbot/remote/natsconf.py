"""A nats-server configuration with one user per role: the bot may call any worker; each worker
may only take its own subjects, say it is alive and answer the requests it was sent."""

from __future__ import annotations

import json
from pathlib import Path

from labbot.remote import bus


def server_config(
    *,
    listen: str,
    store_dir: Path,
    bot_password: str,
    workers: dict[str, str],
    tls: tuple[Path, Path] | None = None,
) -> str:
    """The text of a nats-server config file (JetStream on; ``workers`` maps host id to
    password; ``tls`` = (certificate, key) turns TLS on for every client)."""
    q = json.dumps  # NATS config strings accept JSON quoting
    users = [
        "    {user: bot, password: %s, permissions: {\n"
        '      publish: ["labbot.exec.*", "labbot.ctl.*", "$JS.API.>", "$KV.%s.>"]\n'
        '      subscribe: ["labbot.hb.*", "labbot.stream.>", "_INBOX.>"]\n'
        "    }}" % (q(bot_password), bus.KV_BUCKET)
    ]
    for host, password in sorted(workers.items()):
        users.append(
            "    {user: %s, password: %s, permissions: {\n"
            "      publish: [%s, \"labbot.stream.>\"]\n"
            "      subscribe: [%s, %s]\n"
            "      allow_responses: true\n"
            "    }}"
            % (
                q(f"worker-{host}"),
                q(password),
                q(bus.heartbeat_subject(host)),
                q(bus.exec_subject(host)),
                q(bus.ctl_subject(host)),
            )
        )
    tls_block = ""
    if tls:
        tls_block = "tls {\n  cert_file: %s\n  key_file: %s\n}\n" % (q(str(tls[0])), q(str(tls[1])))
    return (
        f"listen: {listen}\n"
        f"jetstream {{\n  store_dir: {q(str(store_dir))}\n  max_memory_store: 64MB\n"
        "  max_file_store: 1GB\n}\n"
        f"{tls_block}"
        "authorization {\n  users: [\n" + ",\n".join(users) + "\n  ]\n}\n"
    )
