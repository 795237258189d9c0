"""The engine end to end on the in-memory fakes (ScriptedModel, InMemoryExecutor) with the real
file store and SQLite; a few turns on the real sandbox and the real openai SDK against the
loopback API keep that path covered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from labbot.app import App, open_app
from labbot.chat.engine import Event
from labbot.config import load_settings
from labbot.core import Failed, FileProduced, Final, TextDelta, Usage
from labbot.llm.tools import TOOL_NAME
from tests.conftest import FIXTURES, chunks_of, model_settings
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel

CSV = b"month,region,units\n2026-01,north,10\n2026-01,south,7\n2026-02,north,12\n"


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def make_services(tmp_path: Path, model: ScriptedModel):
    """The App on the fakes, with settings overrides."""

    def make(**overrides: Any):
        return open_fake_app(fake_settings(tmp_path / "data", **overrides), model)

    return make


@pytest.fixture
def make_real_services(tmp_path: Path, fake_openai: FakeOpenAI):
    """The App as the bot opens it: the real sandbox and the openai SDK on the loopback API."""

    def make(**overrides: Any):
        return open_app(model_settings(tmp_path / "data", fake_openai.base_url, **overrides))

    return make


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def tool_results(request: dict) -> list[dict]:
    """The tool results the model was sent in one request."""
    return [json.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"]


@pytest.mark.sandbox
async def test_upload_ask_plot_and_answer(make_real_services, fake_openai: FakeOpenAI) -> None:
    """The user uploads a CSV and asks; the model runs code with load_file and a plot; the
    structured result reaches the model; the reply carries text and a PNG file id."""
    fake_openai.enqueue(
        Reply.tool_call(
            TOOL_NAME,
            {
                "code": (
                    "import matplotlib.pyplot as plt\ndf = load_file('sales.csv')\n"
                    "df.groupby('region')['units'].sum().plot(kind='bar')\n"
                    "print(df['units'].sum())"
                )
            },
        ),
        Reply.text("North sold the most: 22 units. The chart is attached."),
    )
    async with make_real_services() as services:
        saved = await services.store.save("42", "sales.csv", chunks_of(CSV))
        events = await collect(
            services.engine.turn(
                "42", "thread-1", "Who sold most? Plot it.", file_ids=[saved.record.id]
            )
        )
        types = [e.kind for e in events]
        assert types.index("tool_started") < types.index("tool_finished") < types.index("final")
        files = [e.file for e in events if isinstance(e, FileProduced)]
        assert len(files) == 1 and files[0].kind == "image"
        assert (await services.store.get("42", files[0].id)).source == "generated"
        final = [e for e in events if isinstance(e, Final)][0]
        assert "North" in final.text
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.text
    first, second = fake_openai.requests
    assert first["tools"][0]["function"]["name"] == TOOL_NAME
    system = first["messages"][0]
    assert system["role"] == "system" and saved.record.id in system["content"]
    assert "region" in system["content"]  # the schema preview computed in the sandbox
    assert "sales.csv" in first["messages"][-1]["content"]
    result = tool_results(second)[0]
    assert result["status"] == "ok" and result["stdout"] == "29\n"
    assert result["files"][0]["id"] == files[0].id


async def test_failing_code_then_fixed(make_services, model: ScriptedModel) -> None:
    """The model sees the error with its traceback, fixes its code, and the loop goes on."""
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": "d = load_file('sales.json')\nd['unit']"}),
        Reply.tool_call(TOOL_NAME, {"code": "d['units']"}),
        Reply.text("29 units in total."),
    )
    async with make_services() as services:
        await services.store.save("42", "sales.json", chunks_of(b'{"units": 29}'))
        events = await collect(services.engine.turn("42", "c", "Total units?"))
    assert [e.text for e in events if isinstance(e, Final)] == ["29 units in total."]
    error = tool_results(model.requests[1])[0]
    assert error["status"] == "error" and error["error"]["name"] == "KeyError"
    assert "line 2" in error["error"]["traceback"]
    fixed = tool_results(model.requests[2])[1]
    assert fixed["status"] == "ok" and fixed["value"] == "29"  # variables persisted


async def test_history_persists_tool_turns(make_services, model: ScriptedModel) -> None:
    """A second turn sends the first turn's messages, tool call and result included."""
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": "x = 6 * 7\nx"}),
        Reply.text("42."),
        Reply.text("Still 42."),
    )
    async with make_services() as services:
        await collect(services.engine.turn("42", "c", "compute"))
        await collect(services.engine.turn("42", "c", "again?"))
    roles = [m["role"] for m in model.requests[2]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]


async def test_api_outage_mid_turn_is_a_clear_error(make_services, model: ScriptedModel) -> None:
    """When the API fails after a tool round, the turn ends with an actionable error, the
    code's file stays, and the next turn works with the history intact."""
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": "open('out.txt', 'w').write('kept')"}),
        Reply.error(500, "upstream broke"),
        Reply.text("Back again."),
    )
    async with make_services() as services:
        events = await collect(services.engine.turn("42", "c", "go"))
        assert isinstance(events[-1], Failed) and "HTTP 500" in events[-1].text
        assert [r.name for r in await services.store.list("42")] == ["out.txt"]
        events = await collect(services.engine.turn("42", "c", "and now?"))
        assert isinstance(events[-1], Final)
    roles = [m["role"] for m in model.requests[2]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]


