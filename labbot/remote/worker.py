"""``labbot worker``: the agent on a worker machine.

It runs this machine's sessions exactly as a single-machine bot does (session manager, warm pool,
bubblewrap), serves executions over NATS request-reply on its own subject, says it is alive once
a second with its free capacity, and drains on request. It never writes metadata: inputs come in
the request (fetched into a local cache, sha256 checked), outputs go to the blob store under fresh
ids and are named in the reply for the bot to register.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from labbot.config import Settings
from labbot.errors import FileTooLarge, LabbotError
from labbot.files import FileRecord, kinds
from labbot.files.blobs import BlobStore
from labbot.files.cache import BlobCache
from labbot.files.names import new_file_id
from labbot.files.objects import open_blob_store
from labbot.remote import bus
from labbot.sandbox.interpreter import CodeInterpreter

log = logging.getLogger(__name__)


class ShippedFiles:
    """The files of one request: inputs named by the bot, outputs uploaded under fresh ids."""

    def __init__(
        self,
        records: list[FileRecord],
        cache: BlobCache,
        blobs: BlobStore,
        max_file_bytes: int,
    ) -> None:
        self._records = records
        self.cache = cache
        self.blobs = blobs
        self.max_file_bytes = max_file_bytes

    @classmethod
    def from_request(
        cls, user: str, files: list[dict[str, Any]], worker: WorkerAgent
    ) -> ShippedFiles:
        """Rebuild the records the bot sent (only the fields the sandbox needs)."""
        epoch = datetime.fromtimestamp(0, UTC)
        records = [
            FileRecord(
                id=f["id"],
                user=user,
                name=f["name"],
                kind=f["kind"],
                size=int(f["size"]),
                sha256=f["sha256"],
                source="upload",
                created_at=epoch,
                expires_at=None,
            )
            for f in files
        ]
        return cls(records, worker.cache, worker.blobs, worker.settings.max_file_bytes)

    async def records(self, user: str) -> list[FileRecord]:
        """The files the bot sent."""
        return self._records

    async def local(self, record: FileRecord) -> Path | None:
        """The cached copy (fetched now if needed), or None if the blob is gone."""
        try:
            return await self.cache.path(record.user, record.id, record.sha256)
        except FileNotFoundError:
            return None

    async def save_output(
        self, user: str, name: str, chunks: AsyncIterator[bytes]
    ) -> tuple[dict[str, Any], list[str]]:
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
        entry = {
            "id": file_id,
            "name": name,
            "kind": kind.name,
            "size": writer.size,
            "sha256": writer.sha256,
        }
        return entry, []


class WorkerAgent:
    """One worker machine's agent.

    agent = WorkerAgent(settings)
    await agent.serve()   # until stop() or a drain completes
    """

    def __init__(self, settings: Settings, *, blobs: BlobStore | None = None) -> None:
        self.settings = settings
        self.host = settings.LABBOT_HOST_ID
        self.blobs = blobs or open_blob_store(settings)
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
                            bus.heartbeat_subject(self.host), bus.encode(self._status(gone=True))
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

    def _status(self, *, gone: bool = False) -> dict[str, Any]:
        live = self.interpreter.live_sessions
        return {
            "v": bus.PROTOCOL,
            "host": self.host,
            "slots": self.slots,
            "sessions": live,
            "free": 0 if (self.draining or gone) else max(0, self.slots - live),
            "running": self.running,
            "warm": self.interpreter.sessions.warm,
            "draining": self.draining,
            "gone": gone,
        }

    async def _heartbeat(self) -> None:
        subject = bus.heartbeat_subject(self.host)
        while True:
            await self._nc.publish(subject, bus.encode(self._status()))
            if self.draining and self.interpreter.live_sessions == 0 and self.running == 0:
                log.info("worker.drained host=%s", self.host)
                self._stopped.set()
                return
            await asyncio.sleep(self.settings.LABBOT_HEARTBEAT_S)

    async def _on_exec(self, msg: Msg) -> None:
        try:
            request = bus.decode(msg.data)
        except ValueError:
            await msg.respond(bus.encode({"ok": False, "error": "bad request"}))
            return
        task = asyncio.create_task(self._execute(msg, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, msg: Msg, request: dict[str, Any]) -> None:
        user, conversation = request["user"], request["conversation"]
        live = (user, conversation) in self.interpreter.sessions.sessions
        if not live and self.draining:
            await msg.respond(bus.encode({"ok": False, "error": "draining"}))
            return
        files = ShippedFiles.from_request(user, request.get("files", []), self)
        stream = request.get("stream")
        sent = 0

        async def on_output(name: str, text: str) -> None:
            nonlocal sent
            if stream:
                sent += 1
                await self._nc.publish(stream, bus.encode({"n": sent, "name": name, "text": text}))

        self.running += 1
        started = time.perf_counter()
        try:
            result = await self.interpreter.run(
                user, conversation, request["code"], on_output=on_output, files=files
            )
            reply = {
                "ok": True,
                "result": result.to_json(),
                "new_session": not live,
                "streamed": sent,
            }
        except LabbotError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("worker.execute_failed host=%s", self.host)
            reply = {"ok": False, "error": "the worker failed to run the code"}
        finally:
            self.running -= 1
            self.served += 1
        log.info(
            "worker.executed host=%s user=%s ok=%s ms=%.1f",
            self.host,
            user,
            reply["ok"],
            (time.perf_counter() - started) * 1000,
        )
        with contextlib.suppress(Exception):  # the bot may have given up and gone
            await msg.respond(bus.encode(reply))

    async def _on_ctl(self, msg: Msg) -> None:
        try:
            request = bus.decode(msg.data)
            op = request["op"]
        except (ValueError, KeyError):
            await msg.respond(bus.encode({"ok": False, "error": "bad request"}))
            return
        if op == "stop":
            value = await self.interpreter.stop(request["user"], request["conversation"])
        elif op == "reset":
            value = await self.interpreter.reset(request["user"], request["conversation"])
        elif op == "drain":
            self.draining = True
            value = self.interpreter.live_sessions
            log.info("worker.draining host=%s sessions=%d", self.host, value)
        elif op == "status":
            value = self._status()
        else:
            await msg.respond(bus.encode({"ok": False, "error": f"unknown op {op!r}"}))
            return
        await msg.respond(bus.encode({"ok": True, "value": value}))
