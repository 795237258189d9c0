"""Wiring: every long-lived part labbot runs on, opened in order and closed in reverse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from labbot.chat.engine import Engine
from labbot.chat.history import ConversationStore, SqliteConversationStore
from labbot.chat.usage import SqliteUsageLedger, UsageLedger
from labbot.config import Settings
from labbot.errors import StorageError
from labbot.files import FileStore, Limits, MetadataStore, SqliteMetadataStore
from labbot.files.objects import open_blob_store
from labbot.llm.client import LLMClient
from labbot.llm.models import ModelCatalog
from labbot.sandbox import Executor, create_executor
from labbot.sqlite import SqliteDatabase


@dataclass
class Services:
    """The parts a front end uses; ``engine`` is None when no model is configured."""

    settings: Settings
    store: FileStore
    interpreter: Executor
    conversations: ConversationStore
    ledger: UsageLedger
    catalog: ModelCatalog
    engine: Engine | None


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the database, file store, interpreter and (when configured) the model client."""
    async with AsyncExitStack() as stack:
        meta, conversations, ledger = await _open_database(settings, stack)
        store = FileStore(meta, open_blob_store(settings), Limits.from_settings(settings))
        await store.start()
        await conversations.start()
        await ledger.start()
        catalog = ModelCatalog(settings.LABBOT_MODELS_FILE)
        interpreter = create_executor(settings, store)
        await interpreter.start()
        stack.push_async_callback(interpreter.close)
        engine = None
        if settings.llm_configured:
            llm = LLMClient(settings)
            stack.push_async_callback(llm.close)
            engine = Engine(
                settings,
                store=store,
                interpreter=interpreter,
                llm=llm,
                conversations=conversations,
                ledger=ledger,
                catalog=catalog,
            )
        yield Services(settings, store, interpreter, conversations, ledger, catalog, engine)


MONGO_CONNECT_ATTEMPTS = 3


async def _open_database(
    settings: Settings, stack: AsyncExitStack
) -> tuple[MetadataStore, ConversationStore, UsageLedger]:
    """MongoDB when MONGODB_URI is set (as in the original bot), else the embedded SQLite."""
    if settings.MONGODB_URI is None:
        db = SqliteDatabase(settings.database_path)
        stack.push_async_callback(db.close)
        return SqliteMetadataStore(db), SqliteConversationStore(db), SqliteUsageLedger(db)
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    from labbot.chat.mongo import MongoConversationStore, MongoUsageLedger
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
    )
