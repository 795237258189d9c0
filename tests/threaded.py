"""Loopback servers for tests that drive the `labbot` command in-process (click's CliRunner,
whose commands run their own event loop): the server runs on an event loop in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

S = TypeVar("S")
STEP_TIMEOUT = 15.0


@contextmanager
def served(make: Callable[[], S]) -> Iterator[S]:
    """``make()`` a server with async ``start``/``close``, run it on its own loop in a thread,
    and close it afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="served", daemon=True)
    thread.start()

    async def start() -> Any:
        server: Any = make()
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(STEP_TIMEOUT)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(STEP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STEP_TIMEOUT)
        loop.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
