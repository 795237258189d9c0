"""Every setting, read once from the environment and ``.env``; nothing else reads os.environ."""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from labbot.errors import ConfigError
from labbot.logs import mask_urls

MIB = 1024 * 1024


def default_data_dir() -> Path:
    """A persistent per-machine folder ($XDG_DATA_HOME/labbot), never /tmp."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "labbot"


def _ids(value: object) -> object:
    """Discord ids from "1, 2 3" (the environment) or a list."""
    if isinstance(value, str):
        return [int(part) for part in value.replace(",", " ").split()]
    return value


IdList = Annotated[list[int], NoDecode, BeforeValidator(_ids)]


def _names(value: object) -> object:
    """Names from "a, b c" (the environment) or a list."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    return value


NameList = Annotated[list[str], NoDecode, BeforeValidator(_names)]


def default_runtime_dir() -> Path:
    """The sandbox runtime venv that `make` builds beside the checkout (.runtime)."""
    return Path(__file__).resolve().parents[1] / ".runtime"


class Settings(BaseSettings):
    """labbot's configuration. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,  # `NAME=` (as in .env.example) means unset, for every setting
    )

    LABBOT_DATA_DIR: Path = Field(default_factory=default_data_dir)
    FILE_EXPIRATION_HOURS: float = 48.0
    MAX_FILES_PER_USER: int = Field(20, ge=1, le=10_000)
    MAX_FILE_SIZE_MB: float = Field(50.0, gt=0)
    MAX_STORAGE_MB_PER_USER: float = Field(500.0, gt=0)
    FILE_SWEEP_INTERVAL_MINUTES: float = Field(10.0, gt=0)
    # The code interpreter.
    LABBOT_SANDBOX: Literal["on", "off"] = "on"
    LABBOT_RUNTIME_DIR: Path = Field(default_factory=default_runtime_dir)
    CODE_EXECUTION_TIMEOUT: float = Field(300.0, gt=0)
    SANDBOX_MEMORY_MB: int = Field(2048, ge=64)
    SANDBOX_CPU_SECONDS: float = Field(600.0, gt=0)
    SANDBOX_CPUS: float = Field(1.0, gt=0)
    SANDBOX_MAX_PROCESSES: int = Field(64, ge=4)
    SANDBOX_DISK_MB: int = Field(512, ge=1)
    SANDBOX_OPEN_FILES: int = Field(512, ge=32)
    SANDBOX_OUTPUT_KB: int = Field(32, ge=1)
    SANDBOX_MAX_OUTPUT_FILES: int = Field(50, ge=1, le=1000)
    # When the bot is root, each live sandbox runs as its own host uid from this range (never
    # 0, never a uid of /etc/passwd): per-uid kernel budgets are then per session.
    SANDBOX_UID_BASE: int = Field(2_000_000_000, ge=1000, le=2**31 - 2)
    SANDBOX_UID_COUNT: int = Field(1024, ge=1, le=1_000_000)
    SANDBOX_WARM_POOL: int = Field(2, ge=0, le=64)
    SANDBOX_PRELOAD: bool = True
    # Idle sessions share the preloaded data stack's pages (no address randomisation inside the
    # sandbox, one hash seed per bot, KSM merges identical pages): see the README's security.
    SANDBOX_SHARE_MEMORY: bool = True
    SESSION_IDLE_MINUTES: float = Field(20.0, gt=0)
    SESSION_CHECKPOINT_MB: float = Field(256.0, ge=0)
    MAX_SESSIONS: int = Field(16, ge=1)
    MAX_SESSIONS_PER_USER: int = Field(2, ge=1)
    SANDBOX_MEMORY_BUDGET_MB: int = Field(0, ge=0)
    MAX_CONCURRENT_EXECUTIONS: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)
    MAX_CONCURRENT_EXECUTIONS_PER_USER: int = Field(1, ge=1)
    EXECUTION_QUEUE_TIMEOUT: float = Field(300.0, gt=0)
    USER_SLOT_SECONDS_PER_HOUR: float = Field(1800.0, ge=0)
    SANDBOX_AUTO_INSTALL: bool = True
    PACKAGE_ALLOWLIST: str = ""
    PACKAGE_INSTALL_TIMEOUT: float = Field(300.0, gt=0)
    PACKAGE_INSTALLS_PER_HOUR: int = Field(3, ge=0)
    # The model.
    MAX_CONCURRENT_MODEL_REQUESTS: int = Field(8, ge=1)
    MAX_CONCURRENT_MODEL_REQUESTS_PER_GUILD: int = Field(4, ge=1)
    OPENAI_API_KEY: SecretStr | None = None
    OPENAI_BASE_URL: str | None = None
    DEFAULT_MODEL: str = "gpt-4.1"
    ALLOWED_MODELS: NameList = []
    LABBOT_MODELS_FILE: Path | None = None
    MAX_TOOL_ROUNDS: int = Field(8, ge=1, le=50)
    MAX_TOOL_CALLS_PER_ROUND: int = Field(4, ge=1, le=64)
    MAX_IMAGES_PER_REQUEST: int = Field(8, ge=0, le=100)
    LLM_TIMEOUT: float = Field(120.0, gt=0)
    LLM_MAX_RETRIES: int = Field(3, ge=0, le=10)
    MAX_OUTPUT_TOKENS: int = Field(4096, ge=256)
    TIMEZONE: str = "UTC"
    # Budgets (unset: no limit); admins change them per user, role or guild with /budget.
    USER_DAILY_BUDGET_USD: Decimal | None = Field(None, ge=0)
    USER_MONTHLY_BUDGET_USD: Decimal | None = Field(None, ge=0)
    GUILD_MONTHLY_BUDGET_USD: Decimal | None = Field(None, ge=0)
    USER_DAILY_TOKENS: int | None = Field(None, ge=0)
    # What the operator sees: a Prometheus endpoint (host:port; unset: off).
    METRICS_LISTEN: str | None = None
    # MongoDB (instead of the embedded SQLite database) for deployments.
    MONGODB_URI: SecretStr | None = None
    MONGODB_DATABASE: str = "labbot"
    MONGODB_TIMEOUT_SECONDS: float = Field(5.0, gt=0)
    # Discord.
    DISCORD_TOKEN: SecretStr | None = None
    DEV_GUILD_ID: int | None = None
    ADMIN_IDS: IdList = []
    ALLOWED_USER_IDS: IdList = []
    BLOCKED_USER_IDS: IdList = []
    ALLOWED_ROLE_IDS: IdList = []
    BLOCKED_ROLE_IDS: IdList = []
    ALLOWED_CHANNEL_IDS: IdList = []
    BLOCKED_CHANNEL_IDS: IdList = []
    RATE_LIMIT_MESSAGES: int = Field(6, ge=1)
    RATE_LIMIT_SECONDS: float = Field(60.0, gt=0)
    DISCORD_USAGE_FOOTER: bool = False
    # Scaling out (see the README's "Scaling out"): where code runs and where bytes live.
    LABBOT_EXECUTOR: Literal["local", "nats"] = "local"
    LABBOT_NATS_URL: str = "nats://127.0.0.1:4222"
    LABBOT_NATS_CREDS: Path | None = None
    LABBOT_NATS_USER: str | None = None
    LABBOT_NATS_PASSWORD: SecretStr | None = None
    LABBOT_NATS_TLS_CA: Path | None = None
    LABBOT_NATS_TLS_CERT: Path | None = None
    LABBOT_NATS_TLS_KEY: Path | None = None
    LABBOT_HOST_ID: str = Field(default_factory=lambda: _host_id(socket.gethostname()))
    LABBOT_HOST_SLOTS: int | None = Field(None, ge=1, le=1024)  # wire.MAX_HOST_SLOTS
    LABBOT_HOST_DEAD_AFTER_S: float = Field(3.0, gt=0)
    LABBOT_HEARTBEAT_S: float = Field(1.0, gt=0)
    LABBOT_BLOB_URL: str | None = None
    LABBOT_BLOB_CACHE_DIR: Path | None = None
    LABBOT_BLOB_CACHE_MAX_GB: float = Field(10.0, gt=0)
    AWS_ENDPOINT_URL: str | None = None
    AWS_REGION: str | None = None
    AWS_ACCESS_KEY_ID: str | None = None
    AWS_SECRET_ACCESS_KEY: SecretStr | None = None
    AWS_SESSION_TOKEN: SecretStr | None = None
    # Download links for files too large for Discord (off unless both are set).
    PUBLIC_URL: str | None = None
    DOWNLOAD_LISTEN: str | None = None
    DOWNLOAD_SECRET: SecretStr | None = None
    DOWNLOAD_LINK_HOURS: float = Field(24.0, gt=0)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_DISCORD_DEBUG: bool = False

    @field_validator("FILE_EXPIRATION_HOURS")
    @classmethod
    def _expiry_is_positive_or_never(cls, value: float) -> float:
        if value != -1 and value <= 0:
            raise ValueError("must be a positive number of hours, or -1 for never")
        return value

    @field_validator("LABBOT_DATA_DIR", "LABBOT_RUNTIME_DIR")
    @classmethod
    def _data_dir_is_absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("LABBOT_HOST_ID")
    @classmethod
    def _host_id_is_a_subject_token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("must be 1-64 letters, digits, '-' or '_'")
        return value

    @field_validator("LABBOT_BLOB_URL")
    @classmethod
    def _blob_url_is_known(cls, value: str | None) -> str | None:
        if value and not re.match(r"(file:///|s3://[^/]+|memory://)", value):
            raise ValueError("must be file:///absolute/path, s3://bucket/prefix or memory://")
        return value or None

    @field_validator("PUBLIC_URL")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
            raise ValueError("must be the http(s) address users reach, e.g. https://labbot.example")
        return value.rstrip("/") if value else None

    @field_validator("DOWNLOAD_LISTEN", "METRICS_LISTEN")
    @classmethod
    def _listen_is_host_port(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", value):
            raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
        return value or None

    @field_validator("TIMEZONE")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("must be an IANA time zone such as Europe/Paris") from exc
        return value

    @property
    def llm_configured(self) -> bool:
        """True when a model endpoint is set (an API key, or a base URL for a local server)."""
        return self.OPENAI_API_KEY is not None or bool(self.OPENAI_BASE_URL)

    @property
    def downloads_enabled(self) -> bool:
        """True when the bot serves download links (PUBLIC_URL and DOWNLOAD_LISTEN set)."""
        return bool(self.PUBLIC_URL and self.DOWNLOAD_LISTEN)

    @property
    def file_lifetime(self) -> timedelta | None:
        """How long a file lives, or None when files never expire."""
        if self.FILE_EXPIRATION_HOURS == -1:
            return None
        return timedelta(hours=self.FILE_EXPIRATION_HOURS)

    @property
    def max_file_bytes(self) -> int:
        """The per-file size limit in bytes."""
        return int(self.MAX_FILE_SIZE_MB * MIB)

    @property
    def max_storage_bytes(self) -> int:
        """The per-user storage quota in bytes."""
        return int(self.MAX_STORAGE_MB_PER_USER * MIB)

    @property
    def files_dir(self) -> Path:
        """Where file contents live."""
        return self.LABBOT_DATA_DIR / "files"

    @property
    def sandbox_dir(self) -> Path:
        """Per-session working folders of the code interpreter."""
        return self.LABBOT_DATA_DIR / "sandbox"

    @property
    def blob_cache_dir(self) -> Path:
        """Where a worker keeps copies of input files fetched from object storage."""
        return self.LABBOT_BLOB_CACHE_DIR or self.LABBOT_DATA_DIR / "blob-cache"

    @property
    def host_slots(self) -> int:
        """How many live sessions this worker machine holds."""
        return self.LABBOT_HOST_SLOTS or self.MAX_SESSIONS

    @property
    def database_path(self) -> Path:
        """The embedded SQLite metadata database."""
        return self.LABBOT_DATA_DIR / "labbot.sqlite3"


def _host_id(hostname: str) -> str:
    """A hostname made fit for a NATS subject token."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", hostname.split(".")[0])[:64] or "worker"


# Never echoed back: the fields typed SecretStr.
SECRET_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one ConfigError naming each variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"Invalid configuration: {problems}.") from exc


def _describe(err: Any) -> str:
    name = ".".join(str(p) for p in err["loc"]) or "settings"
    shown = "***" if name in SECRET_FIELDS else err.get("input")
    if isinstance(shown, str):
        shown = mask_urls(shown)  # a URL's credentials are not echoed either
    return f"{name}: {err['msg']} (got {shown!r})"
