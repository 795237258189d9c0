"""Live output of one execution, on the bot's side: each part validated, taken in order once,
and bounded in total; anything else is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from labbot.remote import wire
from labbot.sandbox.interpreter import OutputHandler

log = logging.getLogger(__name__)

STREAM_DRAIN = 2.0  # seconds to wait for streamed output that is still on its way
MAX_STREAM_CHARS = 1_000_000  # live output passed on per execution; the rest is dropped


class OutputStream:
    """Passes a worker's stream parts for one execution on to ``on_output``.

    stream = OutputStream(on_output)
    sub = await nc.subscribe(subject, cb=stream.on_part)
    ...
    await stream.drain(reply.streamed)  # wait (briefly) for parts still on their way
    """

    def __init__(self, on_output: OutputHandler, *, max_chars: int = MAX_STREAM_CHARS) -> None:
        self.on_output = on_output
        self.max_chars = max_chars
        self.received = 0  # the highest part number taken
        self.chars = 0
        self.dropped = 0
        self._expected: int | None = None
        self._drained = asyncio.Event()

    async def on_part(self, msg: Any) -> None:
        """One part off the wire: a malformed, repeated or out-of-order part is dropped, and so
        is text past ``max_chars``."""
        try:
            part = wire.decode(wire.StreamPart, msg.data)
        except wire.WireError as exc:
            self._drop("stream.bad_part error=%s", exc)
            return
        if part.n <= self.received:
            self._drop("stream.stale_part n=%d received=%d", part.n, self.received)
            return
        self.received = part.n
        if self.chars + len(part.text) > self.max_chars:
            self._drop("stream.over_limit chars=%d", self.chars)
        else:
            self.chars += len(part.text)
            await self.on_output(part.name, part.text)
        if self._expected is not None and self.received >= self._expected:
            self._drained.set()

    def _drop(self, message: str, *args: object) -> None:
        self.dropped += 1
        if self.dropped == 1:  # once per execution: a hostile worker cannot flood the log
            log.warning(message, *args)

    async def drain(self, expected: int) -> None:
        """Wait up to STREAM_DRAIN seconds until part ``expected`` has been taken."""
        self._expected = expected
        if self.received >= expected:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STREAM_DRAIN):
                await self._drained.wait()
