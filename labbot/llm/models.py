"""Model capabilities as data (models.toml, plus the operator's LABBOT_MODELS_FILE)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from labbot.errors import ConfigError

BUILT_IN = Path(__file__).with_name("models.toml")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What one model accepts; see models.toml for each field's meaning."""

    name: str
    context_window: int
    max_output: int
    vision: bool
    tools: bool
    system_role: Literal["system", "developer", "none"]
    reasoning: bool
    reasoning_effort: str


class ModelCatalog:
    """Looks models up by name, with the built-in table and the operator's overrides."""

    def __init__(self, override: Path | None = None) -> None:
        data = _read(BUILT_IN)
        if override is not None:
            extra = _read(override)
            data["defaults"] = {**data.get("defaults", {}), **extra.get("defaults", {})}
            models = data.setdefault("models", {})
            for name, fields_ in extra.get("models", {}).items():
                models[name] = {**models.get(name, {}), **fields_}
        self._defaults: dict[str, Any] = data.get("defaults", {})
        self._models: dict[str, dict[str, Any]] = data.get("models", {})
        for name in self._models:
            self.get(name)  # validate every entry at start, not at first use

    def names(self) -> list[str]:
        """Every listed model, sorted."""
        return sorted(self._models)

    def get(self, name: str) -> ModelInfo:
        """The capabilities of ``name`` (unknown models get the defaults)."""
        entry = self._lookup(name)
        values = {**self._defaults, **(entry or {}), "name": name}
        known = {f.name for f in fields(ModelInfo)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"Model table entry {name!r} has unknown fields: {sorted(unknown)}.")
        try:
            return ModelInfo(**values)
        except TypeError as exc:
            raise ConfigError(f"Model table entry {name!r} is incomplete: {exc}.") from exc

    def _lookup(self, name: str) -> dict[str, Any] | None:
        candidates = [name, name.rsplit("/", 1)[-1]]
        candidates.append(_DATE_SUFFIX.sub("", candidates[-1]))
        for candidate in candidates:
            if candidate in self._models:
                return self._models[candidate]
        base = candidates[-1]
        # "gpt-4o-mini-tts" → gpt-4o-mini; Ollama tags such as "qwen2.5:7b" → qwen2.5.
        prefixes = [m for m in self._models if base.startswith((m + "-", m + ":"))]
        return self._models[max(prefixes, key=len)] if prefixes else None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read the model table {path}: {exc}.") from exc
