"""The download endpoint serving a large file: throughput, and how much the server process's
memory grows (peak RSS during the download, minus RSS before it). The client is curl in another
process, so only the server is measured. Blobs on local disk go out with sendfile; blobs in
object storage (SeaweedFS's S3 on loopback, as the tests start it) chunk by chunk.

Run: .venv/bin/python bench/downloads.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labbot.files import FileStore, Limits, LocalBlobStore, SqliteMetadataStore  # noqa: E402
from labbot.files.objects import ObjectBlobStore  # noqa: E402
from labbot.frontends.web.links import LinkSigner  # noqa: E402
from labbot.frontends.web.server import serve_downloads  # noqa: E402
from tests.servers import S3, seaweedfs  # noqa: E402

MIB = 1024 * 1024


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


async def one(where: str, folder: Path, size_mib: int, s3: S3 | None) -> tuple[float, float]:
    if s3 is None:
        blobs: LocalBlobStore | ObjectBlobStore = LocalBlobStore(folder / "files")
    else:
        env = s3.env(prefix="bench")
        blobs = ObjectBlobStore.from_url(
            env["LABBOT_BLOB_URL"],
            endpoint=s3.endpoint,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
        )
    store = FileStore(
        SqliteMetadataStore(folder / f"{where}.sqlite3"),
        blobs,
        Limits(5, 1024 * MIB, 2048 * MIB, timedelta(hours=1)),
    )
    await store.start()
    block = bytes(MIB)

    async def chunks():
        for _ in range(size_mib):
            yield block

    record = (await store.save("u", "big.bin", chunks())).record
    signer = LinkSigner(b"bench-secret-bench-secret", "http://unset")
    async with serve_downloads(store, signer, "127.0.0.1:0") as address:
        signer.public_url = address
        url = signer.url("u", record.id)
        reset_peak()  # the peak counts from here
        before = rss_kib("VmRSS")
        start = time.perf_counter()
        curl = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await curl.communicate()
        seconds = time.perf_counter() - start
        grown = (rss_kib("VmHWM") - before) / 1024
    await store.close()
    assert int(out) == size_mib * MIB, out
    return size_mib / seconds, grown


async def main(quick: bool) -> None:
    size = 50 if quick else 200
    print(f"download of a {size} MiB file through a signed link (curl as the client)")
    print(f"{'blobs':<24}{'MiB/s':>10}{'server RSS growth MiB':>24}")
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp) / "s3") as s3:
        for where, label, server in (
            ("local", "local disk (sendfile)", None),
            ("s3", "S3 (streamed)", s3),
        ):
            speed, grown = await one(where, Path(tmp), size, server)
            print(f"{label:<24}{speed:>10.0f}{grown:>24.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
