"""Deleted means gone on worker machines: the copy a worker cached of a file deleted (or
expired) since is removed before the user's next execution there, and the code no longer sees
it. A real `labbot worker` process, nats-server and SeaweedFS."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from tests.remote.conftest import RemoteFactory
from tests.servers import S3, Nats, workers_running

CODE = """
import json, os
seen = {i: os.path.exists(p) for i, p in FILES.items()}
print(json.dumps({"seen": seen, "data": [open(p).read() for p in FILES.values()]}))
"""


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_deleted_files_copy_leaves_the_worker_before_its_next_use(
    make_remote: RemoteFactory, nats: Nats, s3_server: S3, tmp_path: Path
) -> None:
    """Two files used on the worker (both cached there); one is deleted, one expires: at the
    user's next execution neither copy is in the worker's cache, and FILES names only the
    file that stays."""
    with workers_running(("w1",), nats, s3_server, tmp_path / "workers"):
        cache = tmp_path / "workers" / "w1" / "blob-cache" / "u20"
        async with make_remote() as (executor, store):
            expired = (await store.save("u20", "expired.csv", chunks(b"SECRET-E\n"))).record
            deleted = (await store.save("u20", "deleted.csv", chunks(b"SECRET-D\n"))).record
            kept = (await store.save("u20", "kept.csv", chunks(b"k\n1\n"))).record
            conversation = uuid.uuid4().hex
            first = await executor.run("u20", conversation, CODE)
            assert first.status == "ok", first.to_json()
            assert sorted(p.name for p in cache.iterdir()) == sorted(
                [kept.id, deleted.id, expired.id]
            )
            await store.delete("u20", deleted.id)
            assert expired.expires_at is not None and kept.expires_at is not None
            moment = expired.expires_at  # kept was saved after it: still live at this moment
            store.clock = lambda: moment
            assert [r.id for r in await store.list("u20")] == [kept.id]
            for session in (conversation, uuid.uuid4().hex):  # the same session, and a new one
                result = await executor.run("u20", session, CODE)
                assert result.status == "ok", result.to_json()
                out = json.loads(result.stdout)
                assert out == {"seen": {kept.id: True}, "data": ["k\n1\n"]}, out
                assert "SECRET" not in result.stdout
                assert [p.name for p in cache.iterdir()] == [kept.id]
