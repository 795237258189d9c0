"""The operator's view: the Prometheus endpoint scraped with a real HTTP client after a scripted
turn, the status snapshot the bot writes, and `labbot status` reading it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from labbot.app import open_app
from labbot.chat.usage import ExecutionRecord
from labbot.cli import cli
from labbot.frontends.metrics import snapshot, watching
from labbot.frontends.status import status_path, write_status
from labbot.llm.tools import TOOL_NAME
from tests.conftest import chunks_of, model_settings
from tests.fakes.app import fake_settings, open_fake_app
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replies import Reply
from tests.fakes.scripted_model import ScriptedModel


def samples(text: str) -> dict[str, float]:
    """The exposition's samples: ``name{labels}`` → value (comments left out)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def test_metrics_after_a_scripted_turn(tmp_path: Path) -> None:
    """One turn (code, then an answer): executions by status, both latency histograms,
    tokens and cost by model, the file store's files and bytes, and kills by limit."""
    model = ScriptedModel()
    model.enqueue(
        Reply.tool_call(TOOL_NAME, {"code": "print(6 * 7)"}),
        Reply.text("42.", usage={"prompt_tokens": 1000, "completion_tokens": 10}),
    )
    settings = fake_settings(tmp_path / "d", METRICS_LISTEN="127.0.0.1:0")
    async with open_fake_app(settings, model) as app:
        await app.store.save("42", "a.csv", chunks_of(b"x,y\n1,2\n"))
        assert app.engine is not None
        async with watching(app, interval=0.05) as metrics:
            events = [e async for e in app.engine.turn("42", "c", "six times seven?")]
            assert events[-1].kind == "final"
            metrics.observe(ExecutionRecord("9", "c", "memory", 10.0))  # as a killed cell is
            metrics.written.clear()
            async with asyncio.timeout(10):
                await metrics.written.wait()  # a snapshot taken after the turn
            assert metrics.address is not None
            host, port = metrics.address
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://{host}:{port}/metrics") as response:
                    assert response.status == 200
                    found = samples(await response.text())
        written = json.loads(status_path(settings.LABBOT_DATA_DIR).read_text())
    mini = 'model="gpt-4o-mini"'
    assert found['labbot_executions_total{status="ok"}'] == 1
    assert found['labbot_executions_total{status="memory"}'] == 1
    assert found['labbot_sandbox_kills_total{limit="memory"}'] == 1
    assert found["labbot_execution_seconds_count"] == 2
    assert found[f"labbot_model_request_seconds_count{{{mini}}}"] == 2
    assert found[f'labbot_tokens_total{{direction="output",{mini}}}'] >= 10
    assert found[f'labbot_tokens_total{{direction="input",{mini}}}'] >= 1000
    assert found[f"labbot_cost_usd_total{{{mini}}}"] > 0
    assert found["labbot_file_store_files"] == 1 and found["labbot_file_store_bytes"] == 8
    assert found["labbot_sessions"] == 0  # the in-memory executor holds no sandboxes
    assert written["files"] == {"files": 1, "bytes": 8} and written["executor"] == "local"


def test_metrics_are_off_unless_an_address_is_set(tmp_path: Path) -> None:
    """No METRICS_LISTEN: nothing listens (the snapshot is still written)."""

    async def main() -> None:
        async with open_fake_app(fake_settings(tmp_path / "d"), None) as app:
            async with watching(app, interval=0.05) as metrics:
                async with asyncio.timeout(10):
                    await metrics.written.wait()
                assert metrics.address is None
            assert status_path(app.settings.LABBOT_DATA_DIR).exists()

    asyncio.run(main())


def status_cli(data: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["status", *args], env={"LABBOT_DATA_DIR": str(data)})
    return result.exit_code, result.output


def test_status_reads_the_snapshot(tmp_path: Path) -> None:
    """`labbot status` shows the sessions; --json the same data with its age; an old snapshot
    is called stale; no snapshot: one sentence naming the data dir."""
    data = tmp_path / "d"
    code, out = status_cli(data)
    assert code == 1 and f"No running bot writes its status in {data}" in out
    data.mkdir()
    snapshot_ = {
        "written_at": datetime.now(UTC).isoformat(),
        "pid": 123,
        "host": "box",
        "executor": "local",
        "sessions": [
            {
                "user": "42",
                "conversation": "thread-9",
                "age_seconds": 75.0,
                "idle_seconds": 12.0,
                "running": False,
                "memory_bytes": 90 * 1048576,
                "cpu_seconds": 1.5,
            }
        ],
        "warm_pool": 2,
        "kernels": 3,
        "max_sessions": 16,
        "waiting_executions": 0,
    }
    write_status(status_path(data), snapshot_)
    code, out = status_cli(data)
    assert code == 0, out
    assert "Sessions: 1 of 16 · warm pool: 2" in out
    assert "42" in out and "thread-9" in out and "1m15s" in out and "90 MiB" in out
    code, out = status_cli(data, "--json")
    shown = json.loads(out)
    assert shown["sessions"] == snapshot_["sessions"] and shown["stale"] is False
    old = snapshot_ | {"written_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}
    write_status(status_path(data), old)
    assert "stale" in status_cli(data)[1]
    assert (status_path(data).stat().st_mode & 0o777) == 0o600


@pytest.mark.sandbox
async def test_a_real_session_is_measured(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """On the real sandbox: the session's user, conversation, age, memory and CPU."""
    fake_openai.enqueue(Reply.tool_call(TOOL_NAME, {"code": "x = 1"}), Reply.text("Done."))
    async with open_app(model_settings(tmp_path / "d", fake_openai.base_url)) as app:
        assert app.engine is not None
        _ = [e async for e in app.engine.turn("42", "thread-9", "set x")]
        data = await snapshot(app, files=None)
    (session,) = data["sessions"]
    assert (session["user"], session["conversation"], session["running"]) == (
        "42",
        "thread-9",
        False,
    )
    assert session["memory_bytes"] > 1_000_000 and session["age_seconds"] >= 0
    assert session["cpu_seconds"] is not None and data["kernels"] >= 1
