"""Attacks on the download endpoint, served for real on loopback and fetched with a raw HTTP
client: encoded traversal in the path, ambiguous signed fields, header injection through a
file name, range abuse, HEAD."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp

from labbot.frontends.web.server import content_disposition
from tests.conftest import chunks_of
from tests.frontends.web.test_downloads import clock, fetch, served  # noqa: F401 (fixtures)


async def raw_get(url: str, path: str, extra: str = "") -> bytes:
    """A GET of ``path`` exactly as written (no client normalises it), the whole response."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode("latin-1")
    )
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    return data


async def test_encoded_traversal_and_field_shifts_serve_nothing(served) -> None:  # noqa: F811
    """The link's fields moved across its slashes, encoded slashes and dots, a user id that
    is a path: 404 each, and no byte of the file."""
    store, signer = served
    record = (await store.save("7", "a.csv", chunks_of(b"top-secret\n"))).record
    url = signer.url("7", record.id)
    path = urlsplit(url).path
    _, _, user, file_id, expires, signature = path.split("/")
    tries = [
        f"/f/{user}%2F{file_id}/{expires}/{signature}/x",
        f"/f/..%2F{user}/{file_id}/{expires}/{signature}",
        f"/f/{user}/{file_id}%2F..%2F{file_id}/{expires}/{signature}",
        f"/f/{user}/{file_id}/{expires}/{signature}%00",
        f"/f/{user}/{file_id}/0{expires}x/{signature}",
        f"/f/{user}/{file_id.upper()}/{expires}/{signature}",
        f"/f/{user}/{file_id}/{expires}/{signature}=",
        f"/f/./{user}/{file_id}/{expires}/{signature}",
    ]
    for attempt in tries:
        answer = await raw_get(url, attempt)
        assert b"top-secret" not in answer, attempt
        assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 404 Not Found",), (attempt, answer[:80])


def test_a_hostile_name_cannot_break_the_header() -> None:
    """CR/LF, quotes, backslashes, percent, semicolons and non-ASCII in a name: one header
    line, the ASCII fallback quoted safely, the UTF-8 name percent-encoded."""
    name = 'a"\r\nSet-Cookie: x=1; filename="evil.exe\\%41;é\u202e.txt'
    header = content_disposition(name)
    assert "\r" not in header and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert all(32 <= ord(c) < 127 and c not in '"\\%' for c in fallback)
    assert header.count('"') == 2 and header.endswith(".txt")
    assert "\u202e" not in header and "%E2%80%AE" not in header


async def test_range_abuse_is_cheap_and_bounded(served) -> None:  # noqa: F811
    """Thousands of ranges, overlapping ranges, a range past the end, a huge number: never a
    multipart expansion (each range a copy of the file), at most the file's bytes."""
    store, signer = served
    data = bytes(range(256)) * 4096  # 1 MiB
    record = (await store.save("7", "big.bin", chunks_of(data))).record
    url = signer.url("7", record.id)
    many = "bytes=" + ",".join("0-" for _ in range(1000))
    started = time.perf_counter()
    for spec in (many, "bytes=0-0,0-1048575", "bytes=0-99999999999999999999", "bytes=-0"):
        status, headers, body = await fetch(url, Range=spec)
        assert len(body) <= len(data), spec
        assert status in (200, 206, 416), (spec, status)
        if status == 206:
            assert "multipart" not in headers.get("Content-Type", "")
    assert time.perf_counter() - started < 5  # generous: the bad case is minutes


async def test_head_says_nothing_more_than_get(served) -> None:  # noqa: F811
    """HEAD on a good link gives the headers and no body; on a bad one, 404 like GET."""
    store, signer = served
    record = (await store.save("7", "a.csv", chunks_of(b"secret\n"))).record
    url = signer.url("7", record.id)
    async with aiohttp.ClientSession() as http:
        async with http.head(url) as good:
            assert good.status == 200 and good.headers["Content-Length"] == "7"
            assert "attachment" in good.headers["Content-Disposition"]
        async with http.head(url[:-2] + "AA") as bad:
            assert bad.status == 404
