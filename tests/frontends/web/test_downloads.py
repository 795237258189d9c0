"""The download endpoint, served for real on loopback and fetched with aiohttp's client:
good, expired, tampered and foreign links, deleted and evicted files, ranges, a 200 MiB file
with flat memory, and blobs in object storage streamed."""

from __future__ import annotations

import hashlib
import os
import stat
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from labbot.app import blob_store
from labbot.config import load_settings
from labbot.errors import ConfigError
from labbot.files import FileStore, Limits, LocalBlobStore, SqliteMetadataStore
from labbot.files.objects import ObjectBlobStore
from labbot.frontends.discord.posting import LinkPolicy
from labbot.frontends.web import DownloadLinks, open_downloads
from labbot.frontends.web.links import KEY_FILE, LinkSigner, signing_key
from labbot.frontends.web.server import serve_downloads
from tests.conftest import chunks_of
from tests.servers import S3, free_port

MIB = 1024 * 1024
SECRET = b"0123456789abcdef0123456789abcdef"


class HandClock:
    """The signer's clock, moved by hand (never the real date)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # strictly increasing, as the store expects
        return self.now


def limits(max_mb: int = 300) -> Limits:
    return Limits(
        max_files=5,
        max_file_bytes=max_mb * MIB,
        max_total_bytes=2 * max_mb * MIB,
        lifetime=timedelta(hours=48),
    )


async def open_store(tmp_path: Path, clock: HandClock, *, blobs: object = None) -> FileStore:
    store = FileStore(
        SqliteMetadataStore(tmp_path / "db.sqlite3"),
        blobs or LocalBlobStore(tmp_path / "files"),  # type: ignore[arg-type]
        limits(),
        clock=clock,
    )
    await store.start()
    return store


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
async def served(tmp_path: Path, clock: HandClock) -> AsyncIterator[tuple[FileStore, LinkSigner]]:
    store = await open_store(tmp_path, clock)
    base = "http://127.0.0.1:0"  # replaced once the port is known
    signer = LinkSigner(SECRET, base, now=clock)
    async with serve_downloads(store, signer, "127.0.0.1:0") as address:
        signer.public_url = address
        yield store, signer
    await store.close()


async def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def test_a_good_link_serves_the_file_with_its_name_and_ranges(served) -> None:
    store, signer = served
    data = bytes(range(256)) * 40
    record = (await store.save("7", 'résumé "2026".csv', chunks_of(data))).record
    url = signer.url("7", record.id)
    status, headers, body = await fetch(url)
    assert status == 200 and body == data
    assert headers["Content-Disposition"] == (
        'attachment; filename="r_sum_ _2026_.csv";'
        " filename*=UTF-8''r%C3%A9sum%C3%A9%20%222026%22.csv"
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = await fetch(url, Range="bytes=100-199")
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"


async def test_expired_tampered_and_foreign_links_serve_nothing(served, clock: HandClock) -> None:
    store, signer = served
    mine = (await store.save("7", "a.csv", chunks_of(b"secret\n"))).record
    await store.save("8", "b.csv", chunks_of(b"other\n"))
    url = signer.url("7", mine.id)
    head, expires, signature = url.rsplit("/", 2)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert (await fetch(f"{head}/{expires}/{flipped}"))[0] == 404
    assert (await fetch(f"{head}/{int(expires) + 3600}/{signature}"))[0] == 404
    assert (await fetch(url.replace("/f/7/", "/f/8/")))[0] == 404  # the id under another user
    assert (await fetch(signer.url("8", mine.id)))[0] == 404  # signed, but not user 8's file
    assert (await fetch(url.rsplit("/", 4)[0] + f"/{mine.id}"))[0] == 404  # the id alone
    clock.now += timedelta(hours=24, seconds=1)
    status, _, body = await fetch(url)
    assert status == 410 and b"secret" not in body
    assert not signer.is_ours(url)


async def test_a_deleted_evicted_or_expired_file_is_gone(served, clock: HandClock) -> None:
    store, signer = served
    deleted = (await store.save("7", "d.csv", chunks_of(b"d\n"))).record
    url = signer.url("7", deleted.id)
    assert (await fetch(url))[0] == 200
    await store.delete("7", deleted.id)
    assert (await fetch(url))[2].startswith(b"This file is no longer stored")
    first = (await store.save("7", "e0.csv", chunks_of(b"e\n"))).record
    link = signer.url("7", first.id)
    for n in range(5):  # max_files=5: the oldest goes
        await store.save("7", f"e{n + 1}.csv", chunks_of(b"e\n"))
    assert (await fetch(link))[0] == 404
    last = (await store.list("7"))[0]
    signer.lifetime = timedelta(hours=100)  # longer than the file's 48
    link = signer.url("7", last.id, until=last.expires_at + timedelta(hours=1))
    clock.now = last.expires_at + timedelta(seconds=1)  # the file expired; the link not yet
    assert (await fetch(link))[0] == 404


async def test_a_200_mib_file_streams_with_flat_memory(served) -> None:
    store, signer = served
    zeros = bytes(MIB)

    async def big() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield zeros

    record = (await store.save("7", "big.bin", big())).record
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(signer.url("7", record.id)) as response:
                assert response.status == 200
                async for chunk in response.content.iter_chunked(256 * 1024):
                    digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == record.sha256
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB while serving 200 MiB"


async def test_object_storage_blobs_stream_checked(tmp_path: Path, clock: HandClock) -> None:
    """A blob with no local path streams through the store's checked read (HEAD too)."""
    store = await open_store(tmp_path, clock, blobs=ObjectBlobStore.from_url("memory://x"))
    data = os.urandom(3 * MIB + 5)
    record = (await store.save("7", "m.bin", chunks_of(data))).record
    signer = LinkSigner(SECRET, "http://unset", now=clock)
    async with serve_downloads(store, signer, "127.0.0.1:0") as address:
        signer.public_url = address
        status, headers, body = await fetch(signer.url("7", record.id))
        assert status == 200 and body == data and headers["Accept-Ranges"] == "none"
        async with aiohttp.ClientSession() as http, http.head(signer.url("7", record.id)) as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
    assert await DownloadLinks(store).link("7", record.id) is None  # memory:// cannot presign
    await store.close()


