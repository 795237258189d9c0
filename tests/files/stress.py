"""Several processes saving, deleting, listing and sweeping on one data dir at once, one of them
killed with SIGKILL midway; then every acknowledged save must be there, intact.

Used by tests/files/test_shared_store.py (a short run) and bench/store_stress.py (a minute).
The SQLite run uses real processes: the bot (``open_app`` with its sweeper), two terminal
chats (``open_app``), and the real `labbot files add/list/rm/sweep` commands. The
MongoDB run uses tasks in one process (the stand-in cannot be shared between processes), each
with its own FileStore on one database and one blob folder, as processes would have.

A worker process: ``python -m tests.files.stress DATA_DIR bot|chat NAME`` prints one
JSON line per event: {"saved": [user, id, sha256]}, {"deleting": [user, id]} before a delete
and {"deleted": [user, id]} after it, {"missing": [user, id]} when a listing lacks a file it
saved and did not delete, {"error": "..."} for any call that failed, and {"done": n} at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, closing
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from labbot.app import open_app, open_store
from labbot.config import load_settings
from labbot.files import FileStore

LABBOT = str(Path(sys.executable).with_name("labbot"))
ROOT = Path(__file__).resolve().parents[2]
USERS = [f"u{n:02d}" for n in range(12)]  # shared by every process: listings see each other
EPHEMERAL = "ephemeral"  # saved with a lifetime of about a second, for the sweepers
# High limits: nothing is evicted, so every acknowledged save must still be there.
SETTINGS = {
    "MAX_FILES_PER_USER": "10000",
    "MAX_STORAGE_MB_PER_USER": "100000",
    "LABBOT_SANDBOX": "off",  # no code runs: the bot's stores only
    "SANDBOX_WARM_POOL": "0",
}
SHORT_LIFETIME_HOURS = "0.0003"  # about a second
LIST_EVERY = 4  # a worker lists after every 4th save
DELETE_EVERY = 5  # and deletes one of its files after every 5th
# A long-running worker's pause between steps: load shaping, not synchronisation. Unpaced, the
# three of them took both cores and the CLI commands (a second of CPU each) barely ran.
PACE = 0.03


@dataclass
class Ledger:
    """What the clients were told: acknowledged saves and deletes, failures."""

    saved: dict[tuple[str, str], str] = field(default_factory=dict)  # (user, id) -> sha256
    deleted: set[tuple[str, str]] = field(default_factory=set)
    in_flight: set[tuple[str, str]] = field(default_factory=set)  # a delete cut short
    by: dict[str, int] = field(default_factory=dict)  # acknowledged saves per worker
    ephemeral: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # seen missing mid-run
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    cut: int = 0  # commands killed at the deadline  # CLI commands run

    def take(self, event: dict[str, Any]) -> None:
        """Record one worker event."""
        if "saved" in event:
            user, file_id, sha = event["saved"]
            if user == EPHEMERAL:
                self.ephemeral += 1
            else:
                self.saved[(user, file_id)] = sha
        elif "deleting" in event:
            self.in_flight.add(tuple(event["deleting"]))  # type: ignore[arg-type]
        elif "deleted" in event:
            key: tuple[str, str] = tuple(event["deleted"])  # type: ignore[assignment]
            self.in_flight.discard(key)
            self.deleted.add(key)
        elif "missing" in event:
            self.missing.append(tuple(event["missing"]))  # type: ignore[arg-type]
        elif "error" in event:
            self.failures.append(event["error"])

    def emitter(self, name: str) -> Callable[[dict[str, Any]], None]:
        """Where the worker ``name`` reports its events (its saves counted apart)."""

        def emit(event: dict[str, Any]) -> None:
            self.take(event)
            if "saved" in event:
                self.by[name] = self.by.get(name, 0) + 1

        return emit

    def expected(self) -> dict[tuple[str, str], str]:
        """The saves that must be present: acknowledged, and not deleted (even maybe)."""
        gone = self.deleted | self.in_flight
        return {key: sha for key, sha in self.saved.items() if key not in gone}


class ErrorsAreFailures(logging.Handler):
    """Counts every error labbot logs (a sweeper pass that failed is logged, not raised)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.report = report
        self.guard = threading.Lock()  # records come from worker threads too

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.report(f"logged: {record.getMessage()} {record.exc_info and record.exc_info[1]!r}")


