"""The fake speaks the Chat Completions protocol well enough for the real openai SDK."""

# Pytest fixtures imported from another module are "redefined" by the test parameters.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_server import FakeOpenAI, Reply, fake_openai  # noqa: F401

MODEL = "gpt-4o-mini"
USER = [{"role": "user", "content": "What is the mean of column A?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_python",
            "description": "Run Python code in the sandbox.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
            },
        },
    }
]


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def tool_calls_from(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """Accumulate streamed tool-call deltas the way a client must: by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return calls


async def test_non_streaming_text(fake_openai: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A plain completion comes back as a chat.completion with message, finish_reason, usage."""
    fake_openai.enqueue(Reply.text("The mean is 4.2.", usage={"prompt_tokens": 30}))

    completion = await client.chat.completions.create(model=MODEL, messages=USER)

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "The mean is 4.2."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 30
    assert completion.usage.total_tokens == 30 + completion.usage.completion_tokens


async def test_streaming_text_reassembles_with_usage_chunk(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Streamed text arrives as several deltas and ends with a choices-less usage chunk."""
    text = "Column A has 10 rows; its mean is 4.2."
    usage = {"prompt_tokens": 120, "completion_tokens": 12, "cached_tokens": 64}
    fake_openai.enqueue(Reply.text(text, usage=usage, chunks=4))

    stream = await client.chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = await collect(stream)

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 4
    assert "".join(pieces) == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (120, 12)
    assert last.usage.total_tokens == 132
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 64
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_streaming_without_include_usage_sends_no_usage(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Without stream_options.include_usage no chunk carries usage, as with the real API."""
    fake_openai.enqueue(Reply.text("hi there"))

    chunks = await collect(
        await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    )

    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_default_usage_grows_with_the_request(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Without scripted usage, prompt_tokens is estimated from the request size."""
    fake_openai.enqueue(Reply.text("a"), Reply.text("b"))
    long_messages = [{"role": "user", "content": "x" * 4000}]

    short = await client.chat.completions.create(model=MODEL, messages=USER)
    long = await client.chat.completions.create(model=MODEL, messages=long_messages)

    assert short.usage is not None and long.usage is not None
    assert 0 < short.usage.prompt_tokens < 100
    assert long.usage.prompt_tokens >= 1000
    assert long.usage.completion_tokens >= 1


async def test_finish_reason_length(fake_openai: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A truncated answer reports finish_reason "length" when streamed."""
    fake_openai.enqueue(Reply.text("The answer is cut", finish_reason="length"))

    chunks = await collect(
        await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    )

    assert chunks[-1].choices[0].finish_reason == "length"


async def test_streamed_tool_call_arguments_reassemble(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A streamed tool call arrives in fragments that join into valid JSON arguments."""
    arguments = {"code": "import pandas as pd\nprint(pd.read_csv('a.csv')['A'].mean())"}
    fake_openai.enqueue(Reply.tool_call("run_python", arguments, call_id="call_abc"))

    stream = await client.chat.completions.create(
        model=MODEL, messages=USER, tools=TOOLS, stream=True
    )
    chunks = await collect(stream)

    fragments = [
        delta.function.arguments
        for c in chunks
        for delta in c.choices[0].delta.tool_calls or []
        if delta.function is not None and delta.function.arguments
    ]
    assert len(fragments) >= 2
    calls = tool_calls_from(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"] == "call_abc"
    assert calls[0]["name"] == "run_python"
    assert json.loads(calls[0]["arguments"]) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_sdk_stream_helper_accumulates_tool_call(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """The SDK's own chat.completions.stream() accumulator rebuilds text plus a tool call."""
    fake_openai.enqueue(
        Reply.tool_call("run_python", {"code": "1 + 1"}, content="Let me compute that.")
    )

    async with client.chat.completions.stream(model=MODEL, messages=USER, tools=TOOLS) as stream:
        final = await stream.get_final_completion()

    message = final.choices[0].message
    assert message.content == "Let me compute that."
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    assert message.tool_calls[0].function.name == "run_python"
    assert json.loads(message.tool_calls[0].function.arguments) == {"code": "1 + 1"}
    assert final.choices[0].finish_reason == "tool_calls"


async def test_two_parallel_tool_calls_streamed(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Parallel calls stream under distinct indices and ids, each with valid arguments."""
    fake_openai.enqueue(Reply.tool_calls([("run_python", {"code": "a = 1"}), ("list_files", "{}")]))

    chunks = await collect(
        await client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, stream=True)
    )

    calls = tool_calls_from(chunks)
    assert sorted(calls) == [0, 1]
    assert [calls[0]["name"], calls[1]["name"]] == ["run_python", "list_files"]
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    assert json.loads(calls[0]["arguments"]) == {"code": "a = 1"}
    assert json.loads(calls[1]["arguments"]) == {}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_two_parallel_tool_calls_non_streaming(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Without streaming, parallel calls land in message.tool_calls with their ids."""
    fake_openai.enqueue(
        Reply.tool_calls([("run_python", {"code": "a = 1"}, "call_1"), ("list_files", {})])
    )

    completion = await client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    first, second = choice.message.tool_calls
    assert first.id == "call_1" and first.type == "function"
    assert json.loads(first.function.arguments) == {"code": "a = 1"}
    assert second.function.name == "list_files" and second.id.startswith("call_")


async def test_rate_limit_raises_with_retry_after(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A 429 with retry-after becomes openai.RateLimitError carrying the header and body."""
    fake_openai.enqueue(Reply.error(429, "Slow down", retry_after=7))

    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=USER)

    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert "Slow down" in str(error)
    assert len(fake_openai.requests) == 1


async def test_rate_limit_is_retried_by_the_sdk(fake_openai: FakeOpenAI) -> None:
    """With max_retries=1 the SDK honours retry-after and gets the next scripted reply."""
    fake_openai.enqueue(Reply.error(429, retry_after=0.01), Reply.text("second time lucky"))

    async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=1) as sdk:
        completion = await sdk.chat.completions.create(model=MODEL, messages=USER)

    assert completion.choices[0].message.content == "second time lucky"
    assert len(fake_openai.requests) == 2
    assert fake_openai.requests[0] == fake_openai.requests[1]
    assert [h["x-stainless-retry-count"] for h in fake_openai.headers] == ["0", "1"]
    assert fake_openai.pending == 0


async def test_server_error(fake_openai: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A scripted 500 becomes openai.InternalServerError with the server_error body."""
    fake_openai.enqueue(Reply.error(500, "boom"))

    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model=MODEL, messages=USER, stream=True)

    assert caught.value.status_code == 500
    assert caught.value.body == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }


async def test_body_over_the_limit_is_answered_413() -> None:
    """A body over max_body_bytes gets a 413 (APIStatusError, not retried by the SDK); the
    server keeps its size, not its contents, and answers the next small request."""
    async with FakeOpenAI(max_body_bytes=50_000) as server:
        server.enqueue(Reply.text("small is fine"))
        big = [{"role": "user", "content": "x" * 60_000}]
        async with server.client(max_retries=2) as sdk:
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.chat.completions.create(model=MODEL, messages=big)
            answer = await sdk.chat.completions.create(model=MODEL, messages=USER)
    assert caught.value.status_code == 413
    assert answer.choices[0].message.content == "small is fine"
    assert len(server.body_sizes) == 2 and server.body_sizes[0] > 60_000
    assert len(server.requests) == 1


async def test_hang_times_out_and_server_still_closes(fake_openai: FakeOpenAI) -> None:
    """A hanging reply trips the client timeout, and the server then shuts down promptly."""
    fake_openai.enqueue(Reply.hang())

    async with AsyncOpenAI(
        base_url=fake_openai.base_url, api_key="test", max_retries=0, timeout=0.3
    ) as sdk:
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(model=MODEL, messages=USER)

    async with asyncio.timeout(3):
        await fake_openai.close()


async def test_close_releases_a_pending_hang(fake_openai: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Closing the server while a request hangs ends that request instead of blocking."""
    fake_openai.enqueue(Reply.hang())
    pending = asyncio.create_task(client.chat.completions.create(model=MODEL, messages=USER))
    async with asyncio.timeout(5):
        await fake_openai.wait_for_requests(1)
        await fake_openai.close()
        with pytest.raises(openai.InternalServerError, match="closed while a hanging reply"):
            await pending


async def test_disconnect_mid_stream_raises_while_iterating(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A connection dropped mid-stream surfaces as an SDK error after the first chunks."""
    fake_openai.enqueue(Reply.disconnect(after_chunks=2))
    received = []

    stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)

    assert len(received) == 2
    assert received[1].choices[0].delta.content


async def test_disconnect_without_streaming_raises(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A truncated non-streamed body is a connection error too."""
    fake_openai.enqueue(Reply.disconnect())

    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=USER)


async def test_requests_and_headers_are_recorded(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Each request body and its headers (Authorization included) are kept in order."""
    fake_openai.enqueue(Reply.text("one"), Reply.text("two"))

    await client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS)
    await collect(
        await client.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    first, second = fake_openai.requests
    assert first["model"] == MODEL
    assert first["messages"] == USER
    assert first["tools"] == TOOLS
    assert "stream" not in first
    assert second["model"] == "gpt-4o"
    assert second["stream"] is True
    assert second["stream_options"] == {"include_usage": True}
    assert [h["authorization"] for h in fake_openai.headers] == ["Bearer test"] * 2


async def test_empty_queue_answers_500(fake_openai: FakeOpenAI, client: AsyncOpenAI) -> None:
    """With nothing scripted the server fails loudly with 500 "no scripted reply"."""
    with pytest.raises(openai.InternalServerError, match="no scripted reply"):
        await client.chat.completions.create(model=MODEL, messages=USER)


async def test_respond_with_handler_sees_the_request(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A handler scripts replies from the request, after the queue is used up."""

    async def handler(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return Reply.text(f"The tool said {last['content']}")
        return Reply.tool_call("run_python", {"code": last["content"]}, call_id="call_h")

    fake_openai.enqueue(Reply.text("queued first"))
    fake_openai.respond_with(handler)

    queued = await client.chat.completions.create(model=MODEL, messages=USER)
    call = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "2 * 21"}], tools=TOOLS
    )
    tool_calls = call.choices[0].message.tool_calls
    assert tool_calls is not None
    answer = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "2 * 21"},
            call.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_calls[0].id, "content": "42"},
        ],
    )

    assert queued.choices[0].message.content == "queued first"
    assert json.loads(tool_calls[0].function.arguments) == {"code": "2 * 21"}
    assert answer.choices[0].message.content == "The tool said 42"
    assert fake_openai.requests[2]["messages"][1]["tool_calls"][0]["id"] == "call_h"


async def test_handler_error_is_reported_as_500(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A handler that raises turns into a 500 naming the exception, not a hung test."""

    def handler(body: dict[str, Any]) -> Reply:
        raise KeyError("oops")

    fake_openai.respond_with(handler)

    with pytest.raises(openai.InternalServerError, match="KeyError"):
        await client.chat.completions.create(model=MODEL, messages=USER)


async def test_models_endpoint(client: AsyncOpenAI) -> None:
    """GET /v1/models lists a few model ids."""
    models = [model.id async for model in client.models.list()]

    assert "gpt-4o-mini" in models and len(models) >= 3


async def test_api_key_is_enforced_when_set() -> None:
    """With api_key set, a wrong key gets the real API's 401 invalid_api_key (listings too)."""
    async with FakeOpenAI(api_key="sk-right") as server:
        server.enqueue(Reply.text("welcome"))
        async with server.client(api_key="sk-wrong") as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                await wrong.chat.completions.create(model=MODEL, messages=USER)
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()
        async with server.client() as right:
            completion = await right.chat.completions.create(model=MODEL, messages=USER)

    assert caught.value.code == "invalid_api_key"
    assert completion.choices[0].message.content == "welcome"


async def test_missing_model_is_a_bad_request(fake_openai: FakeOpenAI) -> None:
    """A request without a model is refused with 400, like the real API."""
    fake_openai.enqueue(Reply.text("unused"))
    async with fake_openai.client() as sdk:
        with pytest.raises(openai.BadRequestError, match="model"):
            await sdk.chat.completions.create(model="", messages=USER)

    assert fake_openai.pending == 1


def test_reply_rejects_unknown_usage_keys() -> None:
    """A typo in scripted usage fails when the reply is built."""
    with pytest.raises(ValueError, match="prompt_token"):
        Reply.text("x", usage={"prompt_token": 3})
