"""Schema migrations: fresh database, idempotent re-runs, concurrent replicas, tampered files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from llm_gateway.db import MIGRATION_LOCK_KEY, MIGRATIONS_DIR, MigrationError, create_pool, load_migrations, migrate


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def test_fresh_database_gets_every_table_and_migration_recorded(pg_dsn: str) -> None:
    applied = await migrate(pg_dsn)
    assert applied == [m.name for m in load_migrations()]
    assert applied[0] == "0001_init.sql"
    assert {"orgs", "api_keys", "usage_records", "audit_log", "schema_migrations"} <= await _tables(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in load_migrations()]
        # Seed quota defaults of a new org.
        row = await conn.fetchrow("INSERT INTO orgs (id, name) VALUES ('acme', 'Acme') RETURNING *")
        assert (row["daily_tokens"], row["daily_requests"], row["monthly_tokens"]) == (10_000_000, 100_000, 300_000_000)
        assert row["rpm"] is None and row["status"] == "active"
    finally:
        await conn.close()


async def test_rerun_is_a_no_op(pg_dsn: str) -> None:
    assert await migrate(pg_dsn)
    assert await migrate(pg_dsn) == []
    assert await migrate(pg_dsn) == []


async def test_concurrent_migrators_apply_each_migration_exactly_once(pg_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(pg_dsn) for _ in range(4)))
    everything = [m.name for m in load_migrations()]
    assert sorted(results, key=len, reverse=True)[0] == everything
    assert sum(len(r) for r in results) == len(everything)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(everything)
    finally:
        await conn.close()


async def test_new_migration_is_applied_after_the_old_ones(pg_dsn: str, tmp_path: Path) -> None:
    for source in MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    await migrate(pg_dsn, tmp_path)
    (tmp_path / "9001_add_note.sql").write_text("ALTER TABLE orgs ADD COLUMN note text;")
    assert await migrate(pg_dsn, tmp_path) == ["9001_add_note.sql"]
    assert await migrate(pg_dsn, tmp_path) == []


async def test_failed_migration_rolls_back_and_is_not_recorded(pg_dsn: str, tmp_path: Path) -> None:
    for source in MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "9001_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(pg_dsn, tmp_path)
    assert "half_done" not in await _tables(pg_dsn)
    assert "orgs" in await _tables(pg_dsn)  # earlier migrations committed on their own
    (tmp_path / "9001_broken.sql").write_text("CREATE TABLE half_done (id int);")
    assert await migrate(pg_dsn, tmp_path) == ["9001_broken.sql"]


async def test_edited_applied_migration_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    for source in MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    await migrate(pg_dsn, tmp_path)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(pg_dsn, tmp_path)


def test_badly_named_or_duplicate_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share version"):
        load_migrations(tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "2-bad name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lowercase_name.sql"):
        load_migrations(tmp_path)


async def test_a_stuck_lock_holder_gives_a_clear_error_not_a_hang(pg_dsn: str) -> None:
    holder = await asyncpg.connect(pg_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        with pytest.raises(MigrationError, match="held the migration lock"):
            await migrate(pg_dsn, lock_timeout_s=0.5)
    finally:
        await holder.close()  # the lock goes with the session
    assert await migrate(pg_dsn)


async def test_migrations_are_not_cut_short_by_the_pools_command_timeout(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_slow.sql").write_text("SELECT pg_sleep(1.5); CREATE TABLE slow_done (id int);")
    pool = await create_pool(pg_dsn, command_timeout=0.5)
    try:
        assert await migrate(pool, tmp_path) == ["0001_slow.sql"]
    finally:
        await pool.close()
    assert "slow_done" in await _tables(pg_dsn)
