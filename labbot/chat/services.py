"""Wiring: every long-lived part labbot runs on, opened in order and closed in reverse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from labbot.chat.engine import Engine
from labbot.chat.history import SqliteConversationStore
from labbot.chat.usage import SqliteUsageLedger
from labbot.config import Settings
from labbot.files import FileStore, Limits, LocalBlobStore, SqliteMetadataStore
from labbot.llm.client import LLMClient
from labbot.llm.models import ModelCatalog
from labbot.sandbox import CodeInterpreter
from labbot.sqlite import SqliteDatabase


@dataclass
class Services:
    """The parts a front end uses; ``engine`` is None when no model is configured."""

    settings: Settings
    store: FileStore
    interpreter: CodeInterpreter
    conversations: SqliteConversationStore
    ledger: SqliteUsageLedger
    catalog: ModelCatalog
    engine: Engine | None


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the database, file store, interpreter and (when configured) the model client."""
    async with AsyncExitStack() as stack:
        db = SqliteDatabase(settings.database_path)
        stack.push_async_callback(db.close)
        store = FileStore(
            SqliteMetadataStore(db),
            LocalBlobStore(settings.files_dir),
            Limits.from_settings(settings),
        )
        await store.start()
        conversations = SqliteConversationStore(db)
        await conversations.start()
        ledger = SqliteUsageLedger(db)
        await ledger.start()
        catalog = ModelCatalog(settings.LABBOT_MODELS_FILE)
        interpreter = CodeInterpreter(settings, store)
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
