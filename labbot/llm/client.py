"""Chat Completions with tools and streaming, through the openai SDK, against any
OpenAI-compatible endpoint (OpenAI, OpenRouter, Ollama, vLLM, LM Studio)."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from labbot.config import Settings
from labbot.errors import (
    LLMAuthError,
    LLMError,
    LLMRateLimited,
    LLMRequestTooLarge,
    LLMUnavailable,
)
from labbot.llm.models import ModelInfo
from labbot.llm.protocol import Completion, ToolCall, Usage
from labbot.logs import mask_url

log = logging.getLogger(__name__)


# A scheme is at most 64 characters: an unbounded run made every word start rescan the rest.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]{0,63}://\S+", re.IGNORECASE)
MAX_DETAIL = 300  # characters of a provider's refusal shown to the user
MAX_LISTED_MODELS = 2000


# Path segments of a base URL that name no one (every provider has them): left in texts.
GENERIC_SEGMENTS = frozenset(
    "v1 v2 v3 v4 api openai chat completions models deployments projects engines inference"
    " llm proxy gateway compat".split()
)


def endpoint_secrets(base_url: str, api_key: str | None) -> tuple[str, ...]:
    """What of the endpoint must never reach a user: userinfo, host, path (its own segments,
    such as a token or an account id in a gateway's route), query values, the key."""
    parts = urlsplit(base_url)
    found = [base_url, parts.netloc, parts.hostname or "", api_key or ""]
    with contextlib.suppress(ValueError):
        found += [parts.username or "", parts.password or "", str(parts.port or "")]
    segments = [s for s in parts.path.split("/") if s and s.lower() not in GENERIC_SEGMENTS]
    if segments:
        found += [parts.path.rstrip("/"), *segments]
    found += [value for _, value in parse_qsl(parts.query) if value]
    return tuple(sorted({f for f in found if len(f) >= 3}, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A provider's message made fit for a user: no URLs and none of the endpoint's secrets."""
    text = _URL.sub("[address]", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


Translation = Callable[[openai.OpenAIError, str, tuple[str, ...]], LLMError]


def _credentials(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    return LLMAuthError(
        "The model API refused our credentials.",
        hint="The operator should check OPENAI_API_KEY.",
    )


def _rate_limited(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    body = getattr(exc, "body", None) or {}
    code = body.get("code") if isinstance(body, dict) else None
    if code == "insufficient_quota":
        return LLMRateLimited(
            "The model API's quota is used up.",
            hint="The operator should check the account's billing.",
        )
    return LLMRateLimited("The model API is busy (rate limited).", hint="Try again in a minute.")


def _not_found(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    return LLMError(
        f"The model {model!r} was not found at the model API.",
        hint="Pick another model (/model) or check DEFAULT_MODEL.",
    )


def _refused(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    text = scrub(str(getattr(exc, "message", exc)), secrets)
    if "context" in text and ("length" in text or "window" in text):
        return LLMError(
            "The conversation is too long for this model.",
            hint="Start a fresh conversation or reset this one.",
        )
    detail = f": {text[:MAX_DETAIL].rstrip('.')}" if text else ""
    return LLMError(f"The model API refused the request{detail}.")


def _timed_out(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    return LLMUnavailable("The model API did not answer in time.", hint="Try again.")


def _unreachable(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    return LLMUnavailable(
        "The model API cannot be reached.",
        hint="Try again later; the operator should check OPENAI_BASE_URL.",
    )


def _status(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    status_code = getattr(exc, "status_code", None)
    if status_code == 413:
        return LLMRequestTooLarge(
            "The model API refused the request as too large (HTTP 413).",
            hint="Reset the conversation or send fewer images at once.",
        )
    return LLMUnavailable(
        f"The model API failed (HTTP {status_code or 'error'}).", hint="Try again in a moment."
    )


def _failed_midway(exc: openai.OpenAIError, model: str, secrets: tuple[str, ...]) -> LLMError:
    return LLMUnavailable("The model API failed mid-answer.", hint="Try again.")


# Every exception class of the openai SDK, by name, each mapped on purpose (a test fails when
# the SDK grows one that is not here). A subclass the SDK adds later is translated as its
# nearest listed ancestor until it is listed.
TRANSLATIONS: dict[str, Translation] = {
    "AuthenticationError": _credentials,  # 401
    "OAuthError": _credentials,
    "PermissionDeniedError": _credentials,  # 403
    "SubjectTokenProviderError": _credentials,  # workload identity could not get a token
    "RateLimitError": _rate_limited,  # 429
    "NotFoundError": _not_found,  # 404
    "BadRequestError": _refused,  # 400
    "ConflictError": _status,  # 409
    "UnprocessableEntityError": _status,  # 422
    "InternalServerError": _status,  # >= 500
    "APIStatusError": _status,  # any other status (413 among them)
    "APITimeoutError": _timed_out,
    "APIConnectionError": _unreachable,  # also a connection dropped mid-stream
    "APIResponseValidationError": _failed_midway,  # an answer that does not parse
    "APIError": _failed_midway,  # an error event in the stream
    "OpenAIError": _failed_midway,  # the SDK's own checks (client options, providers)
    # Raised only by parts of the SDK labbot does not use (parse helpers, the realtime
    # websocket, Azure, the module-level client, pre-1.0 names, a response read twice).
    "LengthFinishReasonError": _failed_midway,
    "ContentFilterFinishReasonError": _failed_midway,
    "WebSocketConnectionClosedError": _failed_midway,
    "WebSocketQueueFullError": _failed_midway,
    "MutuallyExclusiveAuthError": _failed_midway,
    "_AmbiguousModuleClientUsageError": _failed_midway,
    "APIRemovedInV1": _failed_midway,
    "StreamAlreadyConsumed": _failed_midway,
}


def translate(exc: openai.OpenAIError, *, model: str, secrets: tuple[str, ...] = ()) -> LLMError:
    """The one place openai's errors become labbot's, each with what the user can do. The
    texts never name the endpoint (its URL can hold credentials); the log does, masked."""
    for cls in type(exc).__mro__:
        translation = TRANSLATIONS.get(cls.__name__)
        if translation is not None and issubclass(cls, openai.OpenAIError):
            return translation(exc, model, secrets)
    raise TypeError(f"not an openai error: {type(exc).__name__}")


class LLMClient:
    """An async chat client; ``stream`` yields text as it arrives and ends with a Completion.

    client = LLMClient(settings)
    async for piece in client.stream(model_info, messages, tools=TOOLS):
        ...  # str pieces, then one Completion
    """

    def __init__(self, settings: Settings) -> None:
        key = settings.OPENAI_API_KEY.get_secret_value() if settings.OPENAI_API_KEY else None
        base_url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
        self.endpoint = mask_url(base_url)  # for the log only
        self._secrets = endpoint_secrets(base_url, key)
        self.max_output = settings.MAX_OUTPUT_TOKENS
        # The SDK appends paths to the base URL as text, so a query string in it ("?api-key=",
        # "?api-version=") would swallow them: it goes with every request as a query instead.
        parts = urlsplit(base_url)
        # The SDK retries 408/409/429/5xx and connection errors with backoff, honouring
        # Retry-After; we only set how often.
        self._client = openai.AsyncOpenAI(
            api_key=key or "not-needed",
            base_url=urlunsplit(parts._replace(query="", fragment="")),
            default_query=dict(parse_qsl(parts.query)) or None,
            timeout=settings.LLM_TIMEOUT,
            max_retries=settings.LLM_MAX_RETRIES,
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    def _failed(self, exc: openai.OpenAIError, model: str) -> LLMError:
        """Log the failure with where it happened (masked); the user gets a plain sentence."""
        log.warning(
            "llm.error kind=%s model=%s status=%s endpoint=%s",
            type(exc).__name__,
            model,
            getattr(exc, "status_code", None),
            self.endpoint,
        )
        return translate(exc, model=model, secrets=self._secrets)

    async def list_models(self) -> list[str] | None:
        """The model ids the provider lists (GET /models); None when it lists none (or has no
        such endpoint: 404). Raises LLMError when the listing fails otherwise."""
        names: list[str] = []
        try:
            async for entry in self._client.models.list():
                names.append(entry.id)
                if len(names) >= MAX_LISTED_MODELS:
                    break
        except openai.NotFoundError as exc:
            self._failed(exc, "(listing)")
            return None
        except openai.OpenAIError as exc:
            raise self._failed(exc, "(listing)") from exc
        log.info("llm.models_listed count=%d endpoint=%s", len(names), self.endpoint)
        return names or None

    def _params(self, model: ModelInfo, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model.name,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        limit = min(self.max_output, model.max_output)
        if model.reasoning:
            params["max_completion_tokens"] = limit
            if model.reasoning_effort:
                params["reasoning_effort"] = model.reasoning_effort
        else:
            params["max_tokens"] = limit
        if tools and model.tools:
            params["tools"] = tools
        return params

    async def stream(
        self,
        model: ModelInfo,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[str | Completion]:
        """Stream one answer: text pieces (str) as they come, then the Completion."""
        started = time.perf_counter()
        result = Completion(model=model.name)
        calls: dict[int, dict[str, str]] = {}
        try:
            response: Any = await self._client.chat.completions.create(
                messages=cast(Any, messages), **self._params(model, tools)
            )  # a stream: _params asks for one
            async for chunk in response:
                if chunk.usage is not None:
                    details = chunk.usage.prompt_tokens_details
                    result.usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens,
                        output_tokens=chunk.usage.completion_tokens,
                        cached_tokens=(details.cached_tokens or 0) if details else 0,
                    )
                if chunk.model:
                    result.model = chunk.model
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        result.text += delta.content
                        yield delta.content
                    for part in delta.tool_calls or []:
                        slot = calls.setdefault(part.index, {"id": "", "name": "", "args": ""})
                        slot["id"] = part.id or slot["id"]
                        if part.function is not None:
                            slot["name"] += part.function.name or ""
                            slot["args"] += part.function.arguments or ""
                    if choice.finish_reason:
                        result.finish_reason = choice.finish_reason
        except openai.OpenAIError as exc:
            raise self._failed(exc, model.name) from exc
        result.tool_calls = [
            ToolCall(c["id"] or f"call_{i}", c["name"], c["args"]) for i, c in sorted(calls.items())
        ]
        result.duration_ms = (time.perf_counter() - started) * 1000
        log.info(
            "llm.request model=%s ms=%.0f finish=%s tool_calls=%d",
            model.name,
            result.duration_ms,
            result.finish_reason,
            len(result.tool_calls),
        )
        yield result
