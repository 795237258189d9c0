"""Model capabilities as data, and the one boundary where openai's errors become ours."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from labbot.errors import ConfigError, LLMError, LLMRateLimited
from labbot.llm.client import TRANSLATIONS, translate
from labbot.llm.models import ModelCatalog


def sdk_error_classes() -> set[type[openai.OpenAIError]]:
    """Every exception class of the openai SDK (as imported), its subclasses included."""
    found: set[type[openai.OpenAIError]] = set()
    todo = [openai.OpenAIError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return found


def test_every_openai_error_is_mapped_explicitly() -> None:
    """Each exception class the SDK has is named in TRANSLATIONS, none only through a parent
    (fails when the SDK grows one, as httpx's test of httpcore's exceptions does), and every
    name there is a class the SDK has (no dead entries)."""
    classes = sdk_error_classes()
    assert len(classes) > 20
    unmapped = sorted(c.__name__ for c in classes if c.__name__ not in TRANSLATIONS)
    assert unmapped == [], f"openai errors without a translation: {unmapped}"
    assert set(TRANSLATIONS) == {c.__name__ for c in classes}


@pytest.mark.parametrize("cls", sorted(sdk_error_classes(), key=lambda c: c.__name__), ids=str)
def test_every_openai_error_becomes_a_sentence(cls: type[openai.OpenAIError]) -> None:
    """Each becomes an LLMError with a sentence for the user."""
    error = translate(cls.__new__(cls), model="m")
    assert isinstance(error, LLMError) and str(error).endswith((".", "again."))


def test_a_subclass_the_sdk_adds_later_is_translated_as_its_parent() -> None:
    """Until it is listed, a new subclass gets its nearest listed ancestor's translation."""

    class FutureTooManyRequests(openai.RateLimitError):
        pass

    error = translate(FutureTooManyRequests.__new__(FutureTooManyRequests), model="m")
    assert isinstance(error, LLMRateLimited)


@pytest.mark.parametrize(
    ("name", "window", "vision", "role", "reasoning"),
    [
        ("gpt-4o", 128000, True, "system", False),
        ("openai/gpt-4o-mini", 128000, True, "system", False),
        ("gpt-4o-2024-08-06", 128000, True, "system", False),
        ("gpt-4.1", 1047576, True, "system", False),
        ("gpt-5-mini-2025-08-07", 400000, True, "developer", True),
        ("o1-mini", 128000, False, "none", True),
        ("o4-mini", 200000, True, "developer", True),
        ("llama3.1:8b", 128000, False, "system", False),
    ],
)
def test_catalog_lookups(name: str, window: int, vision: bool, role: str, reasoning: bool) -> None:
    """Names match exactly, without provider prefix or date, by prefix, else the defaults."""
    info = ModelCatalog().get(name)
    assert (info.context_window, info.vision, info.system_role, info.reasoning) == (
        window,
        vision,
        role,
        reasoning,
    )


def test_operator_file_adds_and_overrides(tmp_path: Path) -> None:
    """LABBOT_MODELS_FILE adds a model and overrides a field of a built-in one."""
    extra = tmp_path / "models.toml"
    extra.write_text(
        '[models."qwen2.5"]\ncontext_window = 32768\nvision = false\n'
        '[models."gpt-4o"]\nmax_output = 1000\n'
    )
    catalog = ModelCatalog(extra)
    assert catalog.get("qwen2.5:7b").context_window == 32768
    assert catalog.get("gpt-4o").max_output == 1000 and catalog.get("gpt-4o").vision
    assert "qwen2.5" in catalog.names()


def test_bad_model_file_fails_at_start(tmp_path: Path) -> None:
    """An unknown field is refused when the catalog loads, naming the entry."""
    bad = tmp_path / "models.toml"
    bad.write_text('[models."x"]\ncontext_windw = 5\n')
    with pytest.raises(ConfigError, match="'x'"):
        ModelCatalog(bad)
