"""Signed, expiring download links: ``<PUBLIC_URL>/f/<user>/<file id>/<expiry>/<signature>``.

The signature is HMAC-SHA256 over the user, the file id and the expiry with a secret the bot
alone holds (``DOWNLOAD_SECRET``, or a key made once in the data dir, 0600), so a link cannot be
made or changed without it: a file id alone is never enough. Checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from labbot.config import Settings
from labbot.errors import ConfigError
from labbot.files.blobs import USER_PATTERN
from labbot.files.names import FILE_ID_PATTERN

log = logging.getLogger(__name__)

KEY_FILE = "download-link.key"
PREFIX = "/f/"
ROUTE = PREFIX + "{user}/{file_id}/{expires}/{signature}"
_SIGNATURE = r"[A-Za-z0-9_-]{43}"  # 32 bytes, base64url without padding
_PATH = re.compile(
    rf"({USER_PATTERN})/({FILE_ID_PATTERN})/([0-9]{{1,12}})/({_SIGNATURE})", re.ASCII
)
Verdict = Literal["ok", "expired", "bad"]


class LinkSigner:
    """Makes and checks download links under one secret and one public address."""

    def __init__(
        self,
        secret: bytes,
        public_url: str,
        *,
        lifetime: timedelta = timedelta(hours=24),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if len(secret) < 16:
            raise ConfigError("DOWNLOAD_SECRET is too short.", hint="Use at least 16 characters.")
        self._secret = secret
        self.public_url = public_url.rstrip("/")
        self.lifetime = lifetime
        self.now = now

    def _signature(self, user: str, file_id: str, expires: int) -> str:
        message = f"labbot-download-v1\n{user}\n{file_id}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, user: str, file_id: str, *, until: datetime | None = None) -> str:
        """A link to the file, good for ``lifetime`` (or until ``until``, if sooner)."""
        expiry = self.now() + self.lifetime
        if until is not None:
            expiry = min(expiry, until)
        expires = int(expiry.timestamp())
        signature = self._signature(user, file_id, expires)
        return f"{self.public_url}{PREFIX}{user}/{file_id}/{expires}/{signature}"

    def check(self, user: str, file_id: str, expires: str, signature: str) -> Verdict:
        """``ok``, ``expired`` (signed by us, but too old), or ``bad`` (not a link of ours)."""
        if not _PATH.fullmatch(f"{user}/{file_id}/{expires}/{signature}"):
            return "bad"
        expected = self._signature(user, file_id, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return "bad"
        if int(expires) <= self.now().timestamp():
            return "expired"
        return "ok"

    def is_ours(self, url: str) -> bool:
        """True for a link this signer made that has not expired (the only links the bot
        lets Discord preview)."""
        start = self.public_url + PREFIX
        if not url.startswith(start):
            return False
        parts = url[len(start) :].split("/")
        return len(parts) == 4 and self.check(*parts) == "ok"


def signing_key(settings: Settings) -> bytes:
    """DOWNLOAD_SECRET, else the data dir's key file, made once (random, 0600) by whichever
    process comes first (written aside, then linked into place, so none reads half a key)."""
    if settings.DOWNLOAD_SECRET is not None:
        return settings.DOWNLOAD_SECRET.get_secret_value().encode()
    path = settings.LABBOT_DATA_DIR / KEY_FILE
    if not path.exists():
        _make_key(path)
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"{path} is readable by others.", hint=f"Run: chmod 600 {path} (or delete it)."
        )
    return path.read_bytes().strip()


def _make_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    aside = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(aside, path)  # fails if another process made one first: theirs is kept
        log.info("download.key_created")
    except FileExistsError:
        pass
    finally:
        aside.unlink()