def test_only_our_valid_links_may_be_previewed(clock: HandClock, tmp_path: Path) -> None:
    signer = LinkSigner(SECRET, "https://labbot.example/dl", now=clock)
    links = DownloadLinks(None, signer)  # type: ignore[arg-type]  # allow() reads no store
    policy = LinkPolicy(allow=links.allow)
    url = signer.url("7", "a" * 26)
    assert policy.previews([f"Here: {url}"])
    assert not policy.previews([url + "x"])
    assert not policy.previews([url.replace("labbot.example", "evil.example")])
    other = LinkSigner(b"another secret, just as long", "https://labbot.example/dl", now=clock)
    assert not policy.previews([other.url("7", "a" * 26)])
    assert not DownloadLinks(None).allow(url)  # type: ignore[arg-type]  # no endpoint: none


def test_the_key_is_made_once_private_and_a_shared_one_refused(tmp_path: Path) -> None:
    settings = load_settings(LABBOT_DATA_DIR=tmp_path / "data")
    key = signing_key(settings)
    path = tmp_path / "data" / KEY_FILE
    assert len(key) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_key(settings) == key
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # nothing left aside
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        signing_key(settings)
    secret = load_settings(LABBOT_DATA_DIR=tmp_path / "d2", DOWNLOAD_SECRET="s" * 32)
    assert signing_key(secret) == b"s" * 32
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        load_settings(PUBLIC_URL="labbot.example")
    with pytest.raises(ConfigError, match="DOWNLOAD_LISTEN"):
        load_settings(DOWNLOAD_LISTEN="8080")


async def test_open_downloads_serves_only_when_configured(tmp_path: Path, clock: HandClock) -> None:
    store = await open_store(tmp_path, clock)
    record = (await store.save("7", "a.csv", chunks_of(b"a\n"))).record
    off = load_settings(LABBOT_DATA_DIR=tmp_path / "data")
    async with open_downloads(off, store) as downloads:
        assert await downloads.link("7", record.id) is None
    port = free_port()
    on = load_settings(
        LABBOT_DATA_DIR=tmp_path / "data",
        PUBLIC_URL=f"http://127.0.0.1:{port}/",
        DOWNLOAD_LISTEN=f"127.0.0.1:{port}",
    )
    async with open_downloads(on, store) as downloads:
        url = await downloads.link("7", record.id)
        assert url is not None and url.startswith(f"http://127.0.0.1:{port}/f/7/")
        assert (await fetch(url))[2] == b"a\n"
    await store.close()


async def test_files_in_s3_get_a_presigned_link(s3_server: S3, tmp_path: Path, clock) -> None:
    """With files in S3 and no endpoint, a link is S3's presigned URL, within the file's life;
    it fetches the bytes, and nothing once the file is deleted."""
    settings = load_settings(LABBOT_DATA_DIR=tmp_path, **s3_server.env(prefix="links"))
    store = await open_store(tmp_path, clock, blobs=blob_store(settings))
    data = os.urandom(MIB + 3)
    record = (await store.save("7", "s3.bin", chunks_of(data))).record
    downloads = DownloadLinks(store)
    assert downloads.available and not downloads.allow("http://x")
    url = await downloads.link("7", record.id)
    assert url is not None and url.startswith(s3_server.endpoint) and "X-Amz-Signature" in url
    status, _, body = await fetch(url)
    assert status == 200 and body == data
    await store.delete("7", record.id)
    assert (await fetch(url))[0] == 404
    await store.close()
