"""Time limits across machines: a cell is never run again on a second worker because it was
slow. A worker whose CODE_EXECUTION_TIMEOUT is longer than the bot's gets no cells, and a
worker that is alive but late with its answer is not taken for lost."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from labbot.errors import SandboxUnavailable
from labbot.remote import bus
from labbot.remote import executor as executor_module
from tests.remote.conftest import RemoteFactory
from tests.servers import S3, Nats, Process, workers_running

SLOW_CELL = "print('start', flush=True)\nimport time\ntime.sleep(8)\n'done'"


@pytest.fixture
def long_pair(nats: Nats, s3_server: S3, tmp_path: Path) -> Iterator[dict[str, Process]]:
    """Workers w3 and w4 whose time limit (60 s) is longer than the bot's."""
    with workers_running(
        ("w3", "w4"), nats, s3_server, tmp_path, CODE_EXECUTION_TIMEOUT="60"
    ) as up:
        yield up


@pytest.fixture
def same_pair(nats: Nats, s3_server: S3, tmp_path: Path) -> Iterator[dict[str, Process]]:
    """Workers w3 and w4 with the bot's time limit (3 s)."""
    with workers_running(("w3", "w4"), nats, s3_server, tmp_path, CODE_EXECUTION_TIMEOUT="3") as up:
        yield up


def starts_counter() -> tuple[list[str], Callable[[str, str], Awaitable[None]]]:
    """A list of one entry per start of the cell, and the output handler that fills it."""
    starts: list[str] = []

    async def on_output(name: str, text: str) -> None:
        starts.extend(["start"] * text.count("start"))

    return starts, on_output


@pytest.mark.usefixtures("long_pair")
async def test_a_worker_with_a_longer_time_limit_gets_no_cells(
    make_remote: RemoteFactory, nats: Nats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bot 2 s, workers 60 s: the cell is refused with a sentence naming the setting, never
    run on one worker, declared lost and run again on the next."""
    monkeypatch.setattr(executor_module, "REPLY_GRACE", 1.0)  # the bot gives up after 3 s
    starts, on_output = starts_counter()
    async with make_remote(CODE_EXECUTION_TIMEOUT=2) as (executor, _):
        with pytest.raises(SandboxUnavailable, match="CODE_EXECUTION_TIMEOUT"):
            await executor.run("u", "slow-1", SLOW_CELL, on_output=on_output)
        assert starts == [] and executor.losses == []
    # A bot that has not heard the beats yet is refused by the worker itself.
    from labbot.remote import wire

    request = {
        "v": wire.PROTOCOL,
        "user": "u",
        "conversation": "slow-2",
        "code": SLOW_CELL,
        "files": [],
        "stream": None,
        "timeout": 2.0,
    }
    nc = await bus.connect(executor.settings, "test-bot")
    try:
        msg = await nc.request(bus.exec_subject("w3"), json.dumps(request).encode(), timeout=15)
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    assert reply["ok"] is False and "CODE_EXECUTION_TIMEOUT" in reply["error"], reply


@pytest.mark.usefixtures("same_pair")
async def test_a_late_answer_is_not_a_lost_worker(
    make_remote: RemoteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is alive (it beats) but its answer comes after the bot stopped waiting: the
    result is a time-out, and the cell never starts on the other worker."""
    starts, on_output = starts_counter()
    async with make_remote(CODE_EXECUTION_TIMEOUT=3) as (executor, _):
        assert (await executor.run("u", "late-1", "1")).value == "1"  # the session is up
        monkeypatch.setattr(executor_module, "REPLY_GRACE", -1.5)  # the bot waits 1.5 s of 3
        result = await executor.run("u", "late-1", SLOW_CELL, on_output=on_output)
        assert result.status == "timeout", result.to_json()
        assert starts == ["start"] and executor.losses == []
        # The worker it ran on is still in use: the next cell goes there as usual.
        again = await executor.run("u", "late-1", "1 + 1")
        assert again.value == "2" and not again.session_restarted
