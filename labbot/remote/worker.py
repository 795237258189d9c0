"""``labbot worker``: the agent on a worker machine.

It runs this machine's sessions exactly as a single-machine bot does (sessions, warm pool,
bubblewrap), serves executions over NATS request-reply on its own subject, says it is alive once
a second with its free capacity, and drains on request. It never writes metadata: inputs come in
the request (fetched into a local cache, sha256 checked), outputs go to the blob store under fresh
ids and are named in the reply for the bot to register. A request names every live file of its
user, so the cached copies of that user's other files (deleted or expired) go before it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError

from labbot.config import Settings
from labbot.core import FileRef, OutputFile
from labbot.errors import FileTooLarge, LabbotError
from labbot.files import kinds
from labbot.files.blobs import BlobStore
from labbot.files.cache import BlobCache
from labbot.files.names import new_file_id
from labbot.remote import bus, wire
from labbot.remote.checkpoints import ShippedPieces
from labbot.sandbox.checkpoints import PieceStore
from labbot.sandbox.files import FilesNow
from labbot.sandbox.interpreter import CodeInterpreter

log = logging.getLogger(__name__)


class ShippedFiles:
    """The files of one request: inputs named by the bot, outputs uploaded under fresh ids
    (``uploaded`` keeps each output's sha256 for the reply)."""

    def __init__(
        self, refs: list[FileRef], cache: BlobCache, blobs: BlobStore, max_file_bytes: int
    ) -> None:
        self._refs = refs
        self.cache = cache
        self.blobs = blobs
        self.max_file_bytes = max_file_bytes
        self.uploaded: dict[str, str] = {}
        self.pieces: PieceStore | None = (
            None  # checkpoints are kept by the bot (not yet carried over the wire)
        )

    @classmethod
    def from_request(cls, files: list[wire.FileRef], worker: WorkerAgent) -> ShippedFiles:
        """The files the bot sent."""
        refs = [f.core() for f in files]
        return cls(refs, worker.cache, worker.blobs, worker.settings.max_file_bytes)

    async def look(self, user: str, conversation: str) -> FilesNow:
        """The files the bot sent (every live file of the user): the cached copies of the
        user's other files (deleted or expired since) are removed first, so none is used."""
        await self.cache.retain(user, [ref.id for ref in self._refs])
        return FilesNow(self._refs)

    async def local(self, user: str, ref: FileRef) -> Path | None:
        """The cached copy (fetched now if needed), or None if the blob is gone."""
        try:
            return await self.cache.path(user, ref.id, ref.sha256, ref.size)
        except FileNotFoundError:
            return None

    async def save_output(
        self, user: str, name: str, chunks: AsyncIterator[bytes]
    ) -> tuple[OutputFile, list[str]]:
        """Upload the file under a fresh id; the bot registers it (limits, eviction)."""
        file_id = new_file_id()
        writer = await self.blobs.writer(user, file_id, head_bytes=kinds.HEAD_BYTES)
        try:
            async for chunk in chunks:
                if writer.size + len(chunk) > self.max_file_bytes:
                    raise FileTooLarge(limit_bytes=self.max_file_bytes)
                await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await asyncio.shield(writer.abort())
            raise
        kind = await asyncio.to_thread(kinds.detect_kind, name, writer.head, writer.local_path)
        self.uploaded[file_id] = writer.sha256
        return OutputFile(file_id, name, kind.name, writer.size), []

    def wire_files(self, made: tuple[OutputFile, ...]) -> list[wire.FileRef]:
        """The outputs as the reply names them, sha256 included."""
        return [
            wire.FileRef(id=f.id, name=f.name, kind=f.kind, size=f.size, sha256=self.uploaded[f.id])
            for f in made
        ]


class WorkerAgent:
    """One worker machine's agent.

    agent = WorkerAgent(settings)
    await agent.serve()   # until stop() or a drain completes
    """

    def __init__(self, settings: Settings, *, blobs: BlobStore) -> None:
        self.settings = settings
        self.host = settings.LABBOT_HOST_ID
        self.blobs = blobs
        cache_bytes = int(settings.LABBOT_BLOB_CACHE_MAX_GB * 1024**3)
        self.cache = BlobCache(self.blobs, settings.blob_cache_dir, max_bytes=cache_bytes)
        sized = settings.model_copy(update={"MAX_SESSIONS": settings.host_slots})
        self.interpreter = CodeInterpreter(
            sized, None, files=ShippedFiles([], self.cache, self.blobs, settings.max_file_bytes)
        )
        self.slots = settings.host_slots
        self.draining = False
        self.running = 0
        self.served = 0
        self._stopped = asyncio.Event()
        self._nc: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        """Connect, serve until stopped (or drained), then close everything."""
        await self.blobs.start()
        await self.interpreter.start()
        try:
            self._nc = await bus.connect(self.settings, f"labbot-worker-{self.host}")
            try:
                await self._nc.subscribe(bus.exec_subject(self.host), cb=self._on_exec)
                await self._nc.subscribe(bus.ctl_subject(self.host), cb=self._on_ctl)
                await self._nc.flush()
                beats = asyncio.create_task(self._heartbeat())
                log.info("worker.ready host=%s slots=%d", self.host, self.slots)
                try:
                    await self._stopped.wait()
                finally:
                    beats.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beats
                    with contextlib.suppress(Exception):
                        await self._nc.publish(
                            bus.heartbeat_subject(self.host), wire.encode(self._status(gone=True))
                        )
            finally:
                with contextlib.suppress(Exception):
                    await self._nc.drain()
        finally:
            await self.interpreter.close()
            await self.blobs.close()
            log.info("worker.stopped host=%s served=%d", self.host, self.served)

    def stop(self) -> None:
        """End ``serve`` now (live sessions are lost; bots re-place them)."""
        self._stopped.set()

    def _status(self, *, gone: bool = False) -> wire.Heartbeat:
        live = self.interpreter.live_sessions
        return wire.Heartbeat(
            slots=self.slots,
            sessions=live,
            free=0 if (self.draining or gone) else max(0, self.slots - live),
            running=self.running,
            warm=self.interpreter.sessions.warm,
            draining=self.draining,
            gone=gone,
            timeout=self.settings.CODE_EXECUTION_TIMEOUT,
        )

    async def _heartbeat(self) -> None:
        subject = bus.heartbeat_subject(self.host)
        while True:
            await self._nc.publish(subject, wire.encode(self._status()))
            if self.draining and self.interpreter.live_sessions == 0 and self.running == 0:
                log.info("worker.drained host=%s", self.host)
                self._stopped.set()
                return
            await asyncio.sleep(self.settings.LABBOT_HEARTBEAT_S)

    async def _on_exec(self, msg: Msg) -> None:
        try:
            request = wire.decode(wire.ExecRequest, msg.data)
        except wire.WireError as exc:
            log.warning("worker.bad_request host=%s reason=%s error=%s", self.host, exc.reason, exc)
            await self._answer(msg, _refusal(f"bad request: {exc}", exc.reason))
            return
        own = self.settings.CODE_EXECUTION_TIMEOUT
        if request.timeout < own:  # the bot would take this worker for lost and run it again
            refusal = _refusal(time_limit_refusal(own, request.timeout), "time_limit")
            await self._answer(msg, refusal)
            return
        task = asyncio.create_task(self._execute(msg, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, msg: Msg, request: wire.ExecRequest) -> None:
        user, conversation = request.user, request.conversation
        live = (user, conversation) in self.interpreter.sessions.sessions
        if not live and self.draining:
            await self._answer(msg, _refusal("draining", "draining"))
            return
        files = ShippedFiles.from_request(request.files, self)
        if request.checkpoint is not None:
            files.pieces = ShippedPieces(request.checkpoint, self.blobs)
        parts = 0

        async def on_output(name: str, text: str) -> None:
            nonlocal parts
            if request.stream is None or name not in ("stdout", "stderr"):
                return
            for start in range(0, len(text), wire.MAX_PART_CHARS):  # each part within bounds
                if parts >= wire.MAX_PARTS:
                    return  # the bot would drop them: the result still has the output
                parts += 1
                part = wire.StreamPart(
                    n=parts,
                    name="stderr" if name == "stderr" else "stdout",
                    text=text[start : start + wire.MAX_PART_CHARS],
                )
                await self._nc.publish(request.stream, wire.encode(part))

        self.running += 1
        started = time.perf_counter()
        try:
            result = await self.interpreter.run(
                user, conversation, request.code, on_output=on_output, files=files
            )
            reply = wire.ExecReply(
                ok=True,
                result=wire.Result.of(result, files.wire_files(result.files)),
                new_session=not live,
                streamed=parts,
                checkpoint=files.pieces.reply()
                if isinstance(files.pieces, ShippedPieces)
                else None,
            )
        except LabbotError as exc:
            reply = _refusal(str(exc)[: wire.MAX_ERROR_CHARS], "failed")
        except ValidationError as exc:  # the sandbox made a result the wire cannot carry
            log.error("worker.result_out_of_bounds host=%s error=%s", self.host, wire.describe(exc))
            reply = _refusal("the result was outside the limits a worker may send", "failed")
        except Exception:
            log.exception("worker.execute_failed host=%s", self.host)
            reply = _refusal("the worker failed to run the code", "failed")
        finally:
            self.running -= 1
            self.served += 1
        log.info(
            "worker.executed host=%s user=%s ok=%s ms=%.1f",
            self.host,
            user,
            reply.ok,
            (time.perf_counter() - started) * 1000,
        )
        await self._answer(msg, reply)

    async def _answer(self, msg: Msg, reply: wire.ExecReply | wire.CtlReply) -> None:
        """Respond, unless the bot has given up and gone; a reply too large for the broker
        becomes an error that says so."""
        data = wire.encode(reply)
        if len(data) > self._nc.max_payload:
            log.error("worker.reply_too_large host=%s bytes=%d", self.host, len(data))
            error = "the result is too large to send back; print less"
            data = wire.encode(type(reply)(ok=False, error=error, reason="too_large"))
        with contextlib.suppress(Exception):
            await msg.respond(data)

    async def _on_ctl(self, msg: Msg) -> None:
        try:
            request = wire.decode(wire.CtlRequest, msg.data)
        except wire.WireError as exc:
            error = f"bad request: {exc}"[: wire.MAX_ERROR_CHARS]
            await self._answer(msg, wire.CtlReply(ok=False, error=error, reason=exc.reason))
            return
        value: bool | int | wire.Heartbeat
        user, conversation = request.user or "", request.conversation or ""
        if request.op == "stop":
            value = await self.interpreter.stop(user, conversation)
        elif request.op == "reset":
            value = await self.interpreter.reset(user, conversation)
        elif request.op == "drain":
            self.draining = True
            value = self.interpreter.live_sessions
            log.info("worker.draining host=%s sessions=%d", self.host, value)
        else:
            value = self._status()
        await self._answer(msg, wire.CtlReply(ok=True, value=value))


def _refusal(error: str, reason: wire.Reason) -> wire.ExecReply:
    return wire.ExecReply(ok=False, error=error[: wire.MAX_ERROR_CHARS], reason=reason)


def time_limit_refusal(own: float, asked: float) -> str:
    """Why a worker refuses a bot whose time limit is shorter than its own."""
    return (
        f"this worker lets code run {own:g} s (CODE_EXECUTION_TIMEOUT), longer than the bot"
        f" waits ({asked:g} s); set the same CODE_EXECUTION_TIMEOUT on the bot and its workers"
    )
