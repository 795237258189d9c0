"""The quiet line after each answer: tokens in and out, cost and model, in the terminal chat
and `labbot ask` (and the same totals in --json)."""

from __future__ import annotations

import json
from pathlib import Path

from labbot.chat.reports import TurnTotals
from labbot.core import Usage
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.scripted_model import ScriptedModel
from tests.frontends.test_terminal import run_labbot, typed

USAGE = {"prompt_tokens": 1200, "completion_tokens": 30}


def test_totals_add_up_a_turns_requests() -> None:
    """Two requests: tokens summed, cost exact, "~" when estimated, unpriced said so."""
    totals = TurnTotals()
    totals.add(Usage("gpt-4o-mini", 1000, 0, 20, False, "0.000162"))
    totals.add(Usage("gpt-4o-mini", 1200, 100, 30, True, "0.000198"))
    assert totals.line() == "~2,200 tokens in · ~50 out · $0.0004 · gpt-4o-mini"
    assert totals.to_json()["cost_usd"] == "0.000360"
    unpriced = TurnTotals()
    unpriced.add(Usage("llama-local", 10, 0, 2, False, None))
    assert unpriced.line() == "10 tokens in · 2 out · cost unknown · llama-local"


async def test_the_terminal_chat_prints_the_line_after_the_answer(tmp_path: Path) -> None:
    """The chat shows the answer, then the line."""
    model = ScriptedModel()
    model.enqueue(Reply.text("All done.", usage=USAGE))
    async with open_fake_app(fake_settings(tmp_path / "d"), model) as services:
        text = await typed(services, tmp_path / "o", "say something")
    assert "All done." in text
    assert "1,200 tokens in · 30 out · $0.0002 · gpt-4o-mini" in text
    assert text.index("All done.") < text.index("1,200 tokens in")


async def test_ask_prints_the_line_on_stderr_and_the_totals_in_json(tmp_path: Path) -> None:
    """`labbot ask`: the answer alone on stdout, the line on stderr; --json ends with a
    ``turn_usage`` event."""
    env = {"OPENAI_API_KEY": "sk-test", "DEFAULT_MODEL": "gpt-4o-mini"}
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text("Hi.", usage=USAGE), Reply.text("Hi.", usage=USAGE))
        env |= {"OPENAI_BASE_URL": api.base_url, "LABBOT_DATA_DIR": str(tmp_path / "d")}
        code, out, err = await run_labbot("ask", "hi", "-u", "7", env=env)
        assert code == 0, err
        assert out == "Hi.\n"
        assert "1,200 tokens in · 30 out · $0.0002 · gpt-4o-mini" in err
        code, out, err = await run_labbot("ask", "hi", "-u", "7", "--json", env=env)
    assert code == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last == {
        "type": "turn_usage",
        "usage": {
            "requests": 1,
            "input_tokens": 1200,
            "cached_tokens": 0,
            "output_tokens": 30,
            "cost_usd": "0.000198",
            "estimated": False,
            "models": ["gpt-4o-mini"],
        },
    }
