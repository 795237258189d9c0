"""Operational logging: one line per event, as text or JSON, never secrets or file contents."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# discord.py's loggers (discord.http, discord.gateway, discord.client, discord.state, ...) log
# whole request and event bodies at DEBUG: users' messages and the bot's answers.
DISCORD_LOGGER = "discord"
# The lowest level other libraries may log at: the HTTP client under openai logs every request's
# full URL at INFO (OPENAI_BASE_URL's userinfo and query, e.g. ?api-key=, included) and headers
# at DEBUG; openai's DEBUG lines describe requests.
LIBRARY_FLOORS = {
    "httpx": logging.WARNING,
    "httpx2": logging.WARNING,
    "httpcore": logging.WARNING,
    "httpcore2": logging.WARNING,
    "openai": logging.INFO,
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event message."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def mask_url(url: str) -> str:
    """The URL for a log line: scheme, host, port and path kept; userinfo and query values
    masked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "***"
    if not parts.scheme or not parts.hostname:
        return url
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port is not None else "")
    if parts.username is not None or parts.password is not None:
        netloc = f"***:***@{netloc}" if parts.password is not None else f"***@{netloc}"
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query.replace("%2A", "*"), ""))


def configure_logging(
    level: str = "INFO", fmt: str = "text", *, discord_debug: bool = False
) -> None:
    """Send labbot's logs to stderr, so stdout stays data for scripts. discord.py's own loggers
    stay at INFO or above unless ``discord_debug`` (LOG_DISCORD_DEBUG): at DEBUG they hold the
    full bodies of messages and requests. The HTTP client's stay at WARNING (LIBRARY_FLOORS)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    wanted = logging.getLevelName(level)
    floor = max(wanted, logging.INFO)
    logging.getLogger(DISCORD_LOGGER).setLevel(logging.NOTSET if discord_debug else floor)
    for name, lowest in LIBRARY_FLOORS.items():
        logging.getLogger(name).setLevel(max(wanted, lowest))
