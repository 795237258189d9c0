"""The one composition root: the only module that knows every backend (SQLite or MongoDB for
metadata, a folder or S3 for bytes, sandboxes here or on NATS workers). The bot, every CLI
command, the worker and the benches get their parts from here, opened in order and closed in
reverse.

    async with open_app(settings) as app:        # everything a front end needs
        async for event in app.engine.turn(...): ...
    async with open_store(settings) as store:    # just the files
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from labbot.chat.attachments import Attachments
from labbot.chat.history import ConversationStore, SqliteConversationStore
from labbot.chat.preferences import Preferences, open_sqlite_preferences
from labbot.chat.usage import SqliteUsageLedger, UsageLedger
from labbot.config import Settings
from labbot.errors import StorageError
from labbot.files import FileStore, Limits, MetadataStore, SqliteMetadataStore
from labbot.files.blobs import BlobStore, LocalBlobStore
from labbot.files.objects import ObjectBlobStore
from labbot.llm.models import ModelCatalog
from labbot.sqlite import SqliteDatabase

if TYPE_CHECKING:
    from labbot.chat.engine import Engine
    from labbot.remote.worker import WorkerAgent
    from labbot.sandbox import Executor

MONGO_CONNECT_ATTEMPTS = 3


@dataclass
class App:
    """The parts a front end uses; ``engine`` is None when no model is configured (files are
    still taken then: ``attachments``)."""

    settings: Settings
    store: FileStore
    attachments: Attachments
    executor: Executor
    conversations: ConversationStore
    preferences: Preferences
    ledger: UsageLedger
    catalog: ModelCatalog
    engine: Engine | None


@asynccontextmanager
async def open_app(
    settings: Settings, *, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[App]:
    """Open the database, file store, executor and (when configured) the model client.
    ``clock`` is the engine's "now" (prompts' dates, budget periods); tests pass their own."""
    async with AsyncExitStack() as stack:
        store, conversations, ledger, preferences = await _start_store(settings, stack)
        await conversations.start()
        await ledger.start()
        catalog = ModelCatalog(settings.LABBOT_MODELS_FILE)
        executor = create_executor(settings, store)
        await executor.start()
        stack.push_async_callback(executor.close)
        engine = None
        if settings.llm_configured:
            # Imported here: the model's client (openai) is slow to import, and the commands
            # that only touch files or run code never need it.
            from labbot.chat.engine import Engine
            from labbot.llm.client import LLMClient

            llm = LLMClient(settings)
            stack.push_async_callback(llm.close)
            engine = Engine(
                settings,
                store=store,
                executor=executor,
                llm=llm,
                conversations=conversations,
                preferences=preferences,
                ledger=ledger,
                catalog=catalog,
                clock=clock or (lambda: datetime.now(UTC)),
            )
        yield App(
            settings,
            store,
            Attachments(store),
            executor,
            conversations,
            preferences,
            ledger,
            catalog,
            engine,
        )


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[FileStore]:
    """The file store alone, on the metadata backend and blob store the settings name."""
    async with AsyncExitStack() as stack:
        store, *_ = await _start_store(settings, stack)
        yield store


@asynccontextmanager
async def open_records(settings: Settings) -> AsyncIterator[tuple[FileStore, ConversationStore]]:
    """The file store and the conversations, with no executor or model (an export)."""
    async with AsyncExitStack() as stack:
        store, conversations, *_ = await _start_store(settings, stack)
        await conversations.start()
        yield store, conversations


async def _start_store(
    settings: Settings, stack: AsyncExitStack
) -> tuple[FileStore, ConversationStore, UsageLedger, Preferences]:
    """The database's stores, the file store started (and closed with ``stack``)."""
    meta, conversations, ledger, preferences = await open_database(settings, stack)
    store = FileStore(meta, blob_store(settings), Limits.from_settings(settings))
    await store.start()
    stack.push_async_callback(store.close)
    return store, conversations, ledger, preferences


def blob_store(settings: Settings) -> BlobStore:
    """Where file contents live: LABBOT_BLOB_URL (``s3://``, ``memory://`` or
    ``file:///``), else the data dir's files folder. Not started."""
    url = settings.LABBOT_BLOB_URL
    if not url:
        return LocalBlobStore(settings.files_dir)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalBlobStore(Path(parts.path))
    secret, token = settings.AWS_SECRET_ACCESS_KEY, settings.AWS_SESSION_TOKEN
    return ObjectBlobStore.from_url(
        url,
        endpoint=settings.AWS_ENDPOINT_URL,
        region=settings.AWS_REGION,
        access_key_id=settings.AWS_ACCESS_KEY_ID,
        secret_access_key=secret.get_secret_value() if secret else None,
        session_token=token.get_secret_value() if token else None,
    )


def create_executor(settings: Settings, store: FileStore) -> Executor:
    """The executor LABBOT_EXECUTOR names (not started)."""
    if settings.LABBOT_EXECUTOR == "nats":
        from labbot.remote.executor import RemoteExecutor

        return RemoteExecutor(settings, store)
    from labbot.sandbox import CodeInterpreter  # not imported by the commands on files alone

    return CodeInterpreter(settings, store)


def create_worker(settings: Settings) -> WorkerAgent:
    """This machine's worker agent (`labbot worker`), not started."""
    from labbot.remote.worker import WorkerAgent

    return WorkerAgent(settings, blobs=blob_store(settings))


def database_name(settings: Settings) -> str:
    """Where metadata lives, for messages (no credentials)."""
    if settings.MONGODB_URI is None:
        return str(settings.database_path)
    return f"MongoDB database {settings.MONGODB_DATABASE!r}"


async def open_database(
    settings: Settings, stack: AsyncExitStack
) -> tuple[MetadataStore, ConversationStore, UsageLedger, Preferences]:
    """MongoDB when MONGODB_URI is set (as in the original bot), else the embedded SQLite.
    Closed by ``stack``."""
    if settings.MONGODB_URI is None:
        db = SqliteDatabase(settings.database_path)
        stack.push_async_callback(db.close)
        conversations, ledger = SqliteConversationStore(db), SqliteUsageLedger(db)
        return SqliteMetadataStore(db), conversations, ledger, await open_sqlite_preferences(db)
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    from labbot.chat.mongo import MongoConversationStore, MongoUsageLedger
    from labbot.chat.preferences_mongo import open_mongo_preferences
    from labbot.files.meta.mongo import MongoMetadataStore

    client: AsyncMongoClient = AsyncMongoClient(
        settings.MONGODB_URI.get_secret_value(),
        tz_aware=True,
        appname="labbot",
        serverSelectionTimeoutMS=int(settings.MONGODB_TIMEOUT_SECONDS * 1000),
    )
    stack.push_async_callback(client.close)
    for attempt in range(1, MONGO_CONNECT_ATTEMPTS + 1):
        try:
            await client.admin.command("ping")
            break
        except PyMongoError as exc:
            if attempt == MONGO_CONNECT_ATTEMPTS:
                raise StorageError(
                    "MongoDB cannot be reached (MONGODB_URI).",
                    hint="Check that the server runs and the URI, user and password are right.",
                ) from exc
            await asyncio.sleep(0.5 * 2**attempt)  # back off before the next try
    database = client.get_default_database(default=settings.MONGODB_DATABASE)
    return (
        MongoMetadataStore(database),
        MongoConversationStore(database),
        MongoUsageLedger(database),
        await open_mongo_preferences(database),
    )