@dataclass
class Counts:
    """The outcome: the figures the closing note reports."""

    acknowledged: int
    deleted: int
    expected: int
    found: int
    intact: int
    ephemeral: int
    ephemeral_left: int  # records of short-lived files the sweepers had not removed at the end
    calls: int
    cut: int
    failures: list[str]
    missing_midway: int
    integrity: str
    missing_blobs: int
    killed: str  # who, and when
    killed_after: int  # the saves it had acknowledged


# ----- one client's work, the same for every backend ------------------------------------------


async def churn(
    store: FileStore,
    emit: Callable[[dict[str, Any]], None],
    *,
    name: str,
    deadline: float,
    seed: int,
    pace: float = PACE,
) -> int:
    """Save, list and delete until ``deadline`` (loop time), reporting each acknowledged step;
    a failed call is reported and the work goes on. Returns the number of saves."""
    rng = random.Random(seed)
    mine: dict[str, list[str]] = {user: [] for user in USERS}
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < deadline:
        n += 1
        user = rng.choice(USERS)
        body = f"{name} {n} {rng.getrandbits(64):x}\n".encode() * rng.randint(1, 40)
        try:
            record = (await store.save(user, f"{name}-{n}.txt", chunks(body))).record
            emit({"saved": [user, record.id, record.sha256]})
            mine[user].append(record.id)
            if n % LIST_EVERY == 0:
                listed = {r.id for r in await store.list(user)}
                for file_id in mine[user]:
                    if file_id not in listed:
                        emit({"missing": [user, file_id]})
            if n % DELETE_EVERY == 0:
                victim = rng.choice(USERS)
                if mine[victim]:
                    file_id = mine[victim].pop(rng.randrange(len(mine[victim])))
                    emit({"deleting": [victim, file_id]})
                    await store.delete(victim, file_id)
                    emit({"deleted": [victim, file_id]})
        except Exception as exc:  # every failure is counted, none ends the run
            emit({"error": f"{name}: {type(exc).__name__}: {exc}"})
        await asyncio.sleep(pace)
    return n


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    """An upload stream of one chunk."""
    yield body


async def verify(store: FileStore, ledger: Ledger) -> tuple[int, int, int]:
    """(found, intact, missing blobs): acknowledged saves listed with their sha256, the bytes of
    each read back and checked, and records whose bytes are gone (reconcile counts them)."""
    expected = ledger.expected()
    listed: dict[tuple[str, str], str] = {}
    for user in USERS:
        listed.update({(user, r.id): r.sha256 for r in await store.list(user)})
    found = [key for key, sha in expected.items() if listed.get(key) == sha]
    intact = 0
    for user, file_id in found:
        data = await store.read_bytes(user, file_id)  # checked against size and sha256
        intact += hashlib.sha256(data).hexdigest() == expected[(user, file_id)]
    repaired = await store.reconcile(min_age=timedelta(0))
    return len(found), intact, repaired.missing_blobs


