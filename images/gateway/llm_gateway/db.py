"""PostgreSQL access: the asyncpg pool and the versioned schema migrations runner.

Migrations are the files ``migrations/NNNN_<name>.sql``, applied in version order, each inside its own
transaction together with its row in ``schema_migrations``. Every replica runs ``migrate()`` at start:
a session-level ``pg_advisory_lock`` serialises them, so the first one applies what is missing and the
others find nothing left to do. An applied migration whose file has since changed stops the start with
an error instead of silently drifting.

Credentials: RDS rotates the master password (every 7 days), so nothing may hold one password for the life
of the process. Migrations and provisioning run as the master user with the password read again from the
mounted DSN file for every new connection (``dsn_file_password``); the gateway itself serves as its own
least-privilege role (``ensure_gateway_role``) that authenticates with an RDS IAM token generated per
connection from the pod's IAM role (``rds_iam_token``): no password to rotate, none in Pulumi state or in a
Kubernetes Secret. asyncpg calls the password source for every connection it opens, so a pool picks up a
new credential without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

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


PasswordSource = Callable[[], Awaitable[str]]
"""Called (and awaited) by asyncpg for every new connection: the credential current at that moment."""

# The gateway's tables and what it does with them (nothing else: no DELETE, no DDL, no schema_migrations; the
# retention job and migrations run as the master user). audit_log is append-only for the gateway.
GATEWAY_TABLE_GRANTS: dict[str, tuple[str, ...]] = {
    "orgs": ("SELECT", "INSERT", "UPDATE"),
    "api_keys": ("SELECT", "INSERT", "UPDATE"),
    "usage_records": ("SELECT", "INSERT"),
    "audit_log": ("SELECT", "INSERT"),
}
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# RDS's role that makes a user authenticate with IAM tokens (and with nothing else).
RDS_IAM_ROLE = "rds_iam"


def dsn_password(dsn: str) -> str:
    """The (URL-decoded) password of a ``postgresql://user:password@host/db`` DSN; "" when it has none."""
    return unquote(urlsplit(dsn).password or "")


def dsn_file_password(path: Path) -> PasswordSource:
    """The password of the DSN in ``path``, read again for each connection: the mounted secret follows rotation."""
    async def password() -> str:
        return dsn_password(path.read_text().strip())
    return password


def dsn_for_user(dsn: str, user: str) -> str:
    """``dsn`` with ``user`` and no password (the password comes from a PasswordSource)."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}@{f'[{host}]' if ':' in host else host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def rds_iam_token(host: str, port: int, user: str, region: str, client: Any = None) -> PasswordSource:
    """An RDS IAM authentication token for ``user`` per connection (valid 15 minutes, signed locally with the
    pod's IAM role credentials, no AWS call): RDS accepts it as the password of a role granted ``rds_iam``."""
    if client is None:
        import botocore.session  # only the IAM mode needs botocore

        client = botocore.session.get_session().create_client("rds", region_name=region)

    async def token() -> str:
        # Signing may refresh the web-identity credentials (an STS call): keep it off the event loop.
        return str(await asyncio.to_thread(client.generate_db_auth_token, host, port, user, region))
    return token


async def ensure_gateway_role(conn: asyncpg.Connection, role: str, *, iam: bool = True) -> None:
    """Create (or bring up to date) the gateway's own role, as the master user: LOGIN, ``rds_iam`` when ``iam``, and
    exactly ``GATEWAY_TABLE_GRANTS`` on the current database's tables. Idempotent; run after the migrations."""
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"database role: got {role!r}; allowed: lowercase letters, digits and _, at most 63")
    async with conn.transaction():
        # Serialise replicas starting together (CREATE ROLE is not IF NOT EXISTS in PostgreSQL).
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY + 1)
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        if iam:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", RDS_IAM_ROLE):
                raise MigrationError(f"role {RDS_IAM_ROLE} does not exist: IAM database authentication needs RDS for PostgreSQL")
            await conn.execute(f'GRANT {RDS_IAM_ROLE} TO "{role}"')
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        for table, privileges in GATEWAY_TABLE_GRANTS.items():
            await conn.execute(f'REVOKE ALL ON TABLE public.{table} FROM "{role}"')
            await conn.execute(f'GRANT {", ".join(privileges)} ON TABLE public.{table} TO "{role}"')


async def create_pool(dsn: str, **kw: Any) -> asyncpg.Pool:
    """An asyncpg pool with gateway-friendly defaults (small, bounded waits); ``kw`` overrides them (e.g.
    ``password=<PasswordSource>``: asyncpg calls it for every connection it opens)."""
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
    password: PasswordSource | None = None, gateway_role: str | None = None, iam: bool = True,
) -> list[str]:
    """Apply every migration not yet recorded; returns the file names applied by this call (often none).

    Waits at most ``lock_timeout_s`` for another replica's migration run to finish. With ``gateway_role``, then
    brings that role up to date (``ensure_gateway_role``): the connection must be the master user's.
    """
    migrations = load_migrations(directory)
    if isinstance(dsn_or_pool, str):
        conn: asyncpg.Connection = await asyncpg.connect(dsn_or_pool, password=password, timeout=10.0)
        try:
            applied = await _migrate_on(conn, migrations, lock_timeout_s)
            if gateway_role is not None:
                await ensure_gateway_role(conn, gateway_role, iam=iam)
            return applied
        finally:
            await conn.close()
    async with dsn_or_pool.acquire() as pooled:
        applied = await _migrate_on(pooled, migrations, lock_timeout_s)
        if gateway_role is not None:
            await ensure_gateway_role(pooled, gateway_role, iam=iam)
        return applied


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
