"""PostgreSQL access: the asyncpg pool and the versioned schema migrations runner.

Migrations are the files ``migrations/NNNN_<name>.sql``, applied in version order, each inside its own
transaction together with its row in ``schema_migrations``. Every replica runs ``migrate()`` at start:
a session-level ``pg_advisory_lock`` serialises them, so the first one applies what is missing and the
others find nothing left to do. An applied migration whose file has since changed stops the start with
an error instead of silently drifting.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed 64-bit number works; it only has to be the same on every replica and unique in this database.
MIGRATION_LOCK_KEY = 0x6C6C6D702D6D6967  # "llmp-mig"
MIGRATION_STATEMENT_TIMEOUT_S = 3600.0
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk and the ones recorded in the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file name, e.g. "0001_init.sql"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


async def create_pool(dsn: str, **kw: Any) -> asyncpg.Pool:
    """An asyncpg pool with gateway-friendly defaults (small, bounded waits); ``kw`` overrides them."""
    kw.setdefault("min_size", 1)
    kw.setdefault("max_size", 10)
    kw.setdefault("timeout", 5.0)  # connect timeout
    kw.setdefault("command_timeout", 10.0)
    # Connections are recycled so a failover to a new primary is picked up without a restart.
    kw.setdefault("max_inactive_connection_lifetime", 60.0)
    pool = await asyncpg.create_pool(dsn, **kw)
    assert pool is not None
    return pool


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} must be named NNNN_lowercase_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"two migration files share version(s) {duplicates} in {directory}")
    return migrations


async def migrate(
    dsn_or_pool: str | asyncpg.Pool, directory: Path = MIGRATIONS_DIR, *, lock_timeout_s: float = 300.0,
) -> list[str]:
    """Apply every migration not yet recorded; returns the file names applied by this call (often none).

    Waits at most ``lock_timeout_s`` for another replica's migration run to finish.
    """
    migrations = load_migrations(directory)
    if isinstance(dsn_or_pool, str):
        conn: asyncpg.Connection = await asyncpg.connect(dsn_or_pool, timeout=10.0)
        try:
            return await _migrate_on(conn, migrations, lock_timeout_s)
        finally:
            await conn.close()
    async with dsn_or_pool.acquire() as pooled:
        return await _migrate_on(pooled, migrations, lock_timeout_s)


async def _acquire_lock(conn: asyncpg.Connection, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another process has held the migration lock for over {timeout_s:.0f}s; if no migration is "
                f"running, find the session with: SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                f"AND objid = {MIGRATION_LOCK_KEY & 0xFFFFFFFF}"
            )
        await asyncio.sleep(0.2)


async def _migrate_on(conn: asyncpg.Connection, migrations: list[Migration], lock_timeout_s: float) -> list[str]:
    await _acquire_lock(conn, lock_timeout_s)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        recorded = {row["version"]: row for row in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        applied: list[str] = []
        for migration in migrations:
            row = recorded.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was changed after it was applied "
                        f"(recorded checksum {row['checksum'][:12]}…, file {migration.checksum[:12]}…); "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                # A pool's command_timeout (seconds) is far too short for e.g. an index on a big table.
                await conn.execute(migration.sql, timeout=MIGRATION_STATEMENT_TIMEOUT_S)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            applied.append(migration.name)
        # Versions recorded but absent on disk are not an error: during a rolling update a newer replica
        # may have migrated ahead of this older one, which works as long as migrations stay additive.
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
