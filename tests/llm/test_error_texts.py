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
from labbot.logs import configure_logging, mask_url, mask_urls
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


GATEWAYS = {  # a path in OPENAI_BASE_URL (before /v1), and the secret in it
    "token in the route": ("/gw/tok_PATHSECRET123", "tok_PATHSECRET123"),
    "account in the route": ("/v1/projects/acct-7781/openai", "acct-7781"),
}


@pytest.mark.parametrize("case", sorted(GATEWAYS))
async def test_a_secret_in_the_base_urls_path_never_reaches_the_user(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway whose route holds a token or an account id (OPENAI_BASE_URL's path) answers
    400 echoing the route it was called on and the id: the user reads the refusal without
    either; the log masks the token too."""
    prefix, secret = GATEWAYS[case]
    caplog.set_level(logging.DEBUG, logger="labbot")
    async with FakeOpenAI(prefix=prefix) as api:
        route = urlsplit(api.base_url).path
        echo = f"Unsupported parameter for route {route}/chat/completions (deployment {secret})"
        api.enqueue(Reply.error(400, echo))
        text = await failure_text(api.base_url, tmp_path)
        assert api.requests, "the request never reached the gateway"
    assert text.startswith("The model API refused the request: "), text
    assert "Unsupported parameter" in text  # the provider's reason is still there
    assert route not in text and secret not in text, text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "llm.error" in logged and "PATHSECRET123" not in logged


def test_mask_urls_masks_every_url_in_a_text() -> None:
    """Userinfo, query values and secret-looking path segments of each URL in a text (a
    comma-separated list included) are masked; the rest of the text is kept."""
    text = (
        "cannot be reached at nats://bot:PW1@10.0.0.1:4222,tls://w:PW2@10.0.0.2:4222 (OSError)."
        " Also http://h:8080/gw/tok_PATHSECRET123/v1?api-key=K3Y,x and s3://bucket/files."
    )
    masked = mask_urls(text)
    for secret in ("PW1", "PW2", "PATHSECRET123", "K3Y", "bot:", "w:"):
        assert secret not in masked, masked
    assert masked == (
        "cannot be reached at nats://***:***@10.0.0.1:4222,tls://***:***@10.0.0.2:4222"
        " (OSError). Also http://h:8080/gw/***/v1?api-key=*** and s3://bucket/files."
    )
    assert mask_url("bot:PW@10.0.0.1:4222") == "***@10.0.0.1:4222"
    assert mask_url("http://h/v1/projects/acct-7781/openai") == (
        "http://h/v1/projects/acct-7781/openai"
    )
