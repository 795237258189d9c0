"""The ModelClient contract: LLMClient (the real openai SDK against the loopback API) and
ScriptedModel (in memory) stream, assemble tool calls, report usage and fail alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labbot.errors import LLMAuthError, LLMError, LLMRateLimited, LLMRequestTooLarge, LLMUnavailable
from labbot.llm.client import LLMClient
from labbot.llm.models import ModelCatalog, ModelInfo
from labbot.llm.protocol import Completion, ModelClient, ToolCall, Usage
from labbot.llm.tools import TOOL_NAME, tool_definition
from tests.conftest import model_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import MODELS, Reply
from tests.fakes.scripted_model import ScriptedModel

MINI = ModelCatalog().get("gpt-4o-mini")
HELLO = [{"role": "user", "content": "hello"}]


@dataclass
class Harness:
    client: ModelClient
    script: FakeOpenAI | ScriptedModel  # enqueue(...) and requests


@pytest.fixture(params=["sdk", "scripted"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "scripted":
        model = ScriptedModel()
        yield Harness(model, model)
        await model.close()
        return
    async with FakeOpenAI() as api:
        client = LLMClient(model_settings(tmp_path / "data", api.base_url, LLM_TIMEOUT=1.0))
        try:
            yield Harness(client, api)
        finally:
            await client.close()


async def answer(
    harness: Harness, *replies: Reply, model: ModelInfo = MINI, **kwargs: Any
) -> tuple[list[str], Completion]:
    """Script the replies, stream one answer: its text pieces and its Completion."""
    harness.script.enqueue(*replies)
    items = [item async for item in harness.client.stream(model, HELLO, **kwargs)]
    *pieces, completion = items
    assert all(isinstance(piece, str) for piece in pieces), items
    assert isinstance(completion, Completion), items
    return pieces, completion


async def test_text_streams_in_pieces_then_one_completion(harness: Harness) -> None:
    pieces, completion = await answer(harness, Reply.text("Hello there, world.", chunks=3))
    assert pieces == ["Hello t", "here, ", "world."]
    assert (completion.text, completion.finish_reason, completion.tool_calls) == (
        "Hello there, world.",
        "stop",
        [],
    )
    assert completion.model == "gpt-4o-mini"
    (sent,) = harness.script.requests
    assert (sent["model"], sent["messages"]) == ("gpt-4o-mini", HELLO)
    assert "tools" not in sent


async def test_tool_calls_are_assembled_in_order(harness: Harness) -> None:
    calls = [(TOOL_NAME, {"code": "1 + 1"}, "call_a"), (TOOL_NAME, '{"code": "cut', "call_b")]
    tools = [tool_definition()]
    pieces, completion = await answer(harness, Reply.tool_calls(calls), tools=tools)
    assert pieces == [] and completion.finish_reason == "tool_calls"
    assert completion.tool_calls == [
        ToolCall("call_a", TOOL_NAME, '{"code": "1 + 1"}'),
        ToolCall("call_b", TOOL_NAME, '{"code": "cut'),
    ]
    assert harness.script.requests[0]["tools"] == tools


async def test_calls_without_ids_get_distinct_ones(harness: Harness) -> None:
    reply = Reply.tool_calls([(TOOL_NAME, {"code": "1"}), (TOOL_NAME, {"code": "2"})])
    _, completion = await answer(harness, reply, tools=[tool_definition()])
    ids = [call.id for call in completion.tool_calls]
    assert len(set(ids)) == 2 and all(ids)


async def test_a_model_without_tools_is_sent_none(harness: Harness) -> None:
    no_tools = ModelCatalog().get("o1-mini")
    assert not no_tools.tools
    await answer(harness, Reply.text("ok"), model=no_tools, tools=[tool_definition()])
    assert "tools" not in harness.script.requests[0]


async def test_usage_is_reported_as_counted(harness: Harness) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "cached_tokens": 200}
    _, completion = await answer(harness, Reply.text("counted", usage=usage))
    assert completion.usage == Usage(input_tokens=1000, output_tokens=100, cached_tokens=200)


async def test_usage_is_none_when_the_api_reports_none(harness: Harness) -> None:
    _, completion = await answer(harness, Reply.text("uncounted", report_usage=False))
    assert completion.usage is None and completion.text == "uncounted"


ERRORS = {
    "401": (Reply.error(401), LLMAuthError, "The model API refused our credentials."),
    "403": (Reply.error(403), LLMAuthError, "The model API refused our credentials."),
    "429": (Reply.error(429, retry_after=0), LLMRateLimited, "(rate limited)"),
    "429 quota": (
        Reply.error(429, "You exceeded your quota.", code="insufficient_quota"),
        LLMRateLimited,
        "quota is used up",
    ),
    "413": (Reply.error(413), LLMRequestTooLarge, "too large (HTTP 413)"),
    "500": (Reply.error(500), LLMUnavailable, "The model API failed (HTTP 500)."),
    "503": (Reply.error(503), LLMUnavailable, "The model API failed (HTTP 503)."),
    "422": (Reply.error(422), LLMUnavailable, "The model API failed (HTTP 422)."),
    "404": (Reply.error(404), LLMError, "The model 'gpt-4o-mini' was not found"),
    "400": (
        Reply.error(400, "Odd parameter."),
        LLMError,
        "The model API refused the request: Error code: 400 - Odd parameter.",
    ),
    "400 context": (
        Reply.error(400, "This model's maximum context length is 128000 tokens."),
        LLMError,
        "The conversation is too long for this model.",
    ),
    "timeout": (Reply.hang(), LLMUnavailable, "did not answer in time"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
async def test_failures_are_the_same_llm_errors(harness: Harness, case: str) -> None:
    reply, expected, text = ERRORS[case]
    harness.script.enqueue(reply)
    with pytest.raises(LLMError) as caught:
        async for _ in harness.client.stream(MINI, HELLO):
            pass
    assert type(caught.value) is expected
    assert text in str(caught.value)


async def test_a_dropped_answer_keeps_its_pieces_then_fails(harness: Harness) -> None:
    harness.script.enqueue(Reply.disconnect(3))
    pieces = []
    with pytest.raises(LLMUnavailable, match="cannot be reached"):
        async for piece in harness.client.stream(MINI, HELLO):
            pieces.append(piece)
    assert pieces == ["This answer is", " cut short bec"]


async def test_models_are_listed(harness: Harness) -> None:
    assert await harness.client.list_models() == list(MODELS)
