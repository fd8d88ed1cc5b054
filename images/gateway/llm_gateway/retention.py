"""Retention: delete usage records and audit entries older than N days, in bounded batches.

    python -m llm_gateway.retention --days 400 [--audit-days 730] [--batch-size 5000] [--dry-run]

The database URL is read from the file named by ``--dsn-file`` or ``GATEWAY_DATABASE_URL_FILE`` (the same
secret file the gateway reads), never from the command line. Each batch is its own short transaction
(``DELETE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``), so the job never holds long locks,
never blocks the metering writer, can be interrupted at any point and re-run, and two overlapping runs
do not wait on each other. Run it daily (e.g. a Kubernetes CronJob). Every run leaves one
``retention.purge`` row in ``audit_log`` with the cut-offs and counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from llm_gateway.keys import write_audit

MAX_BATCH_SIZE = 100_000

# Table name -> timestamp column. Fixed here: these names are interpolated into SQL.
_TABLES = {"usage_records": "created_at", "audit_log": "at"}


@dataclass(frozen=True, slots=True)
class RetentionResult:
    usage_cutoff: datetime
    audit_cutoff: datetime
    usage_deleted: int
    audit_deleted: int
    dry_run: bool


async def purge_expired(
    dsn_or_pool: str | asyncpg.Pool,
    days: int,
    *,
    audit_days: int | None = None,
    batch_size: int = 5_000,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetentionResult:
    """Delete usage older than ``days`` and audit entries older than ``audit_days`` (default: ``days``)."""
    audit_days = days if audit_days is None else audit_days
    for name, value in (("days", days), ("audit_days", audit_days)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of days >= 1, got {value!r}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size!r}")
    now = now or datetime.now(timezone.utc)
    usage_cutoff = now - timedelta(days=days)
    audit_cutoff = now - timedelta(days=audit_days)
    if isinstance(dsn_or_pool, str):
        conn: asyncpg.Connection = await asyncpg.connect(dsn_or_pool, timeout=10.0)
        try:
            return await _purge(conn, usage_cutoff, audit_cutoff, batch_size, dry_run)
        finally:
            await conn.close()
    async with dsn_or_pool.acquire() as pooled:
        return await _purge(pooled, usage_cutoff, audit_cutoff, batch_size, dry_run)


async def _purge(conn: asyncpg.Connection, usage_cutoff: datetime, audit_cutoff: datetime,
                 batch_size: int, dry_run: bool) -> RetentionResult:
    counts = {}
    for table, cutoff in (("usage_records", usage_cutoff), ("audit_log", audit_cutoff)):
        column = _TABLES[table]
        if dry_run:
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column} < $1", cutoff)
            continue
        counts[table] = 0
        while True:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} WHERE {column} < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoff, batch_size,
            )
            deleted = int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"
            counts[table] += deleted
            if deleted < batch_size:
                break
    result = RetentionResult(usage_cutoff, audit_cutoff, counts["usage_records"], counts["audit_log"], dry_run)
    if not dry_run:
        await write_audit(conn, "retention-job", "retention.purge", "table", "usage_records,audit_log", {
            "usage_cutoff": usage_cutoff.isoformat(), "audit_cutoff": audit_cutoff.isoformat(),
            "usage_deleted": result.usage_deleted, "audit_deleted": result.audit_deleted,
        })
    return result


def _positive_int(name: str, maximum: int | None = None) -> type[int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1 or (maximum is not None and value > maximum):
            allowed = f"1 to {maximum}" if maximum else ">= 1"
            raise argparse.ArgumentTypeError(f"{name} must be a whole number {allowed}, got {raw!r}")
        return value

    return parse  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_gateway.retention",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--days", required=True, type=_positive_int("--days"),
                        help="delete usage records older than this many days")
    parser.add_argument("--audit-days", type=_positive_int("--audit-days"),
                        help="delete audit entries older than this many days (default: --days)")
    parser.add_argument("--batch-size", type=_positive_int("--batch-size", MAX_BATCH_SIZE), default=5_000,
                        help="rows deleted per transaction (default 5000)")
    parser.add_argument("--dsn-file", type=Path, default=os.environ.get("GATEWAY_DATABASE_URL_FILE"),
                        help="file holding the database URL (default: $GATEWAY_DATABASE_URL_FILE)")
    parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    args = parser.parse_args(argv)
    if args.dsn_file is None:
        parser.error("no database: pass --dsn-file or set GATEWAY_DATABASE_URL_FILE")
    try:
        dsn = Path(args.dsn_file).read_text().strip()
    except OSError as exc:
        parser.error(f"cannot read --dsn-file {args.dsn_file}: {exc.strerror}")
    try:
        result = asyncio.run(purge_expired(dsn, args.days, audit_days=args.audit_days,
                                           batch_size=args.batch_size, dry_run=args.dry_run))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        print(f"retention: database error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    verb = "would delete" if result.dry_run else "deleted"
    print(f"retention: {verb} {result.usage_deleted} usage records older than {result.usage_cutoff.isoformat()} "
          f"and {result.audit_deleted} audit entries older than {result.audit_cutoff.isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
