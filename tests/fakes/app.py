"""The App the composition root opens (real SQLite, real file store), with the in-memory fakes
in place of the sandbox and the model API: for engine and front-end tests that test neither.

    model = ScriptedModel()
    model.enqueue(Reply.text("Hello."))
    async with open_fake_app(fake_settings(tmp_path / "data"), model) as app:
        events = [e async for e in app.engine.turn("42", "c", "hi")]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from labbot.app import App, open_app
from labbot.chat.engine import Engine
from labbot.config import Settings, load_settings
from tests.fakes.memory_executor import InMemoryExecutor
from tests.fakes.scripted_model import ScriptedModel


def fake_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an App on the fakes: no model endpoint (the ScriptedModel answers) and no
    warm pool, so the composition root's own sandbox never starts."""
    values: dict[str, Any] = {
        "LABBOT_DATA_DIR": data_dir,
        "DEFAULT_MODEL": "gpt-4o-mini",
        "SANDBOX_WARM_POOL": 0,
        "CODE_EXECUTION_TIMEOUT": 30,
    }
    return load_settings(**(values | overrides))


@asynccontextmanager
async def open_fake_app(settings: Settings, model: ScriptedModel | None) -> AsyncIterator[App]:
    """``open_app``'s App with an InMemoryExecutor, and an engine on ``model`` (none without
    one, as with no model configured)."""
    async with open_app(settings) as app:
        executor = InMemoryExecutor(settings, app.store)
        await executor.start()
        try:
            engine = None
            if model is not None:
                engine = Engine(
                    settings,
                    store=app.store,
                    executor=executor,
                    llm=model,
                    conversations=app.conversations,
                    preferences=app.preferences,
                    ledger=app.ledger,
                    catalog=app.catalog,
                )
            yield replace(app, executor=executor, engine=engine)
        finally:
            await executor.close()
