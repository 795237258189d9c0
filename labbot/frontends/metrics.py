"""What the operator's monitoring sees: the bot's status snapshot (status.py) every few seconds
and, when METRICS_LISTEN is set, a Prometheus endpoint (prometheus-client's own HTTP server, on
its own thread: a scrape never waits on the event loop).

    async with watching(app):        # around the bot, for as long as it runs
        ...

Counters and histograms are fed as things happen (every model request and execution the
budgets record); gauges (sessions, warm pool, file store) are set from each snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from labbot.chat.usage import ExecutionRecord, UsageRecord
from labbot.frontends.status import (
    STATUS_SECONDS,
    file_totals,
    measure_sessions,
    sessions_now,
    status_path,
    write_status,
)

if TYPE_CHECKING:
    from labbot.app import App

log = logging.getLogger(__name__)

KILLED = ("timeout", "memory", "killed")  # the statuses of an execution a limit ended
FILE_TOTALS_EVERY = 6  # snapshots between two walks of the file folder
_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """labbot's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None  # where the endpoint listens, once it does
        self.written = asyncio.Event()  # set after each snapshot is written (tests wait on it)
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("labbot_sessions", "Live sandbox sessions", registry=r)
        self.warm = Gauge("labbot_warm_pool", "Started interpreters in the warm pool", registry=r)
        self.waiting = Gauge(
            "labbot_waiting_executions", "Executions waiting for a slot", registry=r
        )
        self.workers = Gauge("labbot_workers", "Worker machines heard (scaled out)", registry=r)
        self.executions = Counter(
            "labbot_executions", "Executions of the model's code", ["status"], registry=r
        )
        self.kills = Counter(
            "labbot_sandbox_kills", "Executions a sandbox limit ended", ["limit"], registry=r
        )
        self.execution_seconds = Histogram(
            "labbot_execution_seconds", "Time of one execution", buckets=_SECONDS, registry=r
        )
        self.request_seconds = Histogram(
            "labbot_model_request_seconds",
            "Time of one model request",
            ["model"],
            buckets=_SECONDS,
            registry=r,
        )
        self.tokens = Counter(
            "labbot_tokens", "Tokens of model requests", ["model", "direction"], registry=r
        )
        self.cost = Counter(
            "labbot_cost_usd", "US dollars of model requests (priced ones)", ["model"], registry=r
        )
        self.file_bytes = Gauge("labbot_file_store_bytes", "Bytes of stored files", registry=r)
        self.file_count = Gauge("labbot_file_store_files", "Stored files", registry=r)

    def observe(self, entry: UsageRecord | ExecutionRecord) -> None:
        """Count one model request or execution (a Budgets observer)."""
        if isinstance(entry, ExecutionRecord):
            self.executions.labels(entry.status).inc()
            self.execution_seconds.observe(entry.duration_ms / 1000)
            if entry.status in KILLED:
                self.kills.labels(entry.status).inc()
            return
        self.request_seconds.labels(entry.model).observe(entry.duration_ms / 1000)
        self.tokens.labels(entry.model, "input").inc(entry.input_tokens)
        self.tokens.labels(entry.model, "cached").inc(entry.cached_tokens)
        self.tokens.labels(entry.model, "output").inc(entry.output_tokens)
        if entry.cost_usd is not None:
            self.cost.labels(entry.model).inc(float(entry.cost_usd))

    def refresh(self, status: dict[str, Any]) -> None:
        """Set the gauges from a status snapshot."""
        self.sessions.set(len(status["sessions"]))
        self.warm.set(status.get("warm_pool", 0))
        self.waiting.set(status.get("waiting_executions", 0))
        self.workers.set(len(status.get("workers", [])))
        if "files" in status:
            self.file_bytes.set(status["files"]["bytes"])
            self.file_count.set(status["files"]["files"])


def listen_address(value: str) -> tuple[str, int]:
    """``127.0.0.1:9108`` or ``[::1]:9108`` as (host, port)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def snapshot(app: App, *, files: dict[str, int] | None) -> dict[str, Any]:
    """The status as `labbot status` reads it."""
    sessions, pool = sessions_now(app)
    measured = await asyncio.to_thread(measure_sessions, sessions)
    data: dict[str, Any] = {
        "written_at": datetime.now(UTC).isoformat(),
        "pid": os.getpid(),
        "host": app.settings.LABBOT_HOST_ID,
        "executor": app.settings.LABBOT_EXECUTOR,
        "sessions": measured,
        **pool,
    }
    if files is not None:
        data["files"] = files
    return data


@asynccontextmanager
async def watching(app: App, *, interval: float = STATUS_SECONDS) -> AsyncIterator[Metrics]:
    """Write the status snapshot every ``interval`` seconds and, with METRICS_LISTEN, serve
    the metrics; both stop when the block ends."""
    metrics = Metrics()
    if app.engine is not None:
        app.engine.budgets.observers.append(metrics.observe)
    server = None
    if app.settings.METRICS_LISTEN:
        host, port = listen_address(app.settings.METRICS_LISTEN)
        server, _ = start_http_server(port, addr=host, registry=metrics.registry)
        metrics.address = (host, int(server.server_address[1]))
        log.info("metrics.listening address=%s", app.settings.METRICS_LISTEN)
    task = asyncio.create_task(_keep_status(app, metrics, interval))
    try:
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        if app.engine is not None:
            app.engine.budgets.observers.remove(metrics.observe)


async def _keep_status(app: App, metrics: Metrics, interval: float) -> None:
    path = status_path(app.settings.LABBOT_DATA_DIR)
    blobs = app.settings.LABBOT_BLOB_URL
    folder = app.settings.files_dir if not blobs else Path(urlsplit(blobs).path)
    local = not blobs or blobs.startswith("file:")  # object storage: no file totals here
    files: dict[str, int] | None = None
    tick = 0
    while True:
        try:
            if local and tick % FILE_TOTALS_EVERY == 0:
                files = await asyncio.to_thread(file_totals, folder)
            data = await snapshot(app, files=files)
            metrics.refresh(data)
            await asyncio.to_thread(write_status, path, data)
            metrics.written.set()
        except OSError as exc:  # a full disk: the next snapshot tries again
            log.warning("status.write_failed error=%s", type(exc).__name__)
        tick += 1
        await asyncio.sleep(interval)  # a period, not a synchronisation
