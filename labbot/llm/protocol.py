"""The model-client seam: what the engine needs of a chat model, and the values it gets back.

``labbot.llm.client.LLMClient`` (the openai SDK against any OpenAI-compatible endpoint) is the
one implementation in labbot; ``tests/fakes/scripted_model.py`` is an in-memory one. Both pass
``tests/llm/test_model_contract.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from labbot.llm.models import ModelInfo


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for."""

    id: str
    name: str
    arguments: str  # as the model sent them: check with tools.read_call before use


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the API reported for one request (None fields: it reported nothing)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reported: bool = True


@dataclass
class Completion:
    """A finished streamed answer: its text, tool calls, finish reason and usage."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""
    duration_ms: float = 0.0


class ModelClient(Protocol):
    """A chat model with tools and streaming, as the engine uses it.

    Every failure of the model API is raised as an ``LLMError`` (``str()`` is a sentence for
    the user, never naming the endpoint), always one of these:

    - ``LLMAuthError``: the credentials were refused (HTTP 401, 403).
    - ``LLMRateLimited``: rate limited or out of quota (HTTP 429).
    - ``LLMRequestTooLarge``: the request body was refused as too large (HTTP 413).
    - ``LLMUnavailable``: the API failed, timed out, could not be reached or dropped the
      answer midway (HTTP 5xx and other statuses, connection errors).
    - ``LLMError`` itself: the API refused this request (HTTP 400, 404: unknown model,
      context too long).
    """

    def stream(
        self,
        model: ModelInfo,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[str | Completion]:
        """Ask for one answer: its text pieces (``str``) as they arrive, then exactly one
        ``Completion`` (the whole text, the tool calls in order, the finish reason, and the
        usage, or None when the API reported none). ``tools`` are sent only to a model whose
        ``ModelInfo.tools`` allows them.

        :raises LLMError: one of the subclasses above; text already yielded stays yielded.
        """
        ...

    async def list_models(self) -> list[str] | None:
        """The model ids the provider lists; None when it lists none or the listing fails
        (never raises)."""
        ...

    async def close(self) -> None:
        """Release connections; the client is not used afterwards."""
        ...
