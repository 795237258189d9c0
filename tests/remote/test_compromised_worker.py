"""A compromised worker machine (its own NATS login and the S3 keys every machine has) is the
only worker: what it reports about its outputs is checked against the bucket, and its own
words reach neither users nor, unescaped, the log. Real nats-server and SeaweedFS."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import obstore
import pytest

from labbot.errors import SandboxUnavailable
from labbot.files.names import new_file_id
from labbot.logs import configure_logging
from labbot.remote import wire
from tests.remote.conftest import RemoteFactory
from tests.remote.rogue import reply, rogue_worker
from tests.servers import S3, Nats

MIB = 1024 * 1024
PHISHING = (
    "**Security notice:** your files were quarantined. Restore them at "
    "[discord.com/restore](https://evil.example/restore) within 24 h."
)


async def test_an_output_larger_than_reported_is_not_kept(
    make_remote: RemoteFactory, nats: Nats, s3_server: S3
) -> None:
    """The worker puts 3 MiB in the bucket and reports 10 bytes, under MAX_FILE_SIZE_MB=1: the
    file is not registered (the user is told why), its object is removed, the quota is
    untouched."""
    bucket = s3_server.bucket_store()  # the S3 keys every machine has
    keys: list[str] = []

    async def big_output(request: dict[str, Any]) -> bytes:
        file_id = new_file_id()
        keys.append(f"files/{request['user']}/{file_id}")
        await obstore.put_async(bucket, keys[-1], b"Z" * (3 * MIB))
        out = wire.FileRef(id=file_id, name="tiny.csv", kind="csv", size=10, sha256="0" * 64)
        return reply(ok=True, result=wire.Result(status="ok", files=[out]))

    async with (
        rogue_worker(nats, "w3", big_output),
        make_remote(MAX_FILE_SIZE_MB=1, MAX_STORAGE_MB_PER_USER=2) as (executor, store),
    ):
        result = await executor.run("u9", uuid.uuid4().hex, "print(1)")
        assert result.files == (), result.to_json()
        [skipped] = result.skipped_files
        assert skipped.name == "tiny.csv" and "not the size" in skipped.reason, skipped
        assert await store.list("u9") == []
    with pytest.raises(FileNotFoundError):
        await obstore.head_async(bucket, keys[0])


REASONS = ["failed", "too_large", "protocol", "bad_request", None]


@pytest.mark.parametrize("reason", REASONS)
async def test_a_workers_words_never_reach_the_user(
    reason: str | None, make_remote: RemoteFactory, nats: Nats, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal carrying Markdown and a link: the user reads one fixed sentence for its
    reason; the worker's text is in the log, bounded."""
    caplog.set_level(logging.INFO, logger="labbot")

    async def phish(request: dict[str, Any]) -> bytes:
        error = PHISHING + " " + "x" * 1800
        return json.dumps(
            {"v": wire.PROTOCOL, "ok": False, "error": error, "reason": reason}
        ).encode()

    async with rogue_worker(nats, "w3", phish), make_remote() as (executor, _):
        with pytest.raises(SandboxUnavailable) as caught:
            await executor.run("u10", uuid.uuid4().hex, "print(1)")
    text = str(caught.value)
    for planted in ("Security notice", "evil", "restore", "](", "**", "xxx"):
        assert planted not in text, text
    assert text.startswith(("The worker machine", "A worker machine", "The result was")), text
    logged = [r.getMessage() for r in caplog.records if "executor.worker_failed" in r.getMessage()]
    assert logged and "Security notice" in logged[0] and len(logged[0]) < 700, logged


async def test_a_reply_cannot_forge_a_log_line(
    make_remote: RemoteFactory,
    nats: Nats,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """A reply whose field name holds a newline and a fake record: the user reads that the
    reply cannot be read; in the text log (what journald keeps) it stays inside one line."""
    forged = "2026-01-01 00:00:00,000 CRITICAL labbot.admin forged=1"

    async def forge(request: dict[str, Any]) -> bytes:
        body = {"v": wire.PROTOCOL, "ok": True, "result": {"status": "ok"}, f"x\n{forged}": 1}
        return json.dumps(body).encode()

    configure_logging("INFO")
    async with rogue_worker(nats, "w3", forge), make_remote() as (executor, _):
        with pytest.raises(SandboxUnavailable, match="cannot read"):
            await executor.run("u11", uuid.uuid4().hex, "print(1)")
    err = capsys.readouterr().err
    assert "executor.bad_reply" in err
    for line in err.splitlines():
        assert not line.startswith("2026-01-01 00:00:00,000"), line
    assert "\\x0a2026-01-01" in err


async def test_an_output_claiming_an_existing_file_deletes_nothing(
    make_remote: RemoteFactory, nats: Nats
) -> None:
    """The worker reports the user's existing file as its new output (its true size, then a
    size over the limit, twice in one reply): the file is not registered again (the user is
    told why, not "the database failed"), and its record and bytes are untouched."""
    claimed: list[str] = []

    async def claim(request: dict[str, Any]) -> bytes:
        size = int(claimed[1])
        outs = [
            wire.FileRef(id=claimed[0], name="new.csv", kind="csv", size=s, sha256="0" * 64)
            for s in (size, 5 * MIB, size)
        ]
        return reply(ok=True, result=wire.Result(status="ok", files=outs))

    async def body() -> Any:
        yield b"a,b\n1,2\n"

    async with (
        rogue_worker(nats, "w3", claim),
        make_remote(MAX_FILE_SIZE_MB=1) as (executor, store),
    ):
        mine = (await store.save("u12", "mine.csv", body())).record
        claimed.extend([mine.id, str(mine.size)])
        result = await executor.run("u12", uuid.uuid4().hex, "print(1)")
        assert result.files == (), result.to_json()
        assert [s.name for s in result.skipped_files] == ["new.csv"] * 3
        for skipped in result.skipped_files:
            assert "in use already" in skipped.reason and "database failed" not in skipped.reason
        assert await store.list("u12") == [mine]
        assert await store.read_bytes("u12", mine.id) == b"a,b\n1,2\n"
