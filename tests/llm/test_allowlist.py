"""Models the operator chose (issue 12, finding 3): one check in labbot/llm that Discord's
/model, the terminal's /model and `labbot ask --model` all go through."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from labbot.app import open_app
from labbot.chat.preferences import open_sqlite_preferences
from labbot.cli import cli
from labbot.config import load_settings
from labbot.errors import ModelNotAllowed
from labbot.llm.allowlist import LISTING_RETRY_SECONDS, ModelAllowList, ProviderAllowList
from labbot.llm.client import LLMClient
from labbot.llm.models import ModelCatalog
from labbot.sqlite import SqliteDatabase
from tests.conftest import model_settings
from tests.fakes.openai_server import MODELS, FakeOpenAI, Reply
from tests.frontends.test_terminal import typed


def allow_list(tmp_path: Path, listed: list[str] | None, **settings: object) -> ModelAllowList:
    values = {"LABBOT_DATA_DIR": tmp_path, "DEFAULT_MODEL": "gpt-4.1"} | settings
    return ModelAllowList(load_settings(**values), ModelCatalog(), listed=listed)


def test_default_is_the_catalogs_models_the_provider_lists(tmp_path: Path) -> None:
    """Listed models the catalog knows (also behind a provider prefix), plus DEFAULT_MODEL;
    a provider that lists nothing leaves the whole catalog."""
    allowed = allow_list(tmp_path, ["gpt-4o", "openai/o3", "whisper-1", "gpt-4.5-preview"])
    assert allowed.names() == ["gpt-4.1", "gpt-4o", "openai/o3"]
    assert allow_list(tmp_path, None).names() == ModelCatalog().names()


def test_unknown_names_are_refused_with_the_list(tmp_path: Path) -> None:
    """An unknown name is refused naming the choices; forced, a well-formed name is added;
    ALLOWED_MODELS replaces the default list."""
    allowed = allow_list(tmp_path, None, ALLOWED_MODELS="gpt-4o, llama3.1:8b")
    assert allowed.names() == ["gpt-4.1", "gpt-4o", "llama3.1:8b"]
    with pytest.raises(ModelNotAllowed) as refused:
        allowed.check("gpt-4.5-preview-EXPENSIVE")
    assert str(refused.value) == (
        "The model 'gpt-4.5-preview-EXPENSIVE' is not offered here."
        " Pick one of: gpt-4.1, gpt-4o, llama3.1:8b."
    )
    assert allowed.check(" gpt-4o ") == "gpt-4o"
    assert allowed.check("qwen2.5:7b", force=True) == "qwen2.5:7b"
    assert "qwen2.5:7b" in allowed.names()
    with pytest.raises(ModelNotAllowed):
        allowed.check("no spaces or\x1b escapes", force=True)


async def test_added_models_survive_a_restart(tmp_path: Path) -> None:
    """A model an admin added is kept in the database."""
    db = SqliteDatabase(tmp_path / "c.sqlite3")
    store = (await open_sqlite_preferences(db)).admin
    settings = load_settings(LABBOT_DATA_DIR=tmp_path)
    first = ModelAllowList(settings, ModelCatalog(), listed=[], store=store)
    await first.choose("my-finetune", force=True, by="42")
    again = ModelAllowList(settings, ModelCatalog(), listed=[], store=store)
    await again.load()
    assert again.allows("my-finetune") and not again.allows("other")
    await db.close()


async def test_the_provider_list_comes_from_its_models_endpoint(tmp_path: Path) -> None:
    """GET /v1/models through the SDK; an endpoint without one lists nothing."""
    async with FakeOpenAI() as api:
        client = LLMClient(model_settings(tmp_path, api.base_url))
        assert sorted(await client.list_models() or []) == sorted(MODELS)
        await client.close()
        client = LLMClient(model_settings(tmp_path, api.base_url.removesuffix("/v1") + "/x"))
        assert await client.list_models() is None
        await client.close()


async def test_a_failed_listing_allows_only_the_operators_models_for_a_while(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 from GET /v1/models (the real SDK) allows only DEFAULT_MODEL, says so in the log,
    and is asked again after LISTING_RETRY_SECONDS, not before; once the provider answered,
    its list is kept. A 404 (no listing endpoint) still means "it lists none"."""
    async with FakeOpenAI() as api:
        settings = model_settings(tmp_path, api.base_url)
        client = LLMClient(settings)
        now = [0.0]
        models = ProviderAllowList(
            settings, ModelCatalog(), client.list_models, clock=lambda: now[0]
        )
        api.fail_listings(503)
        with caplog.at_level(logging.WARNING, logger="labbot.llm.allowlist"):
            failed = await models.get()
        assert failed.names() == ["gpt-4o-mini"] and not failed.allows("o1")
        assert "model.listing_failed" in caplog.text
        now[0] += LISTING_RETRY_SECONDS - 1
        assert await models.get() is failed and api.model_listings == 1
        now[0] += 1
        assert (await models.get()).names() == sorted(MODELS)
        now[0] += 10 * LISTING_RETRY_SECONDS
        await models.get()
        assert api.model_listings == 2
        api.fail_listings(404)
        none = ProviderAllowList(settings, ModelCatalog(), client.list_models)
        assert (await none.get()).names() == ModelCatalog().names()
        await client.close()


async def test_terminal_model_refuses_unknown_names_unless_forced(tmp_path: Path) -> None:
    """The terminal's /model says which models are allowed; --force adds one."""
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text("from my model"))
        settings = model_settings(tmp_path / "d", api.base_url)
        async with open_app(settings) as services:
            said = ("/model nope", "/model nope --force", "hello")
            text = await typed(services, tmp_path / "o", *said, width=200)
        assert api.requests[0]["model"] == "nope"
    assert "The model 'nope' is not offered here. Pick one of: gpt-4.1-mini, gpt-4o" in text
    assert "Model: nope (allowed: gpt-4.1-mini, gpt-4o, gpt-4o-mini, nope, o4-mini)" in text


async def test_ask_model_refuses_unknown_names_unless_forced(
    tmp_path: Path, restore_logging: None
) -> None:
    """`labbot ask --model` fails in one line before any request; --force-model adds it."""
    runner = CliRunner()

    async def ask(*args: str, env: dict[str, str]) -> Result:
        argv = ["ask", "hi", "-u", "7", "--model", "nope", *args]
        return await asyncio.to_thread(runner.invoke, cli, argv, env=env)

    async with FakeOpenAI() as api:
        api.enqueue(Reply.text("forced answer"))
        env = {
            "LABBOT_DATA_DIR": str(tmp_path / "data"),
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": api.base_url,
            "DEFAULT_MODEL": "gpt-4o-mini",
            "SANDBOX_WARM_POOL": "0",
        }
        refused = await ask(env=env)
        assert refused.exit_code == 1 and "The model 'nope' is not offered here" in refused.output
        assert api.requests == []
        forced = await ask("--force-model", env=env)
        assert forced.exit_code == 0, forced.output
        assert "forced answer" in forced.stdout and api.requests[0]["model"] == "nope"
