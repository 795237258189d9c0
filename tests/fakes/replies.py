"""The script both model fakes play: ``Reply`` (text, tool calls, usage, errors, hangs and
dropped connections), and what the real API would send for it. Served over HTTP by
``openai_server.FakeOpenAI`` and in memory by ``scripted_model.ScriptedModel``."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini")

_USAGE_KEYS = {
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
}

# What the real API sends by default for each status (type, code, message).
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", None, "You are not allowed to sample from this model."),
    413: ("invalid_request_error", None, "Request too large: the body is over the size limit."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass(frozen=True)
class _Call:
    name: str
    arguments: str
    call_id: str | None


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the class methods, not the constructor."""

    kind: Literal["message", "error", "hang", "disconnect"]
    content: str | None = None
    calls: tuple[_Call, ...] = ()
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None
    chunks: int | None = None
    status: int = 200
    message: str | None = None
    retry_after: float | None = None
    code: str | None = None
    after_chunks: int = 1
    report_usage: bool = True

    def __post_init__(self) -> None:
        if self.usage is not None:
            unknown = set(self.usage) - _USAGE_KEYS
            if unknown:
                raise ValueError(f"unknown usage keys {sorted(unknown)}; use {sorted(_USAGE_KEYS)}")
        if self.chunks is not None and self.chunks < 1:
            raise ValueError("chunks must be at least 1")

    @classmethod
    def text(
        cls,
        content: str,
        *,
        usage: dict[str, Any] | None = None,
        finish_reason: str = "stop",
        chunks: int | None = None,
        report_usage: bool = True,
    ) -> Reply:
        """An assistant message; streamed as ``chunks`` content deltas (default ~3).
        ``report_usage=False``: no usage is sent, as some local servers do."""
        return cls(
            "message",
            content=content,
            usage=usage,
            finish_reason=finish_reason,
            chunks=chunks,
            report_usage=report_usage,
        )

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        call_id: str | None = None,
        content: str | None = None,
        usage: dict[str, Any] | None = None,
        report_usage: bool = True,
    ) -> Reply:
        """One function call (``finish_reason="tool_calls"``); a str is sent verbatim, even if
        it is not valid JSON."""
        call = _Call(name, _arguments(arguments), call_id)
        return cls(
            "message",
            content=content,
            calls=(call,),
            finish_reason="tool_calls",
            usage=usage,
            report_usage=report_usage,
        )

    @classmethod
    def tool_calls(
        cls,
        calls: Sequence[tuple[str, dict[str, Any] | str] | tuple[str, dict[str, Any] | str, str]],
        *,
        usage: dict[str, Any] | None = None,
        report_usage: bool = True,
    ) -> Reply:
        """Several parallel calls: ``(name, arguments)`` or ``(name, arguments, call_id)``."""
        if not calls:
            raise ValueError("tool_calls needs at least one call")
        built = []
        for name, arguments, *call_id in calls:
            built.append(_Call(name, _arguments(arguments), call_id[0] if call_id else None))
        return cls(
            "message",
            calls=tuple(built),
            finish_reason="tool_calls",
            usage=usage,
            report_usage=report_usage,
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> Reply:
        """An HTTP error with an OpenAI ``{"error": {...}}`` body (and ``retry-after`` if set)."""
        if status < 400:
            raise ValueError("error replies need a 4xx/5xx status")
        return cls("error", status=status, message=message, retry_after=retry_after, code=code)

    @classmethod
    def hang(cls) -> Reply:
        """Accept the request and never answer (until the server closes)."""
        return cls("hang")

    @classmethod
    def disconnect(cls, after_chunks: int = 1) -> Reply:
        """Start answering, then drop the connection: after ``after_chunks`` SSE events when
        streaming, halfway through the JSON body otherwise."""
        if after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")
        return cls("disconnect", after_chunks=after_chunks)


Handler = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]


class Script:
    """The replies a model fake plays: queued ones in order, then the handler's; ``requests``
    holds the request bodies it was asked, in order."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[Reply] = deque()
        self._handler: Handler | None = None
        self._received = asyncio.Condition()
        self.model_listings = 0  # model listings asked for
        self._listing_failures: deque[int] = deque()

    def enqueue(self, *replies: Reply) -> None:
        """Append replies; each request consumes the oldest one."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"expected Reply, got {type(reply).__name__}")
        self._queue.extend(replies)

    def fail_listings(self, *statuses: int) -> None:
        """Fail the next model listings with these HTTP statuses, one each, in order."""
        self._listing_failures.extend(statuses)

    def _listing_failure(self) -> int | None:
        """Count a listing; the status it fails with, if one is queued."""
        self.model_listings += 1
        return self._listing_failures.popleft() if self._listing_failures else None

    def respond_with(self, handler: Handler | None) -> None:
        """Decide replies from the request body once the queue is empty (``None`` removes it)."""
        self._handler = handler

    @property
    def pending(self) -> int:
        """How many enqueued replies have not been served yet."""
        return len(self._queue)

    async def wait_for_requests(self, count: int = 1) -> None:
        """Return once at least ``count`` requests have arrived (wrap in a timeout)."""
        async with self._received:
            await self._received.wait_for(lambda: len(self.requests) >= count)

    async def _next_reply(self, body: dict[str, Any]) -> Reply | None:
        """The next queued reply, else the handler's, else None."""
        if self._queue:
            return self._queue.popleft()
        if self._handler is None:
            return None
        result = self._handler(body)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Reply):
            raise TypeError(f"respond_with handler returned {type(result).__name__}, not Reply")
        return result


def cut_short(reply: Reply) -> Reply:
    """The answer a ``disconnect`` reply starts to send before the connection drops."""
    return Reply.text(
        "This answer is cut short because the connection drops before it ends.",
        chunks=max(3, reply.after_chunks + 2),
    )


def error_body(
    status: int, message: str | None = None, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The ``{"error": {...}}`` body the real API sends with ``status``."""
    default_type, default_code, default_message = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    return {
        "error": {
            "message": message if message is not None else default_message,
            "type": default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def usage_for(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The usage the API reports for ``reply`` to ``body``: as scripted, else estimated from
    the sizes (about four characters a token)."""
    prompt_chars = len(json.dumps(body.get("messages", [])))
    if body.get("tools"):
        prompt_chars += len(json.dumps(body["tools"]))
    completion_chars = len(reply.content or "") + sum(
        len(c.name) + len(c.arguments) for c in reply.calls
    )
    given = dict(reply.usage or {})
    prompt = given.get("prompt_tokens", max(1, prompt_chars // 4))
    completion = given.get("completion_tokens", max(1, completion_chars // 4))
    prompt_details = {"cached_tokens": 0, "audio_tokens": 0}
    prompt_details.update(given.get("prompt_tokens_details") or {})
    if "cached_tokens" in given:
        prompt_details["cached_tokens"] = given["cached_tokens"]
    completion_details = {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }
    completion_details.update(given.get("completion_tokens_details") or {})
    if "reasoning_tokens" in given:
        completion_details["reasoning_tokens"] = given["reasoning_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": given.get("total_tokens", prompt + completion),
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": completion_details,
    }


def _arguments(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def split(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` nearly equal parts (fewer if the text is shorter)."""
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    parts, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts
