"""Settings: the original names and defaults, sentinels, and errors that name the variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labbot.config import Settings, load_settings
from labbot.errors import ConfigError


def test_defaults_keep_the_original_names_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set: 48 h expiry, 20 files, a persistent data dir outside /tmp."""
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    settings = load_settings()
    assert settings.FILE_EXPIRATION_HOURS == 48 and settings.MAX_FILES_PER_USER == 20
    assert settings.file_lifetime == timedelta(hours=48)
    assert str(settings.LABBOT_DATA_DIR) == "/home/someone/.local/share/labbot"


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Variables come from the environment, then from .env in the working directory."""
    (tmp_path / ".env").write_text("MAX_FILES_PER_USER=7\nFILE_EXPIRATION_HOURS=0.1\n")
    monkeypatch.setenv("MAX_FILE_SIZE_MB", "2.5")
    settings = Settings()
    assert settings.MAX_FILES_PER_USER == 7
    assert settings.file_lifetime == timedelta(minutes=6)
    assert settings.max_file_bytes == int(2.5 * 1024 * 1024)


def test_empty_values_are_unset_for_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty variable is the default, whatever its type (not a parse error, not "")."""
    for name in ("DISCORD_TOKEN", "OPENAI_API_KEY", "MAX_FILES_PER_USER", "DEV_GUILD_ID"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.DISCORD_TOKEN is None and settings.OPENAI_API_KEY is None
    assert settings.MAX_FILES_PER_USER == 20 and settings.DEV_GUILD_ID is None
    assert not settings.llm_configured


def test_env_example_copied_as_it_is_sets_no_token_and_no_key(tmp_path) -> None:
    """`cp .env.example .env`: DISCORD_TOKEN= and OPENAI_API_KEY= are unset (no Discord login
    with an empty token, no OpenAI without a key)."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())  # the working directory (conftest)
    settings = load_settings()
    assert settings.DISCORD_TOKEN is None and settings.OPENAI_API_KEY is None
    assert not settings.llm_configured


def test_minus_one_means_never() -> None:
    """FILE_EXPIRATION_HOURS=-1 becomes no lifetime at all."""
    assert load_settings(FILE_EXPIRATION_HOURS=-1).file_lifetime is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FILE_EXPIRATION_HOURS", "0"),
        ("FILE_EXPIRATION_HOURS", "-2"),
        ("FILE_EXPIRATION_HOURS", "soon"),
        ("MAX_FILES_PER_USER", "0"),
        ("MAX_FILES_PER_USER", "many"),
        ("MAX_FILE_SIZE_MB", "-1"),
        ("MAX_STORAGE_MB_PER_USER", "0"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_invalid_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """An invalid value fails at start with a message naming the variable and the value."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value) and repr(value) in str(info.value)


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    from labbot.config import Settings

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    example = (repo / ".env.example").read_text()
    missing = [
        name
        for name in Settings.model_fields
        if f"`{name}`" not in readme or f"{name}=" not in example
    ]
    assert missing == []
