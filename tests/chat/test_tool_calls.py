"""What the model may ask of the sandbox in one round: a bounded number of calls, arguments of a
sane size and shape, refused before they reach the sandbox or the stored history. The engine on
the in-memory fakes (ScriptedModel, InMemoryExecutor) with the real file store and SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from labbot.app import open_app
from labbot.chat.engine import Event
from labbot.core import Final, ToolStarted
from labbot.llm.tools import MAX_ARGUMENT_CHARS, TOOL_NAME
from tests.conftest import model_settings
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def tool_results(request: dict) -> dict[str, dict]:
    """The tool results one request carried, by call id."""
    return {
        m["tool_call_id"]: json.loads(m["content"])
        for m in request["messages"]
        if m["role"] == "tool"
    }


def stored_rows(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "labbot.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT message FROM messages ORDER BY seq")]


async def test_calls_over_the_round_limit_are_answered_not_run(tmp_path: Path) -> None:
    """Ten parallel calls in one round: four run (MAX_TOOL_CALLS_PER_ROUND), the other six are
    answered 'not run' without executing, and the model gets a result for every call."""
    calls = [(TOOL_NAME, {"code": f"print({n})"}, f"call_{n}") for n in range(10)]
    model = ScriptedModel()
    model.enqueue(Reply.tool_calls(calls), Reply.text("done"))
    settings = fake_settings(tmp_path / "data")
    assert settings.MAX_TOOL_CALLS_PER_ROUND == 4
    async with open_fake_app(settings, model) as services:
        assert services.engine is not None
        events = await collect(services.engine.turn("42", "c", "go wide"))
    assert isinstance(events[-1], Final)
    assert [e.call_id for e in events if isinstance(e, ToolStarted)] == [
        f"call_{n}" for n in range(4)
    ]
    results = tool_results(model.requests[1])
    assert list(results) == [f"call_{n}" for n in range(10)]
    for n in range(4):
        assert results[f"call_{n}"]["stdout"] == f"{n}\n"
    for n in range(4, 10):
        message = results[f"call_{n}"]["error"]["message"]
        assert "not run: too many calls in one round (limit 4)" in message.lower()
        assert "stdout" not in results[f"call_{n}"]


async def test_oversized_arguments_are_refused_and_never_stored(tmp_path: Path) -> None:
    """A call whose code is 2 MB never reaches the sandbox: the model is told why, the turn
    goes on, and history stores a short placeholder instead of the 2 MB."""
    huge = "x = 1\n" + "# padding\n" * 200_000
    assert len(huge) > MAX_ARGUMENT_CHARS
    model = ScriptedModel()
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": huge}, call_id="big"),
        Reply.tool_call(TOOL_NAME, {"code": "print('small')"}, call_id="small"),
        Reply.text("done"),
    )
    settings = fake_settings(tmp_path / "data")
    async with open_fake_app(settings, model) as services:
        assert services.engine is not None
        events = await collect(services.engine.turn("42", "c", "paste it"))
    assert isinstance(events[-1], Final)
    assert [e.call_id for e in events if isinstance(e, ToolStarted)] == ["small"]
    refused = tool_results(model.requests[1])["big"]
    assert refused["status"] == "error" and "not run" in refused["error"]["message"].lower()
    assert f"{MAX_ARGUMENT_CHARS:,}" in refused["error"]["message"]
    assert tool_results(model.requests[2])["small"]["stdout"] == "small\n"
    assert max(len(row) for row in stored_rows(tmp_path / "data")) < 4096
    (call,) = model.requests[1]["messages"][-2]["tool_calls"]
    assert len(call["function"]["arguments"]) < 1024
    json.loads(call["function"]["arguments"])


async def test_arguments_that_are_not_json_are_refused_with_the_reason(tmp_path: Path) -> None:
    """Arguments that do not parse are refused with the parse error; history keeps valid JSON
    in their place so later requests stay well-formed."""
    model = ScriptedModel()
    model.enqueue(
        Reply.tool_call(TOOL_NAME, '{"code": "print(1)', call_id="cut"),
        Reply.text("sorry"),
        Reply.text("fine"),
    )
    settings = fake_settings(tmp_path / "data")
    async with open_fake_app(settings, model) as services:
        assert services.engine is not None
        events = await collect(services.engine.turn("42", "c", "go"))
        await collect(services.engine.turn("42", "c", "again"))
    assert not [e for e in events if isinstance(e, ToolStarted)]
    refused = tool_results(model.requests[1])["cut"]
    assert "not valid JSON" in refused["error"]["message"]
    for request in model.requests[1:]:
        for message in request["messages"]:
            for call in message.get("tool_calls") or []:
                json.loads(call["function"]["arguments"])


@pytest.mark.sandbox  # the real SDK and sandbox: what goes over the wire is measured
async def test_a_hostile_provider_cannot_bloat_the_history(tmp_path: Path) -> None:
    """60 parallel calls of 200 kB arguments each: only the 4 that run keep their arguments in
    history, the rest a placeholder. A 2 MB call id: the call is refused and history keeps a
    short id for it and its result. A 300k-character answer is stored cut. No stored row and
    no later request carries the megabytes."""
    wide = [(TOOL_NAME, {"code": "1", "pad": "p" * 200_000}, f"c{n}") for n in range(60)]
    long_id = "call_" + "A" * 2_000_000
    async with FakeOpenAI() as api:
        api.enqueue(
            Reply.tool_calls(wide),
            Reply.tool_call(TOOL_NAME, {"code": "print(1)"}, call_id=long_id),
            Reply.text("x " * 150_000),
            Reply.text("and next"),
        )
        settings = model_settings(tmp_path / "data", api.base_url)
        async with open_app(settings) as services:
            assert services.engine is not None
            events = await collect(services.engine.turn("42", "c", "go"))
            await collect(services.engine.turn("42", "c", "next"))
    assert [e.call_id for e in events if isinstance(e, ToolStarted)] == ["c0", "c1", "c2", "c3"]
    rows = [json.loads(row) for row in stored_rows(tmp_path / "data")]
    wide_row = next(r for r in rows if len(r.get("tool_calls") or []) == 60)
    kept = [c["function"]["arguments"] for c in wide_row["tool_calls"]]
    assert all(len(a) > 200_000 for a in kept[:4])
    assert all("not run" in json.loads(a)["not_kept"] for a in kept[4:])
    assert len(json.dumps(wide_row)) < 4 * 200_100 + 56 * 200
    (short,) = next(r["tool_calls"] for r in rows if len(r.get("tool_calls") or []) == 1)
    assert len(short["id"]) <= 64
    refused = tool_results(api.requests[2])[short["id"]]
    assert "id is 2,000,005 characters" in refused["error"]["message"]
    answer = next(r["content"] for r in rows if (r.get("content") or "").startswith("x x"))
    assert len(answer) < 65_000
    assert max(len(json.dumps(r)) for r in rows if not r.get("tool_calls")) < 65_000
    assert api.body_sizes[-1] < 1_200_000
