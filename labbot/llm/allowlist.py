"""The models users may pick: the operator's allow-list, checked in one place for every front end
(Discord's /model, the terminal's /model, `labbot ask --model`)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from labbot.config import Settings
from labbot.errors import LLMError, ModelNotAllowed
from labbot.llm.models import ModelCatalog

log = logging.getLogger(__name__)

LISTING_RETRY_SECONDS = 300  # after a failed listing, ask the provider again after this
_LIST = "models"  # the admins' list of the models they added
# What a provider's model id looks like ("gpt-4o", "openai/gpt-4o", "qwen2.5:7b", "org/m@v2").
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


class AdminLists(Protocol):
    """Where the models admins added are kept (labbot.chat.preferences.AdminLists)."""

    async def get(self, name: str) -> Any: ...  # noqa: D102

    async def put(self, name: str, value: Any) -> None: ...  # noqa: D102


class ModelAllowList:
    """Which model names users may choose.

    ALLOWED_MODELS when set; otherwise the catalog's models that the provider lists (all the
    catalog's models when it lists none; none of them when its listing ``failed``); always
    DEFAULT_MODEL; plus what admins added.

    allowed = ModelAllowList(settings, ModelCatalog(), listed=["gpt-4o", "whisper-1"])
    allowed.check("gpt-4o")                 # "gpt-4o"
    allowed.check("gpt-9", force=True)      # added, "gpt-9"
    allowed.check("nope")                   # ModelNotAllowed naming the choices
    """

    def __init__(
        self,
        settings: Settings,
        catalog: ModelCatalog,
        *,
        listed: Iterable[str] | None = None,
        added: Iterable[str] = (),
        store: AdminLists | None = None,
        failed: bool = False,
    ) -> None:
        self.default = settings.DEFAULT_MODEL
        self.configured = list(settings.ALLOWED_MODELS)
        self.catalog = catalog
        self.listed = None if listed is None else set(listed)
        self.failed = failed
        self.added = set(added)
        self.store = store

    async def load(self) -> None:
        """Read the models admins added (kept in ``store``)."""
        added = await self.store.get(_LIST) if self.store else None
        self.added |= set(added or [])

    def base(self) -> set[str]:
        """The operator's choice: ALLOWED_MODELS, else the catalog's models the provider has."""
        if self.configured:
            return set(self.configured)
        if self.failed:  # fail closed: the provider's list is not known
            return set()
        known = set(self.catalog.names())
        if self.listed is None:
            return known
        # "openai/gpt-4o" (OpenRouter) is the catalog's gpt-4o under the name the provider wants.
        return {n for n in self.listed if n in known or n.rsplit("/", 1)[-1] in known}

    def names(self) -> list[str]:
        """Every name users may pick, sorted."""
        return sorted(self.base() | self.added | {self.default})

    def allows(self, name: str) -> bool:
        """True when users may pick ``name``."""
        return name == self.default or name in self.added or name in self.base()

    def check(self, name: str, *, force: bool = False) -> str:
        """The name to use. Unknown names are refused with the list; ``force`` (admins, the
        operator's terminal) adds a well-formed one instead."""
        name = name.strip()
        if self.allows(name):
            return name
        if force and _MODEL_NAME.fullmatch(name):
            self.added.add(name)
            return name
        raise ModelNotAllowed(name, self.names())

    async def choose(self, name: str, *, force: bool = False, by: str = "") -> str:
        """``check``, keeping a forced addition in ``store`` so it survives a restart."""
        known = self.allows(name.strip())
        name = self.check(name, force=force)
        if not known:
            log.info("model.added model=%s by=%s", name, by)
            if self.store is not None:
                await self.store.put(_LIST, sorted(self.added))
        return name


class ProviderAllowList:
    """The allow-list as the provider's listing makes it: asked for once when first needed and
    kept while the provider answered. A failed listing (not a 404: that means there is none)
    allows only DEFAULT_MODEL, ALLOWED_MODELS and what admins added, is logged, and is asked
    again after LISTING_RETRY_SECONDS.

    models = ProviderAllowList(settings, catalog, llm.list_models, store=conversations)
    (await models.get()).check("gpt-4o")
    """

    def __init__(
        self,
        settings: Settings,
        catalog: ModelCatalog,
        lister: Callable[[], Awaitable[list[str] | None]],
        *,
        store: AdminLists | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.catalog, self.lister = settings, catalog, lister
        self.store, self.clock = store, clock
        self._current: ModelAllowList | None = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> ModelAllowList:
        """The current allow-list (asks the provider when it never answered, or failed a while
        ago)."""
        async with self._lock:
            retry = self._failed_at is not None and (
                self.clock() - self._failed_at >= LISTING_RETRY_SECONDS
            )
            if self._current is None or retry:
                self._current = await self._build()
            return self._current

    async def _build(self) -> ModelAllowList:
        listed, failed = None, False
        if not self.settings.ALLOWED_MODELS:
            try:
                listed = await self.lister()
            except LLMError as exc:
                failed = True
                log.warning(
                    "model.listing_failed kind=%s allowed=%s retry_in_s=%d",
                    type(exc).__name__,
                    "DEFAULT_MODEL,ALLOWED_MODELS,added",
                    LISTING_RETRY_SECONDS,
                )
        self._failed_at = self.clock() if failed else None
        allowed = ModelAllowList(
            self.settings, self.catalog, listed=listed, store=self.store, failed=failed
        )
        await allowed.load()
        return allowed
