"""A loopback server that speaks the OpenAI Chat Completions protocol, scripted per test.

The product's LLM client is exercised through the real ``openai`` SDK pointed at this server::

    async with FakeOpenAI() as server:
        server.enqueue(Reply.text("hi"), Reply.tool_call("run_code", {"code": "1+1"}))
        client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        assert server.requests[0]["model"] == "gpt-4o-mini"

Replies are served in the order they were enqueued; when the queue is empty the handler given to
``respond_with`` decides; with neither, the server answers 500 "no scripted reply" so a test fails
loudly instead of hanging. Streaming requests (``"stream": true``) get SSE ``chat.completion.chunk``
events ending with ``data: [DONE]``; others get one ``chat.completion`` object.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from tests.fakes.replies import MODELS, Reply, Script, cut_short, error_body, split, usage_for

__all__ = ["FakeOpenAI", "Reply", "fake_openai"]

MIB = 1024 * 1024


class FakeOpenAI(Script):
    """``async with FakeOpenAI() as server: server.enqueue(Reply.text("hi")); ... server.requests``

    ``requests`` holds every JSON body POSTed to ``/v1/chat/completions`` (in order, including
    retries), ``body_sizes`` their sizes in bytes and ``headers`` their headers with lower-cased
    names. With ``api_key`` set, requests (listings too) without ``Authorization: Bearer
    <api_key>`` get the real API's 401. A body over ``max_body_bytes`` is read to its end and
    answered 413, as a real provider's front does; it is counted in ``body_sizes`` but not kept
    in ``requests``. ``prefix`` serves the API under a longer path (``/gw/<token>`` + ``/v1``),
    as a gateway does.
    """

    def __init__(
        self, *, api_key: str | None = None, max_body_bytes: int = 64 * MIB, prefix: str = ""
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.prefix = prefix.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self.base_url = ""
        self.body_sizes: list[int] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._ids = 0

    def client(self, **kwargs: Any) -> AsyncOpenAI:
        """A real SDK client for this server (``api_key="test"``, ``max_retries=0`` by default)."""
        kwargs.setdefault("api_key", self.api_key or "test")
        kwargs.setdefault("max_retries", 0)
        return AsyncOpenAI(base_url=self.base_url, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=1 << 40)  # the limit is ours: max_body_bytes
        app.router.add_post(f"{self.prefix}/v1/chat/completions", self._chat)
        app.router.add_get(f"{self.prefix}/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}{self.prefix}/v1"

    async def close(self) -> None:
        """Stop serving; replies that hang are released first so shutdown is prompt."""
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:04d}{secrets.token_hex(10)}"

    def _error(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = error_body(status, message, code=code, param=param)
        all_headers = {"x-request-id": self._new_id("req_"), **(headers or {})}
        return web.json_response(body, status=status, headers=all_headers)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error(
            404, f"Invalid URL ({request.method} {request.path})", code="unknown_url"
        )

    async def _models(self, request: web.Request) -> web.Response:
        failure = self._listing_failure()
        if self.api_key is not None and not self._authorized(request):
            return self._error(401)  # the real API refuses a wrong key here too
        if failure is not None:
            return self._error(failure)
        created = 1_700_000_000
        data = [
            {"id": model, "object": "model", "created": created, "owned_by": "system"}
            for model in MODELS
        ]
        return web.json_response({"object": "list", "data": data})

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The whole body, or None when it is over ``max_body_bytes`` (drained, not kept)."""
        parts, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size <= self.max_body_bytes:
                parts.append(chunk)
            else:
                parts.clear()
        self.body_sizes.append(size)
        return b"".join(parts) if size <= self.max_body_bytes else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await self._read_body(request)
        if raw is None:
            return self._error(413, code="request_too_large")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON object.")
        async with self._received:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            self._received.notify_all()

        if self.api_key is not None and not self._authorized(request):
            return self._error(401)
        if not body.get("model"):
            return self._error(400, "you must provide a model parameter")
        if not isinstance(body.get("messages"), list):
            return self._error(
                400,
                "Missing required parameter: 'messages'.",
                code="missing_required_parameter",
                param="messages",
            )

        try:
            reply = await self._next_reply(body)
        except Exception as exc:  # the test's handler failed: say so in the response
            return self._error(500, f"fake OpenAI handler raised {exc!r}")
        if reply is None:
            return self._error(
                500, "no scripted reply: the FakeOpenAI queue is empty and no handler is set"
            )

        stream = bool(body.get("stream"))
        if reply.kind == "error":
            headers = {}
            if reply.retry_after is not None:
                headers["retry-after"] = _number(reply.retry_after)
            return self._error(reply.status, reply.message, code=reply.code, headers=headers)
        if reply.kind == "hang":
            await self._closing.wait()
            return self._error(503, "FakeOpenAI closed while a hanging reply was pending")
        if reply.kind == "disconnect":
            return await self._disconnect(request, body, reply, stream)
        if stream:
            return await self._stream(request, body, reply)
        return web.json_response(
            self._completion(body, reply), headers={"x-request-id": self._new_id("req_")}
        )

    # -- bodies --------------------------------------------------------------------------------

    def _call_ids(self, reply: Reply) -> list[str]:
        return [call.call_id or self._new_id("call_") for call in reply.calls]

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content,
            "refusal": None,
            "annotations": [],
        }
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call, call_id in zip(reply.calls, self._call_ids(reply), strict=True)
            ]
        return {
            "id": self._new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": usage_for(body, reply) if reply.report_usage else None,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
        }

    def _chunks(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        """Every SSE event of a streamed reply, usage chunk included when asked for."""
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = asked and reply.report_usage
        chunk_id = self._new_id("chatcmpl-")
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": "fp_fake0001",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                event["usage"] = None
            return event

        deltas: list[dict[str, Any]] = []
        if reply.content:
            deltas.append({"role": "assistant", "content": "", "refusal": None})
            deltas.extend({"content": piece} for piece in split(reply.content, reply.chunks or 3))
        for index, (call, call_id) in enumerate(
            zip(reply.calls, self._call_ids(reply), strict=True)
        ):
            head = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if not deltas:  # like the real API: the first call rides on the role delta
                deltas.append(
                    {"role": "assistant", "content": None, "refusal": None, "tool_calls": [head]}
                )
            else:
                deltas.append({"tool_calls": [head]})
            deltas.extend(
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in split(call.arguments, 3)
                if piece
            )
        if not deltas:  # an empty text reply
            deltas.append({"role": "assistant", "content": "", "refusal": None})

        events = [chunk(delta) for delta in deltas]
        events.append(chunk({}, reply.finish_reason))
        if include_usage:
            events.append({**chunk({}), "choices": [], "usage": usage_for(body, reply)})
        return events

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = await self._start_sse(request)
        try:
            for event in self._chunks(body, reply):
                await response.write(_sse(event))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:  # the client went away mid-stream; nothing left to do
            pass
        return response

    async def _start_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": self._new_id("req_"),
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    async def _disconnect(
        self, request: web.Request, body: dict[str, Any], reply: Reply, stream: bool
    ) -> web.StreamResponse:
        partial = cut_short(reply)
        if stream:
            response = await self._start_sse(request)
            for event in self._chunks(body, partial)[: reply.after_chunks]:
                await response.write(_sse(event))
        else:
            payload = json.dumps(self._completion(body, partial)).encode()
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
        # close() flushes what was written, then ends the connection without the terminating
        # chunk (or before Content-Length bytes): the client sees a truncated body.
        if request.transport is not None:
            request.transport.close()
        return response


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A started FakeOpenAI, closed after the test."""
    async with FakeOpenAI() as server:
        yield server
