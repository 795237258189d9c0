"""The storage backends every contract suite runs against.

- ``sqlite``: the embedded default, always.
- ``mongo-standin``: mongomock-motor, an in-memory imitation of the MongoDB API (no MongoDB
  server can be installed from the registries our machines reach). It proves the queries and
  the document shapes, not TTL expiry, index conflicts, transactions or the wire protocol.
- ``mongo``: a real server, whenever ``LABBOT_TEST_MONGODB_URI`` is set (skipped otherwise).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

REAL_MONGO = os.environ.get("LABBOT_TEST_MONGODB_URI")

BACKENDS = [
    "sqlite",
    "mongo-standin",
    pytest.param(
        "mongo",
        marks=[
            pytest.mark.mongo,
            pytest.mark.skipif(
                not REAL_MONGO, reason="set LABBOT_TEST_MONGODB_URI to run against a real MongoDB"
            ),
        ],
    ),
]


@asynccontextmanager
async def mongo_database(backend: str) -> AsyncIterator[Any]:
    """A fresh database for ``backend`` (None for sqlite), dropped afterwards."""
    if backend == "sqlite":
        yield None
        return
    name = f"labbot_test_{uuid.uuid4().hex[:8]}"
    if backend == "mongo-standin":
        from mongomock_motor import AsyncMongoMockClient

        client: Any = AsyncMongoMockClient(tz_aware=True)
    else:
        from pymongo import AsyncMongoClient

        client = AsyncMongoClient(REAL_MONGO, tz_aware=True, serverSelectionTimeoutMS=2000)
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        if backend == "mongo":
            await client.close()