# ----- the SQLite run: real processes ----------------------------------------------------------


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of every process: the data dir, the high limits, nothing else of ours."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("LABBOT_", "FILE_", "MAX_"))}
    return keep | SETTINGS | {"LABBOT_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)} | extra


async def worker_main(data_dir: str, role: str, name: str) -> None:
    """A long-running process that opens everything the bot opens (``open_app``: three stores,
    each migrating); ``bot`` also runs the sweeper, ``chat`` does not (as `labbot chat`). It
    says "ready", then reads its deadline (a time.monotonic() value) from stdin."""
    settings = load_settings(LABBOT_DATA_DIR=Path(data_dir))

    def emit(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    logging.basicConfig(level=logging.WARNING)  # to the worker's log file
    logging.getLogger("labbot").addHandler(ErrorsAreFailures(lambda m: emit({"error": m})))
    async with AsyncExitStack() as stack:
        store = (await stack.enter_async_context(open_app(settings))).store
        if role == "bot":
            sweeper = asyncio.create_task(store.run_sweeper(0.2))

            async def stop() -> None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)

            stack.push_async_callback(stop)
        emit({"ready": name})
        deadline = float(await asyncio.to_thread(sys.stdin.readline))
        n = await churn(store, emit, name=name, deadline=deadline, seed=zlib.crc32(name.encode()))
    emit({"done": n})


@dataclass
class Worker:
    """A long-running worker process as the run sees it."""

    name: str
    proc: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    saved: asyncio.Event = field(default_factory=asyncio.Event)  # its first acknowledged save
    reader: asyncio.Task[None] | None = None

    async def read_events(self, ledger: Ledger) -> None:
        """Feed the worker's events into the ledger as they come."""
        assert self.proc.stdout is not None
        emit = ledger.emitter(self.name)
        async for line in self.proc.stdout:
            event = json.loads(line)
            if "ready" in event:
                self.ready.set()
            elif "done" not in event:
                emit(event)
                if "saved" in event:
                    self.saved.set()

    async def go(self, deadline: float) -> None:
        """Tell the worker when to stop, which starts it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{deadline!r}\n".encode())
        await self.proc.stdin.drain()


async def cli(data_dir: Path, ledger: Ledger, deadline: float, *args: str, **env: str) -> Any:
    """One real `labbot ... --json` command; its output, or None when it failed (counted).
    One still running at the deadline is killed with SIGKILL (counted as cut, not failed: it
    acknowledged nothing), so the run ends on time."""
    proc = await asyncio.create_subprocess_exec(
        LABBOT,
        *args,
        "--json",
        env=environment(data_dir, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    ledger.calls += 1
    loop = asyncio.get_running_loop()
    limit = loop.time() + 120
    try:
        async with asyncio.timeout_at(min(deadline, limit)):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        if loop.time() >= limit:
            ledger.failures.append(f"labbot {args[:2]} did not finish in 120 s")
        else:
            ledger.cut += 1
        return None
    if proc.returncode != 0:
        ledger.failures.append(f"labbot {args[:2]} exit {proc.returncode}: {err.decode()[-500:]}")
        return None
    return json.loads(out)


async def cli_client(
    data_dir: Path, ledger: Ledger, tmp: Path, name: str, deadline: float, seed: int
) -> None:
    """Run `labbot files add` (three files a time), `files list` and `files rm` until the
    deadline, each a new process, recording what they acknowledged."""
    rng = random.Random(seed)
    mine: dict[str, list[str]] = {user: [] for user in USERS}
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < deadline:
        n += 1
        user = rng.choice(USERS)
        paths = []
        for i in range(3):
            path = tmp / f"{name}-{n}-{i}.csv"
            path.write_bytes(f"a,b\n{name},{n}\n{rng.getrandbits(64)},{i}\n".encode())
            paths.append(str(path))
        added = await cli(data_dir, ledger, deadline, "files", "add", *paths, "--user", user)
        for entry in added or []:
            ledger.take({"saved": [user, entry["id"], entry["sha256"]]})
            mine[user].append(entry["id"])
        if loop.time() >= deadline:  # a command takes a second or more: start none late
            break
        listed = await cli(data_dir, ledger, deadline, "files", "list", "--user", user)
        for file_id in mine[user] if listed is not None else []:
            if file_id not in {r["id"] for r in listed}:
                ledger.take({"missing": [user, file_id]})
        if n % 2 == 0 and mine[user] and loop.time() < deadline:
            file_id = mine[user].pop(rng.randrange(len(mine[user])))
            ledger.take({"deleting": [user, file_id]})
            if await cli(data_dir, ledger, deadline, "files", "rm", file_id, "--user", user):
                ledger.take({"deleted": [user, file_id]})


async def cli_sweeper(data_dir: Path, ledger: Ledger, tmp: Path, deadline: float) -> None:
    """Save files that expire within a second (`files add` with a short lifetime) and run
    `labbot files sweep`, in turn, until the deadline."""
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < deadline:
        n += 1
        path = tmp / f"ephemeral-{n}.txt"
        path.write_bytes(f"short-lived {n}\n".encode())
        added = await cli(
            data_dir,
            ledger,
            deadline,
            *("files", "add", str(path), "--user", EPHEMERAL),
            FILE_EXPIRATION_HOURS=SHORT_LIFETIME_HOURS,
        )
        ledger.ephemeral += len(added or [])
        if loop.time() >= deadline:
            break
        await cli(data_dir, ledger, deadline, "files", "sweep")


async def start_worker(data_dir: Path, role: str, name: str, ledger: Ledger) -> Worker:
    """Start a long-running worker process and the task that reads its events."""
    with (data_dir.parent / f"{name}.log").open("wb") as log:  # the worker's log, to read back
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.files.stress", str(data_dir), role, name),
            env=environment(data_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    worker = Worker(name, proc)
    worker.reader = asyncio.create_task(worker.read_events(ledger))
    return worker


async def run_sqlite(data_dir: Path, seconds: float, *, cli_clients: int = 2) -> Counts:
    """The bot, two chats (one killed with SIGKILL halfway), ``cli_clients`` loops of
    `labbot files add/list/rm` and one of `files add` (short-lived) + `files sweep`, for
    ``seconds`` once every worker is ready; then the check, in this process, with a fresh
    store."""
    ledger = Ledger()
    tmp = data_dir.parent / "uploads"
    tmp.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    # All at once on a fresh data dir: three processes create the database together.
    workers = [
        await start_worker(data_dir, "bot", "bot", ledger),
        await start_worker(data_dir, "chat", "chat-1", ledger),
        await start_worker(data_dir, "chat", "chat-2", ledger),
    ]
    async with asyncio.timeout(60):
        await asyncio.gather(*(w.ready.wait() for w in workers))
    # One deadline for all: loop.time() is time.monotonic(), one clock for the whole machine.
    deadline = loop.time() + seconds
    for worker in workers:
        await worker.go(deadline)
    clients = [
        *(cli_client(data_dir, ledger, tmp, f"cli-{i}", deadline, i) for i in range(cli_clients)),
        cli_sweeper(data_dir, ledger, tmp, deadline),
    ]
    victim = workers[2]

    async def kill_halfway() -> str:
        # The middle of the run (a moment chosen, not a synchronisation), once it has saved.
        await asyncio.sleep(seconds / 2)
        async with asyncio.timeout(60):
            await victim.saved.wait()
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        return f"chat-2 (SIGKILL) at {loop.time() - deadline + seconds:.0f} s"

    killed, *_ = await asyncio.gather(kill_halfway(), *clients)
    for worker in workers:
        async with asyncio.timeout(120):
            code = await worker.proc.wait()
            await worker.reader  # type: ignore[misc]
        if worker is not victim and code != 0:
            ledger.failures.append(f"{worker.name} exit {code}: {tail(data_dir.parent)}")
    settings = load_settings(LABBOT_DATA_DIR=data_dir)
    with closing(sqlite3.connect(settings.database_path)) as db:
        integrity = ", ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
        query = "SELECT count(*) FROM files WHERE user = ?"
        (left,) = db.execute(query, (EPHEMERAL,)).fetchone()
    async with open_store(settings) as store:
        found, intact, missing_blobs = await verify(store, ledger)
    return counts(
        ledger,
        found,
        intact,
        integrity=integrity,
        missing_blobs=missing_blobs,
        ephemeral_left=left,
        killed=killed,
    )


# ----- the MongoDB run: tasks in one process ---------------------------------------------------


async def run_mongo(database: Any, blobs_dir: Path, seconds: float) -> Counts:
    """The same run on MongoDB, each "process" a FileStore of its own on one database and one
    blob folder: the bot (with its sweeper), two chats (one cancelled halfway, the nearest to
    a kill one process allows), CLI-like clients that open a store for each command, and
    short-lived saves swept."""
    from labbot.files import Limits
    from labbot.files.blobs import LocalBlobStore
    from labbot.files.meta.mongo import MongoMetadataStore

    ledger = Ledger()
    limits = Limits(
        max_files=10_000, max_file_bytes=2**30, max_total_bytes=2**40, lifetime=timedelta(hours=48)
    )

    @asynccontextmanager
    async def opened(lifetime: timedelta | None = None) -> AsyncIterator[FileStore]:
        these = replace(limits, lifetime=lifetime) if lifetime else limits
        store = FileStore(MongoMetadataStore(database), LocalBlobStore(blobs_dir), these)
        await store.start()
        try:
            yield store
        finally:
            await store.close()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    victim_saved = asyncio.Event()

    async def long_running(name: str, *, sweeper: bool = False) -> None:
        emit = ledger.emitter(name)

        def report(event: dict[str, Any]) -> None:
            emit(event)
            if "saved" in event and name == "chat-2":
                victim_saved.set()

        async with opened() as store:
            sweeping = asyncio.create_task(store.run_sweeper(0.2)) if sweeper else None
            try:
                await churn(store, report, name=name, deadline=deadline, seed=len(name))
            finally:
                if sweeping is not None:
                    sweeping.cancel()
                    await asyncio.gather(sweeping, return_exceptions=True)

    async def command_client(name: str, seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < deadline:
            ledger.calls += 1
            async with opened() as store:  # a new "process" for each command
                await churn(
                    store,
                    ledger.emitter(name),
                    name=name,
                    deadline=loop.time() + 0.05,
                    seed=rng.getrandbits(32),
                )

    async def short_lived() -> None:
        n = 0
        while loop.time() < deadline:
            n += 1
            async with opened(lifetime=timedelta(seconds=1)) as store:
                try:
                    await store.save(EPHEMERAL, f"short-{n}.txt", chunks(b"short-lived"))
                    ledger.ephemeral += 1
                    await store.sweep()
                except Exception as exc:
                    ledger.failures.append(f"short-lived: {type(exc).__name__}: {exc}")
            await asyncio.sleep(PACE)

    errors = ErrorsAreFailures(ledger.failures.append)
    logging.getLogger("labbot").addHandler(errors)
    try:
        victim = asyncio.create_task(long_running("chat-2"))
        tasks = [
            asyncio.create_task(long_running("bot", sweeper=True)),
            asyncio.create_task(long_running("chat-1")),
            asyncio.create_task(command_client("cli-0", 0)),
            asyncio.create_task(command_client("cli-1", 1)),
            asyncio.create_task(short_lived()),
        ]
        await asyncio.sleep(seconds / 2)  # the middle of the run (a moment, not a synchronisation)
        async with asyncio.timeout(60):
            await victim_saved.wait()  # once it has saved
        victim.cancel()
        await asyncio.gather(victim, return_exceptions=True)
        killed = f"chat-2 (cancelled) at {loop.time() - deadline + seconds:.0f} s"
        await asyncio.gather(*tasks)
    finally:
        logging.getLogger("labbot").removeHandler(errors)
    async with opened() as store:
        found, intact, missing_blobs = await verify(store, ledger)
    left = await database["files"].count_documents({"user": EPHEMERAL})
    return counts(
        ledger,
        found,
        intact,
        integrity="n/a (MongoDB)",
        missing_blobs=missing_blobs,
        ephemeral_left=left,
        killed=killed,
    )


def tail(folder: Path) -> str:
    """The last lines of the workers' logs (why one failed)."""
    return " | ".join(p.read_text()[-800:] for p in sorted(folder.glob("*.log")))


def counts(
    ledger: Ledger,
    found: int,
    intact: int,
    *,
    integrity: str,
    missing_blobs: int,
    ephemeral_left: int,
    killed: str,
) -> Counts:
    victim = killed.split()[0]
    """The run's figures from its ledger and its check."""
    return Counts(
        acknowledged=len(ledger.saved),
        deleted=len(ledger.deleted),
        expected=len(ledger.expected()),
        found=found,
        intact=intact,
        ephemeral=ledger.ephemeral,
        ephemeral_left=ephemeral_left,
        calls=ledger.calls,
        cut=ledger.cut,
        failures=ledger.failures,
        missing_midway=len(ledger.missing),
        integrity=integrity,
        missing_blobs=missing_blobs,
        killed=killed,
        killed_after=ledger.by.get(victim, 0),
    )


if __name__ == "__main__":
    asyncio.run(worker_main(sys.argv[1], sys.argv[2], sys.argv[3]))
