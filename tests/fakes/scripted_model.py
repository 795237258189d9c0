"""An in-memory model client (the ``ModelClient`` protocol) that plays scripted replies, like
Simon Willison's ``llm`` MockModel: no HTTP, no SDK, no server.

    model = ScriptedModel()
    model.enqueue(Reply.tool_call(TOOL_NAME, {"code": "1 + 1"}), Reply.text("Two."))
    engine = Engine(settings, llm=model, ...)
    ...
    assert model.requests[0]["messages"][-1]["content"] == "what is 1 + 1?"

It speaks the same script as the loopback server (``tests.fakes.replies.Reply``) and records
each request as the body the real client would send (model, messages, tools), so a test can
move between the two. Errors are the exceptions the openai SDK raises for the same status, put
through ``labbot.llm.client.translate``: the user reads the same sentence. Replies that only
make sense on the wire (``hang``, ``disconnect``) end as the SDK's timeout and connection
errors, at once. ``tests/llm/test_model_contract.py`` holds it and ``LLMClient`` to one
contract.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from labbot.llm.client import translate
from labbot.llm.models import ModelInfo
from labbot.llm.protocol import Completion, ToolCall, Usage
from tests.fakes.replies import MODELS, Reply, Script, cut_short, error_body, split, usage_for

_REQUEST = httpx2.Request("POST", "http://scripted.invalid/v1/chat/completions")
# The SDK's class for each status (openai._client.AsyncOpenAI._make_status_error).
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


class ScriptedModel(Script):
    """A ``ModelClient`` answering from a queue of ``Reply`` values, then from a handler.

    ``requests`` holds each request's body (``model``, ``messages``, and ``tools`` when the
    model takes tools), copied as JSON when it was made. With nothing queued and no handler,
    a request fails as the loopback server's does (HTTP 500), so a test fails loudly.
    """

    def __init__(self, *, models: tuple[str, ...] = MODELS) -> None:
        super().__init__()
        self.models = models
        self.closed = False
        self._ids = itertools.count(1)

    # -- the ModelClient protocol --------------------------------------------------------------

    async def stream(
        self,
        model: ModelInfo,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[str | Completion]:
        """Play the next reply: its text in pieces, then the Completion (or its error)."""
        body: dict[str, Any] = {"model": model.name, "messages": messages}
        if tools and model.tools:
            body["tools"] = tools
        body = json.loads(json.dumps(body))  # what went out, whatever the caller does next
        async with self._received:
            self.requests.append(body)
            self._received.notify_all()
        reply = await self._next_reply(copy.deepcopy(body)) or Reply.error(
            500, "no scripted reply: the ScriptedModel queue is empty and no handler is set"
        )
        if reply.kind == "error":
            raise translate(_status_error(reply), model=model.name)
        if reply.kind == "hang":
            raise translate(openai.APITimeoutError(_REQUEST), model=model.name)
        if reply.kind == "disconnect":
            # The server's first event is the role alone; each later one is a piece.
            for piece in _pieces(cut_short(reply))[: max(reply.after_chunks - 1, 0)]:
                yield piece
            raise translate(openai.APIConnectionError(request=_REQUEST), model=model.name)
        for piece in _pieces(reply):
            yield piece
        yield self._completion(model, body, reply)

    async def list_models(self) -> list[str] | None:
        """The scripted model names (None when there are none, or the listing is not found);
        a queued listing failure raises what the real client raises."""
        failure = self._listing_failure()
        if failure == 404:
            return None
        if failure is not None:
            raise translate(_status_error(Reply.error(failure)), model="(listing)")
        return list(self.models) or None

    async def close(self) -> None:
        """Nothing to release; remembered so a test can check it was called."""
        self.closed = True

    # -- replies -------------------------------------------------------------------------------

    def _completion(self, model: ModelInfo, body: dict[str, Any], reply: Reply) -> Completion:
        calls = [
            ToolCall(call.call_id or f"call_{next(self._ids):04d}", call.name, call.arguments)
            for call in reply.calls
        ]
        usage = None
        if reply.report_usage:
            counts = usage_for(body, reply)
            usage = Usage(
                input_tokens=counts["prompt_tokens"],
                output_tokens=counts["completion_tokens"],
                cached_tokens=counts["prompt_tokens_details"]["cached_tokens"] or 0,
            )
        return Completion(
            text=reply.content or "",
            tool_calls=calls,
            finish_reason=reply.finish_reason,
            usage=usage,
            model=model.name,
        )


def _pieces(reply: Reply) -> list[str]:
    """The text pieces the real client yields for this reply (the server's content deltas)."""
    return split(reply.content, reply.chunks or 3) if reply.content else []


def _status_error(reply: Reply) -> openai.APIStatusError:
    """The exception the SDK raises when the API answers ``reply.status``."""
    body = error_body(reply.status, reply.message, code=reply.code)
    response = httpx2.Response(reply.status, request=_REQUEST, json=body)
    cls = _STATUS_ERRORS.get(reply.status)
    if cls is None:
        cls = openai.InternalServerError if reply.status >= 500 else openai.APIStatusError
    message = f"Error code: {reply.status} - {body['error']['message']}"
    return cls(message, response=response, body=body["error"])
