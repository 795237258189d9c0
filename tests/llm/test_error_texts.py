"""Error texts users see never show the model API's URL, host, credentials or query string; the
log has the details with the secrets masked (issue 12, finding 1). Real openai SDK, loopback API."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from labbot.errors import LLMError
from labbot.llm.client import LLMClient
from labbot.llm.models import ModelCatalog
from labbot.logs import configure_logging, mask_url
from tests.conftest import Keep, model_settings
from tests.fakes.openai_server import FakeOpenAI, Reply

USER, PASSWORD, QUERY_KEY, API_KEY = "opsadmin", "hunter2pw", "qk-sekret-77", "sk-live-abc123"
SECRETS = (USER, PASSWORD, QUERY_KEY, API_KEY)


def planted(base_url: str) -> str:
    """The loopback API's URL with credentials in the userinfo and the query string."""
    parts = urlsplit(base_url)
    return f"http://{USER}:{PASSWORD}@{parts.netloc}{parts.path}?api-key={QUERY_KEY}"


def assert_no_endpoint(text: str, base_url: str) -> None:
    """Nothing of the endpoint in a text a user sees."""
    parts = urlsplit(base_url)
    for forbidden in (*SECRETS, "://", "http", parts.hostname, f":{parts.port}"):
        assert forbidden not in text, f"{forbidden!r} shown to the user: {text!r}"


def assert_clean(text: str, base_url: str) -> None:
    """A sentence for the user, without the endpoint."""
    assert_no_endpoint(text, base_url)
    assert text.strip().endswith((".", "again.")), text


# Every way the API can fail that a user gets to read about.
CASES = {
    "model not found": Reply.error(404, "The model `nope` does not exist.", code="model_not_found"),
    "bad key": Reply.error(401),
    "forbidden": Reply.error(403),
    "rate limited": Reply.error(429, retry_after=0),
    "quota used up": Reply.error(429, "You exceeded your quota.", code="insufficient_quota"),
    "bad request echoing the endpoint": Reply.error(
        400, f"Invalid value for api-key={QUERY_KEY} at http://{USER}:{PASSWORD}@10.9.8.7:8080/v1"
    ),
    "context too long": Reply.error(400, "This model's maximum context length is 128000 tokens."),
    "unprocessable": Reply.error(422, "Unprocessable request."),
    "conflict": Reply.error(409, "Conflict."),
    "server error": Reply.error(500),
    "overloaded": Reply.error(503),
    "dropped mid-answer": Reply.disconnect(2),
    "timeout": Reply.hang(),
}


async def failure_text(settings_url: str, tmp_path: Path) -> str:
    """Stream one answer and return the text of the LLMError it ends with."""
    settings = model_settings(
        tmp_path / "data", settings_url, OPENAI_API_KEY=API_KEY, LLM_TIMEOUT=1.0
    )
    client = LLMClient(settings)
    try:
        with pytest.raises(LLMError) as caught:
            async for _ in client.stream(
                ModelCatalog().get("gpt-4o-mini"), [{"role": "user", "content": "hi"}]
            ):
                pass
    finally:
        await client.close()
    return str(caught.value)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_error_texts_hide_the_endpoint(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failure becomes a sentence without URL, host, port, userinfo, key or query; the
    log names the failure and the endpoint with its secrets masked."""
    caplog.set_level(logging.DEBUG, logger="labbot")
    async with FakeOpenAI() as api:
        api.enqueue(CASES[case])
        url = planted(api.base_url)
        text = await failure_text(url, tmp_path)
        assert api.requests, "the request never reached the API: the URL was mangled"
        assert api.requests[0]["model"] == "gpt-4o-mini"
    assert_clean(text, url)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "llm.error" in logged
    for secret in SECRETS:
        assert secret not in logged, f"{secret!r} in the log"


async def test_refused_connection_hides_the_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the URL: the user reads that the API cannot be reached, not where."""
    caplog.set_level(logging.DEBUG, logger="labbot")
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = planted(f"http://127.0.0.1:{port}/v1")
    text = await failure_text(url, tmp_path)
    assert "cannot be reached" in text
    assert_clean(text, url)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{port}" in logged  # the operator learns where
    for secret in SECRETS:
        assert secret not in logged


def test_mask_url_keeps_where_and_hides_secrets() -> None:
    """Userinfo and query values are masked; scheme, host, port and path stay for the log."""
    masked = mask_url(f"https://{USER}:{PASSWORD}@llm.internal:8443/v1?api-key={QUERY_KEY}&x=1")
    assert masked == "https://***:***@llm.internal:8443/v1?api-key=***&x=***"
    assert mask_url("http://127.0.0.1:11434/v1") == "http://127.0.0.1:11434/v1"
    assert mask_url("not a url at all") == "not a url at all"


async def test_request_lines_of_the_http_client_stay_out_of_the_log(
    tmp_path: Path, restore_logging: None
) -> None:
    """At LOG_LEVEL=DEBUG the log has labbot's request line with the endpoint masked, and not
    the HTTP client's own, which shows the URL with its userinfo and ?api-key=."""
    configure_logging("DEBUG")
    kept = Keep()
    logging.getLogger().addHandler(kept)
    async with FakeOpenAI() as api:
        api.enqueue(Reply.text("fine"))
        url = planted(api.base_url)
        client = LLMClient(model_settings(tmp_path / "data", url, OPENAI_API_KEY=API_KEY))
        async for _ in client.stream(
            ModelCatalog().get("gpt-4o-mini"), [{"role": "user", "content": "hi"}]
        ):
            pass
        await client.close()
    logged = "\n".join(kept.lines)
    assert "llm.request" in logged
    for secret in SECRETS:
        assert secret not in logged, f"{secret!r} in the log"
