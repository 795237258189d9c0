"""The product path scaled out: the real openai SDK against the loopback API, the engine, and the
code on a worker machine over NATS, with the files in a real S3 server."""

from __future__ import annotations

import json
from pathlib import Path

from labbot.app import open_app
from labbot.core import FileProduced
from labbot.llm.tools import TOOL_NAME
from labbot.remote.executor import RemoteExecutor
from tests.conftest import chunks_of, model_settings
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.servers import S3, Nats, Process

CSV = b"month,region,units\n2026-01,north,10\n2026-01,south,7\n2026-02,north,12\n"


async def test_a_turn_runs_its_code_on_a_worker(
    workers: dict[str, Process], nats: Nats, s3_server: S3, tmp_path: Path
) -> None:
    code = (
        "import matplotlib.pyplot as plt\ndf = load_file('sales.csv')\n"
        "df.groupby('region')['units'].sum().plot(kind='bar')\n"
        "print(df['units'].sum())"
    )
    async with FakeOpenAI() as api:
        api.enqueue(Reply.tool_call(TOOL_NAME, {"code": code}), Reply.text("North, 22 units."))
        settings = model_settings(
            tmp_path / "data",
            api.base_url,
            LABBOT_EXECUTOR="nats",
            **nats.bot_env(),
            **s3_server.env(),
        )
        async with open_app(settings) as services:
            assert isinstance(services.executor, RemoteExecutor)
            assert services.engine is not None
            saved = await services.store.save("42", "sales.csv", chunks_of(CSV))
            events = [
                e
                async for e in services.engine.turn(
                    "42", "t-1", "Who sold most? Plot it.", file_ids=[saved.record.id]
                )
            ]
            files = [e.file for e in events if isinstance(e, FileProduced)]
            assert len(files) == 1 and files[0].kind == "image"
            png = await services.store.read_bytes("42", files[0].id)  # from the bucket
            assert png.startswith(b"\x89PNG")
        second = api.requests[1]
        result = [json.loads(m["content"]) for m in second["messages"] if m["role"] == "tool"][0]
        assert result["status"] == "ok" and result["stdout"] == "29\n"
        assert "region" in second["messages"][0]["content"]  # the preview, computed remotely
