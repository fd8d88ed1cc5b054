"""Fixtures and helpers shared by the data-layer tests (keys, metering, admin, usage, retention, migrations)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from llm_gateway.db import create_pool, migrate


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh, fully migrated database."""
    await migrate(pg_dsn)
    created = await create_pool(pg_dsn, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


class CountingPool:
    """Wraps a pool and counts every query issued through its shortcut methods."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.queries = 0

    async def fetchrow(self, *args: Any, **kw: Any) -> Any:
        self.queries += 1
        return await self._pool.fetchrow(*args, **kw)

    async def fetch(self, *args: Any, **kw: Any) -> Any:
        self.queries += 1
        return await self._pool.fetch(*args, **kw)

    async def fetchval(self, *args: Any, **kw: Any) -> Any:
        self.queries += 1
        return await self._pool.fetchval(*args, **kw)

    async def execute(self, *args: Any, **kw: Any) -> Any:
        self.queries += 1
        return await self._pool.execute(*args, **kw)

    def acquire(self) -> Any:
        self.queries += 1
        return self._pool.acquire()
