"""Histories shaped by a hostile model (duplicate and reused call ids, results far from their
calls, calls never answered, huge results) and by pruning (a stored history that starts in the
middle of a turn): what a request sends keeps every tool result right after the call that
asked for it, answers every call, and ends with the newest question."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from labbot.chat.history import Counted, fit, message_tokens


def _call(call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


ids = st.sampled_from(["a", "b", "c"])
messages = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, st.text(max_size=30)),
    st.builds(lambda t: {"role": "assistant", "content": t}, st.text(max_size=30)),
    st.builds(
        lambda calls: {"role": "assistant", "content": "", "tool_calls": [_call(i) for i in calls]},
        st.lists(ids, min_size=1, max_size=3),
    ),
    st.builds(
        lambda i, n: {"role": "tool", "tool_call_id": i, "content": json.dumps({"x": "y" * n})},
        ids,
        st.integers(0, 400),
    ),
)


def _valid(sent: list[dict]) -> None:
    pending: list[str] = []
    for message in sent:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, sent
            pending.remove(message["tool_call_id"])
            continue
        assert not pending, sent  # every call answered before anything else
        pending = [c["id"] for c in message.get("tool_calls") or []]
    assert not pending


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.lists(messages, max_size=25), st.integers(1, 400))
def test_a_request_keeps_calls_with_their_results(stored: list[dict], budget: int) -> None:
    """Whatever was stored (a model's duplicate ids, results without calls, a pruned start),
    and whatever the budget: a valid sequence of calls and results, the newest question in."""
    question = {"role": "user", "content": "newest question"}
    rows = [Counted(m, message_tokens(m)) for m in [*stored, question]]
    sent = fit(rows, budget, "gpt-4o-mini")
    _valid(sent)
    assert question in sent
