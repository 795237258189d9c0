"""History repair and grouping: what a crash between a tool call and its result leaves."""

from __future__ import annotations

import json

from labbot.chat.history import repair, turns


def call(call_id: str) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def test_missing_tool_result_is_filled_and_strays_dropped() -> None:
    """A tool call without its result gets a 'lost' result; a result without its call goes."""
    history = [
        {"role": "user", "content": "a"},
        call("c1"),
        {"role": "tool", "tool_call_id": "zz", "content": "{}"},
        {"role": "user", "content": "b"},
    ]
    fixed = repair(history)
    assert [m["role"] for m in fixed] == ["user", "assistant", "tool", "user"]
    assert fixed[2]["tool_call_id"] == "c1"
    assert json.loads(fixed[2]["content"])["status"] == "killed"


def test_turns_start_at_user_messages() -> None:
    """Trimming drops whole turns: a user message with the calls and results after it."""
    history = [
        {"role": "user", "content": "a"},
        call("c1"),
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "b"},
    ]
    assert [len(t) for t in turns(history)] == [4, 1]