async def test_rate_limit_and_bad_key_messages(make_services, model: ScriptedModel) -> None:
    """429 and 401 become sentences the user can act on."""
    model.enqueue(Reply.error(429, retry_after=0), Reply.error(401))
    async with make_services() as services:
        limited = await collect(services.engine.turn("42", "c", "hi"))
        refused = await collect(services.engine.turn("42", "c", "hi"))
    assert "rate limited" in limited[-1].text and "Try again" in limited[-1].text
    assert "OPENAI_API_KEY" in refused[-1].text


async def test_retries_then_succeeds(make_real_services, fake_openai: FakeOpenAI) -> None:
    """With retries allowed (the SDK's), a 500 then a success gives the answer."""
    fake_openai.enqueue(Reply.error(500), Reply.text("fine"))
    async with make_real_services(LLM_MAX_RETRIES=2) as services:
        events = await collect(services.engine.turn("42", "c", "hi"))
    assert isinstance(events[-1], Final) and events[-1].text == "fine"


async def test_history_is_trimmed_to_the_window(
    make_services, model: ScriptedModel, tmp_path: Path
) -> None:
    """Old turns are dropped (whole, tool calls with their results) to fit the window."""
    models = tmp_path / "models.toml"
    models.write_text('[models."tiny"]\ncontext_window = 2600\nmax_output = 256\n')
    model.respond_with(lambda body: Reply.text("ok " + "word " * 50))
    async with make_services(LABBOT_MODELS_FILE=models, DEFAULT_MODEL="tiny") as services:
        for n in range(12):
            await collect(services.engine.turn("42", "c", f"question {n} " + "padding " * 80))
    last = model.requests[-1]["messages"]
    users = [m["content"] for m in last if m["role"] == "user"]
    assert users[-1].startswith("question 11") and len(users) < 12
    assert last[0]["role"] == "system" and last[1]["role"] == "user"


async def test_two_turns_on_one_conversation_run_one_at_a_time(
    make_services, model: ScriptedModel
) -> None:
    """Two turns started at once on one conversation do not interleave: the second request
    already sees the first turn's answer."""
    model.enqueue(Reply.text("first answer"), Reply.text("second answer"))
    async with make_services() as services:
        await asyncio.gather(
            collect(services.engine.turn("42", "c", "one")),
            collect(services.engine.turn("42", "c", "two")),
        )
    second = model.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "first answer"


async def test_usage_is_recorded_with_cost(make_services, model: ScriptedModel) -> None:
    """Each request's tokens and cost go to the ledger, per user and model."""
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    model.enqueue(Reply.text("a", usage=usage), Reply.text("b", usage=usage))
    async with make_services(DEFAULT_MODEL="gpt-4o") as services:
        events = await collect(services.engine.turn("42", "c", "x"))
        await collect(services.engine.turn("42", "c", "y"))
        summary = await services.ledger.summary("42")
    assert [e.input_tokens for e in events if isinstance(e, Usage)] == [1000]
    (row,) = summary
    assert (row.model, row.requests, row.input_tokens, row.cached_tokens, row.output_tokens) == (
        "gpt-4o",
        2,
        2000,
        400,
        200,
    )
    # gpt-4o: (800 * 2.50 + 200 * 1.25 + 100 * 10) / 1e6 per request
    assert float(row.cost_usd) == pytest.approx(2 * 0.00325)


async def test_images_go_to_the_model_as_data(make_services, model: ScriptedModel) -> None:
    """An attached image is sent as base64 data (never a link), in this turn and later ones."""
    model.enqueue(Reply.text("A camera man."), Reply.text("Yes."))
    png = (FIXTURES / "images" / "noise.png").read_bytes()
    async with make_services(DEFAULT_MODEL="gpt-4o") as services:
        image = (await services.store.save("42", "camera.png", chunks_of(png))).record
        await collect(
            services.engine.turn(
                "42", "c", "What is this?", file_ids=[image.id], image_ids=[image.id]
            )
        )
        await collect(services.engine.turn("42", "c", "Sure?"))
    assert len(model.requests) == 2  # both turns asked the model
    for request in model.requests:
        parts = request["messages"][1]["content"]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")


@pytest.mark.sandbox
async def test_without_a_model_the_engine_is_absent(tmp_path: Path) -> None:
    """With no model configured the services still open (console mode), without an engine."""
    settings = load_settings(LABBOT_DATA_DIR=tmp_path / "d", SANDBOX_WARM_POOL=0)
    async with open_app(settings) as services:
        assert isinstance(services, App) and services.engine is None
        result = await services.executor.run("u", "c", "1 + 1")
        assert result.value == "2"
