"""Operational logging: one line per event, as text or JSON, never secrets or file contents."""

from __future__ import annotations

import json
import logging
import re
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


# Characters that could forge a log line or drive a terminal: C0 and C1 controls (newline,
# carriage return, ESC, ...), DEL, line and paragraph separators and the bidi controls.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


_JSON_ESCAPED = (
    *range(0x7F, 0xA0),
    0x61C,
    0x200E,
    0x200F,
    *range(0x2028, 0x202F),
    *range(0x2066, 0x206A),
)
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in _JSON_ESCAPED}


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: every control character written as a visible escape (``\\x0a``)."""
    return _CONTROLS.sub(_escaped, text)


class TextFormatter(logging.Formatter):
    """One line per record: time, level, logger, event. The event (message and arguments,
    whoever wrote them) has its control characters escaped, and a traceback's lines are
    indented, so a line starting at column 0 is always a record: none can be forged. URLs in
    it are masked (``mask_urls``), whatever library wrote them."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as one line (plus an indented traceback)."""
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(mask_urls(self.formatMessage(record)))
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "".join(f"\n    {escape_controls(mask_urls(p))}" for p in block.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event message (control characters
    escaped as in the text format)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": escape_controls(mask_urls(record.getMessage())),
        }
        if record.exc_info:
            entry["exception"] = mask_urls(self.formatException(record.exc_info))
        # JSON escapes C0 controls itself; the others become \u escapes too (same value).
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_ESCAPES)


# A path segment that looks like a credential: named like one, or a long mix of letters and
# digits (a token, an account or deployment key) rather than a word like "v1" or "openai".
_SECRET_WORDS = re.compile(
    r"secret|token|passw|api[-_]?key|^(sk|tok|key|pat|ghp|xox[a-z])[-_]", re.I
)
_TOKEN_LIKE = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_.~%+=-]{16,}")
# A URL inside a text; it ends at whitespace, a quote, or where a comma starts another URL.
# A scheme is at most 64 characters: an unbounded run made every word start rescan the rest
# of the text (16 KB of "a." took 2 s in every log line holding it).
_URL_IN_TEXT = re.compile(
    r"\b[a-z][a-z0-9+.-]{0,63}://(?:(?!,[a-z][a-z0-9+.-]{0,63}://)[^\s'\"<>`])+", re.IGNORECASE
)


def secret_looking(segment: str) -> bool:
    """True if a URL path segment looks like a credential (``tok_...``, a long random id)."""
    return bool(_SECRET_WORDS.search(segment) or _TOKEN_LIKE.fullmatch(segment))


def mask_url(url: str) -> str:
    """The URL for a log line or an operator: scheme, host, port and path kept; userinfo,
    query values and secret-looking path segments masked."""
    if "://" not in url:
        return f"***@{url.rpartition('@')[2]}" if "@" in url else url
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
    path = "/".join("***" if secret_looking(s) else s for s in parts.path.split("/"))
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, path, query.replace("%2A", "*"), ""))


def mask_urls(text: str) -> str:
    """``text`` with every URL in it masked by ``mask_url`` (a comma-separated list of URLs,
    as LABBOT_NATS_URL may be, included); the one masking of settings and error texts."""

    def masked(match: re.Match[str]) -> str:
        url = match.group()
        tail = len(url) - len(url.rstrip(".,;:!?)]}"))
        return mask_url(url[: len(url) - tail]) + url[len(url) - tail :]

    return _URL_IN_TEXT.sub(masked, text)


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
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    wanted = logging.getLevelName(level)
    floor = max(wanted, logging.INFO)
    logging.getLogger(DISCORD_LOGGER).setLevel(logging.NOTSET if discord_debug else floor)
    for name, lowest in LIBRARY_FLOORS.items():
        logging.getLogger(name).setLevel(max(wanted, lowest))
