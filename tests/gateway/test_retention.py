"""Retention job: deletes only rows past the cut-off, in batches, via the function and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from llm_gateway.db import migrate
from llm_gateway.retention import purge_expired

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


async def seed(pool: asyncpg.Pool) -> None:
    rows = [(f"old-{i}", NOW - timedelta(days=31, minutes=i)) for i in range(23)]
    rows += [(f"new-{i}", NOW - timedelta(days=29, hours=23, minutes=i)) for i in range(5)]
    await pool.executemany(
        "INSERT INTO usage_records (request_id, org_id, key_id, model, prompt_tokens, completion_tokens, "
        "latency_ms, status, cost_usd, created_at) VALUES ($1, 'acme', 'k', 'm', 1, 1, 1, 200, $2, $3)",
        [(rid, Decimal("0.01"), at) for rid, at in rows],
    )
    await pool.executemany(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id) VALUES ($1, 'admin', 'x', 'org', 'acme')",
        [(NOW - timedelta(days=days),) for days in (400, 200, 100, 10)],
    )


@pytest.fixture
async def seeded_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(pg_dsn)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    assert pool is not None
    await seed(pool)
    yield pool
    await pool.close()


async def test_purge_deletes_only_expired_rows_in_batches(seeded_pool: asyncpg.Pool) -> None:
    dry = await purge_expired(seeded_pool, 30, audit_days=150, dry_run=True, now=NOW)
    assert (dry.usage_deleted, dry.audit_deleted) == (23, 2)
    assert await seeded_pool.fetchval("SELECT count(*) FROM usage_records") == 28  # dry run deletes nothing

    result = await purge_expired(seeded_pool, 30, audit_days=150, batch_size=4, now=NOW)  # 23 = 5 batches of 4 + 3
    assert (result.usage_deleted, result.audit_deleted) == (23, 2)
    remaining = {r["request_id"] for r in await seeded_pool.fetch("SELECT request_id FROM usage_records")}
    assert remaining == {f"new-{i}" for i in range(5)}
    ages = sorted(r["at"] for r in await seeded_pool.fetch("SELECT at FROM audit_log WHERE action = 'x'"))
    assert ages == [NOW - timedelta(days=100), NOW - timedelta(days=10)]
    purge_audit = await seeded_pool.fetchrow("SELECT actor, details FROM audit_log WHERE action = 'retention.purge'")
    assert purge_audit["actor"] == "retention-job" and '"usage_deleted": 23' in purge_audit["details"]

    again = await purge_expired(seeded_pool, 30, audit_days=150, now=NOW)  # idempotent
    assert (again.usage_deleted, again.audit_deleted) == (0, 0)


async def test_exact_batch_multiple_and_default_audit_days(seeded_pool: asyncpg.Pool) -> None:
    result = await purge_expired(seeded_pool, 30, batch_size=23, now=NOW)
    assert (result.usage_deleted, result.audit_deleted) == (23, 3)  # audit_days defaults to days


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"days": 0}, "days must be a whole number of days >= 1, got 0"),
    ({"days": 5, "audit_days": -1}, "audit_days must be"),
    ({"days": True}, "days must be"),
    ({"days": 5, "batch_size": 0}, "batch_size must be between 1 and 100000, got 0"),
])
async def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await purge_expired("postgresql://unused@127.0.0.1:1/x", **kwargs)  # type: ignore[arg-type]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "GATEWAY_DATABASE_URL_FILE"}
    environment = {**inherited, "PYTHONPATH": f"{REPO}:{REPO / 'images' / 'gateway'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "llm_gateway.retention", *args], capture_output=True, text=True,
                          env=environment, timeout=60, cwd=REPO)


async def test_command_line(seeded_pool: asyncpg.Pool, pg_dsn: str, tmp_path: Path) -> None:
    dsn_file = tmp_path / "database-url"
    dsn_file.write_text(pg_dsn + "\n")
    done = _cli("--days", "1000", "--dry-run", env={"GATEWAY_DATABASE_URL_FILE": str(dsn_file)})
    assert done.returncode == 0, done.stderr
    assert "would delete 0 usage records" in done.stdout
    done = _cli("--days", "1", "--audit-days", "3650", "--batch-size", "10", "--dsn-file", str(dsn_file))
    assert done.returncode == 0, done.stderr
    assert "deleted 28 usage records" in done.stdout and "0 audit entries" in done.stdout
    assert await seeded_pool.fetchval("SELECT count(*) FROM usage_records") == 0

    bad = _cli("--days", "0", "--dsn-file", str(dsn_file))
    assert bad.returncode == 2 and "--days must be a whole number >= 1, got '0'" in bad.stderr
    bad = _cli("--days", "7", "--batch-size", "many", "--dsn-file", str(dsn_file))
    assert bad.returncode == 2 and "--batch-size must be a whole number 1 to 100000, got 'many'" in bad.stderr
    missing = _cli("--days", "7")
    assert missing.returncode == 2 and "GATEWAY_DATABASE_URL_FILE" in missing.stderr
    unreadable = _cli("--days", "7", "--dsn-file", str(tmp_path / "absent"))
    assert unreadable.returncode == 2 and "cannot read --dsn-file" in unreadable.stderr
    for leaked in (pg_dsn, "Traceback"):
        assert leaked not in bad.stderr + missing.stderr + unreadable.stderr
