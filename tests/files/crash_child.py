"""A process that saves or sweeps and stops dead at a chosen point, for kill -9 tests.

Usage: python crash_child.py DATA_DIR POINT, where POINT is one of: streaming, recorded-not,
evicting, sweeping. It prints READY when it reaches the point and then waits forever.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from labbot.config import load_settings
from tests.conftest import make_store


async def hang() -> None:
    print("READY", flush=True)
    await asyncio.Event().wait()


async def main(data_dir: str, point: str) -> None:
    settings = load_settings(LABBOT_DATA_DIR=data_dir, MAX_FILES_PER_USER=1)
    store = make_store(settings)
    await store.start()

    async def stream() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        if point == "streaming":
            await hang()
        yield b"y"

    if point == "recorded-not":

        async def add(*args: object, **kwargs: object) -> list:
            await hang()
            return []

        store.meta.add = add  # type: ignore[method-assign]
    if point in ("evicting", "sweeping"):

        async def delete_many(blobs: list[tuple[str, str]]) -> None:
            await hang()

        store.blobs.delete_many = delete_many  # type: ignore[method-assign]
    if point == "sweeping":
        store.clock = lambda: datetime.now(UTC) + timedelta(days=3)
        await store.sweep()
    await store.save("u", "victim.bin", stream())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
