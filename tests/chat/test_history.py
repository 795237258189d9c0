"""History repair and grouping: what a crash between a tool call and its result leaves."""

from __future__ import annotations

import json

from labbot.chat.history import (
    MAX_ANSWER_CHARS,
    MAX_CALL_ID,
    MAX_TOOL_MESSAGE,
    MAX_TOOL_TEXT,
    repair,
    tool_message,
    turns,
)


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


def forged_result() -> dict:
    """What a forged execution result looked like (issue 11): a 300 KB traceback, stdout as a
    list, 20,000 eviction notes, deep nesting and thousands of keys."""
    deep: dict = {"x": "y" * 5000}
    for _ in range(50):
        deep = {"d": deep}
    return {
        "status": "error",
        "stdout": ["line " * 200] * 10_000,
        "stderr": "e" * 50_000,
        "error": {"name": "E" * 5000, "message": "m" * 300_000, "traceback": "T" * 300_000},
        "value": {f"k{i}": "v" * 100 for i in range(5000)},
        "files": [{"id": "f" * 1000, "name": "n" * 1000}] * 5000,
        "notes": [f"To stay within your limits, old{i}.csv was removed." for i in range(20_000)],
        "deep": deep,
    }


def strings_and_lists(value, depth: int = 0):
    """Every string and list inside a JSON value, with the depth it sits at."""
    if isinstance(value, str):
        yield value, depth
    elif isinstance(value, list):
        yield value, depth
        for item in value:
            yield from strings_and_lists(item, depth + 1)
    elif isinstance(value, dict):
        yield list(value), depth
        for key, item in value.items():
            yield key, depth
            yield from strings_and_lists(item, depth + 1)


def test_tool_message_bounds_every_field_and_the_whole() -> None:
    """A forged 20 MB result becomes a tool message under MAX_TOOL_MESSAGE characters, with
    every string, list and nesting level cut, the status kept and the cuts said."""
    message = tool_message("c1", forged_result())
    assert message["role"] == "tool" and message["tool_call_id"] == "c1"
    assert len(message["content"]) <= MAX_TOOL_MESSAGE
    kept = json.loads(message["content"])
    assert kept["status"] == "error"
    assert kept["error"]["traceback"].startswith("TTT") and "cut" in kept["error"]["traceback"]
    assert "more" in kept["notes"][-1] and len(kept["notes"]) < 30
    for item, depth in strings_and_lists(kept):
        assert len(item) <= MAX_TOOL_TEXT + 100
        assert depth <= 8


def test_tool_message_keeps_an_ordinary_result_as_is() -> None:
    """Results within the limits are stored unchanged."""
    result = {"status": "ok", "stdout": "29\n", "value": "29", "notes": ["a", "b"]}
    assert json.loads(tool_message("c", result)["content"]) == result


def test_repair_bounds_oversized_rows_already_stored() -> None:
    """A 600 KB tool result or a 2 MB call already in the database is re-sent bounded."""
    history = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "execute_python_code", "arguments": "x" * 2_000_000},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(forged_result())},
    ]
    fixed = repair(history)
    assert len(json.dumps(fixed)) < MAX_TOOL_MESSAGE + 2048
    assert json.loads(fixed[2]["content"])["status"] == "error"
    json.loads(fixed[1]["tool_calls"][0]["function"]["arguments"])


def test_repair_shortens_long_call_ids_and_answers_already_stored() -> None:
    """A 2 MB call id stored before ids were bounded becomes the same short id in the call and
    its result; a 300k-character answer is cut to MAX_ANSWER_CHARS."""
    long_id = "call_" + "A" * 2_000_000
    history = [
        {"role": "user", "content": "go"},
        call(long_id),
        {"role": "tool", "tool_call_id": long_id, "content": '{"status": "ok"}'},
        {"role": "assistant", "content": "x " * 150_000},
    ]
    fixed = repair(history)
    short = fixed[1]["tool_calls"][0]["id"]
    assert len(short) <= MAX_CALL_ID and fixed[2]["tool_call_id"] == short
    assert fixed[2]["content"] == '{"status": "ok"}'
    assert len(fixed[3]["content"]) < MAX_ANSWER_CHARS + 100
    assert len(json.dumps(fixed)) < MAX_ANSWER_CHARS + 1024
