"""The stores of preferences.py on MongoDB (same contracts as SQLite): ``user_settings``,
``reply_links`` and ``admin_lists``, filled once from the old general ``preferences``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING

from labbot.chat.preferences import Preferences, UserSettings
from labbot.files.meta.mongo import guarded

_ADMIN_ROWS = {"__access__\x00lists": "access", "__models__\x00added": "models"}


class MongoUserSettings:
    """UserSettingsStore on ``user_settings``."""

    def __init__(self, database: Any) -> None:
        self.docs = database["user_settings"]

    async def get(self, user: str) -> UserSettings:
        """The user's choices (the defaults when they made none)."""
        doc = await guarded(self.docs.find_one({"_id": user}))
        return UserSettings() if doc is None else UserSettings(doc["model"], doc["show_code"])

    async def put(self, user: str, settings: UserSettings) -> None:
        """Keep the user's choices."""
        values = {"model": settings.model, "show_code": settings.show_code}
        await guarded(self.docs.update_one({"_id": user}, {"$set": values}, upsert=True))


class MongoReplyLinks:
    """ReplyLinks on ``reply_links``."""

    def __init__(self, database: Any) -> None:
        self.docs = database["reply_links"]

    async def link(self, message_id: int, *, owner: str, conversation: str) -> None:
        """Remember which conversation an answer belongs to."""
        values = {"owner": owner, "conversation": conversation, "created_at": datetime.now(UTC)}
        await guarded(self.docs.update_one({"_id": message_id}, {"$set": values}, upsert=True))

    async def conversation(self, message_id: int, *, owner: str) -> str | None:
        """The conversation of an answer to ``owner``."""
        doc = await guarded(self.docs.find_one({"_id": message_id, "owner": owner}))
        return None if doc is None else str(doc["conversation"])

    async def sweep(self, *, before: datetime) -> int:
        """Forget links made before ``before``."""
        result = await guarded(self.docs.delete_many({"created_at": {"$lt": before}}))
        return int(result.deleted_count)


class MongoAdminLists:
    """AdminLists on ``admin_lists``."""

    def __init__(self, database: Any) -> None:
        self.docs = database["admin_lists"]

    async def get(self, name: str) -> Any:
        """The list's value (None when never set)."""
        doc = await guarded(self.docs.find_one({"_id": name}))
        return None if doc is None else doc["value"]

    async def put(self, name: str, value: Any) -> None:
        """Replace the list's value."""
        await guarded(self.docs.update_one({"_id": name}, {"$set": {"value": value}}, upsert=True))


async def open_mongo_preferences(database: Any) -> Preferences:
    """The three stores on ``database``, with their index, and what the old general
    ``preferences`` collection held for them moved over (idempotent)."""
    links = MongoReplyLinks(database)
    await guarded(links.docs.create_index([("created_at", ASCENDING)]))
    found = Preferences(MongoUserSettings(database), links, MongoAdminLists(database))
    old = database["preferences"]
    async for doc in old.find({}):
        key, user, name, value = doc["_id"], doc["user"], doc["name"], doc["value"]
        if name.startswith("conversation:") and name[13:].isdigit():
            await links.link(int(name[13:]), owner=user, conversation=value)
        elif key in _ADMIN_ROWS:
            await found.admin.put(_ADMIN_ROWS[key], json.loads(value))
        elif name in ("model", "show_code"):
            current = await found.users.get(user)
            if name == "model":
                current = UserSettings(value, current.show_code)
            else:
                current = UserSettings(current.model, value != "off")
            await found.users.put(user, current)
        else:
            continue
        await guarded(old.delete_one({"_id": key}))
    return found
