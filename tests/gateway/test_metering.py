"""UsageMeter against real Postgres: exactness, idempotence, outages, spill across a crash, buffer bound."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from llm_gateway.db import migrate
from llm_gateway.metering import UsageMeter, UsageRecord

REPO = Path(__file__).resolve().parents[2]


def make_records(count: int, org_id: str = "acme", seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    return [
        UsageRecord(
            request_id=f"req-{uuid.UUID(int=rng.getrandbits(128))}", org_id=org_id, key_id="0123456789abcdef",
            model=rng.choice(["chat-7b", "sql-7b"]), backend="http://10.0.0.1:8000", prompt_tokens=rng.randint(0, 4000),
            completion_tokens=rng.randint(0, 1000), latency_ms=rng.uniform(5, 900), ttft_ms=rng.uniform(1, 50),
            status=200, cache_hit=rng.random() < 0.1, cost_usd=rng.randint(0, 999_999) / 1_000_000,
            created_at=datetime.now(timezone.utc),
        )
        for _ in range(count)
    ]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll for a state (a bound against hanging, not a performance assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def assert_exactly_in_postgres(dsn: str, records: list[UsageRecord]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT request_id) AS ids, coalesce(sum(prompt_tokens), 0) AS p, "
            "coalesce(sum(completion_tokens), 0) AS c, coalesce(sum(cost_usd), 0) AS cost, "
            "count(*) FILTER (WHERE cache_hit) AS hits FROM usage_records")
        stored_ids = {r["request_id"] for r in await conn.fetch("SELECT request_id FROM usage_records")}
    finally:
        await conn.close()
    assert row["n"] == len(records) == row["ids"]
    assert stored_ids == {r.request_id for r in records}
    assert row["p"] == sum(r.prompt_tokens for r in records)
    assert row["c"] == sum(r.completion_tokens for r in records)
    assert row["cost"] == sum(Decimal(str(r.cost_usd)) for r in records)
    assert row["hits"] == sum(r.cache_hit for r in records)


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await migrate(pg_dsn)
    return pg_dsn


async def test_n_records_in_n_rows_out_with_equal_token_sums(dsn: str, tmp_path: Path) -> None:
    meter = UsageMeter(dsn, tmp_path / "spill", batch_size=100, flush_interval_s=0.05)
    await meter.start()
    records = make_records(2345)
    for i, record in enumerate(records):
        meter.record(record)
        if i % 300 == 0:
            await asyncio.sleep(0)  # let the writer run mid-stream, as it would under real traffic
    await meter.close()
    assert meter.depth == 0 and meter.written_total == 2345 and meter.spilled_total == 0
    await assert_exactly_in_postgres(dsn, records)


async def test_duplicate_request_ids_are_written_once(dsn: str, tmp_path: Path) -> None:
    meter = UsageMeter(dsn, tmp_path / "spill", batch_size=10)
    await meter.start()
    records = make_records(25)
    for record in records + records[:5]:
        meter.record(record)
    assert await meter.flush()
    # A replay of records that are already in Postgres (crash between commit and segment deletion).
    for record in records[10:20]:
        meter.record(record)
    await meter.close()
    assert meter.written_total == 25 and meter.duplicates_total == 15
    await assert_exactly_in_postgres(dsn, records)


async def test_postgres_outage_then_restart_loses_nothing(dsn: str, tmp_path: Path, pg_control: object) -> None:
    spill = tmp_path / "spill"
    records = make_records(4500)
    meter = UsageMeter(dsn, spill, batch_size=200, flush_interval_s=0.05, backoff_max_s=0.5)
    await meter.start()
    for record in records[:500]:
        meter.record(record)
    assert await meter.flush()

    pg_control.stop()  # type: ignore[attr-defined]
    for i, record in enumerate(records[500:3500]):
        meter.record(record)
        if i % 250 == 0:
            await asyncio.sleep(0.01)
    await wait_until(lambda: meter.memory_depth == 0 and meter.disk_depth == 3000)
    assert not meter.postgres_up and meter.write_failures_total >= 1
    for record in records[3500:]:
        meter.record(record)
    await meter.close()  # Postgres still down: memory goes to disk
    assert meter.spilled_total == 4000
    segments = sorted(spill.glob("usage-*.jsonl"))
    assert sum(len(p.read_bytes().splitlines()) for p in segments) == 4000

    pg_control.start()  # type: ignore[attr-defined]
    restarted = UsageMeter(dsn, spill, batch_size=200, flush_interval_s=0.05)
    await restarted.start()
    assert restarted.depth == 4000
    await wait_until(lambda: restarted.depth == 0)
    await restarted.close()
    assert restarted.replayed_total == 4000 and restarted.duplicates_total == 0
    assert not list(spill.glob("usage-*.jsonl"))
    await assert_exactly_in_postgres(dsn, records)


async def test_writer_reconnects_by_itself_after_an_outage(dsn: str, tmp_path: Path, pg_control: object) -> None:
    failures: list[BaseException] = []
    meter = UsageMeter(dsn, tmp_path / "spill", batch_size=100, flush_interval_s=0.05,
                       backoff_initial_s=0.05, backoff_max_s=0.3, on_write_failure=failures.append)
    await meter.start()
    records = make_records(1500)
    for record in records[:200]:
        meter.record(record)
    await wait_until(lambda: meter.depth == 0)
    pg_control.stop()  # type: ignore[attr-defined]
    for record in records[200:1200]:
        meter.record(record)
    await wait_until(lambda: meter.disk_depth == 1000)
    pg_control.start()  # type: ignore[attr-defined]
    for record in records[1200:]:
        meter.record(record)
    await wait_until(lambda: meter.depth == 0)
    assert meter.postgres_up and failures
    await meter.close()
    await assert_exactly_in_postgres(dsn, records)


async def test_spilled_records_survive_a_process_crash(dsn: str, tmp_path: Path, pg_control: object) -> None:
    spill = tmp_path / "spill"
    pg_control.stop()  # type: ignore[attr-defined]
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'images' / 'gateway')!r}]
        from llm_gateway.metering import UsageMeter
        from tests.gateway.test_metering import make_records

        async def main():
            meter = UsageMeter({dsn!r}, __import__('pathlib').Path({str(spill)!r}), flush_interval_s=0.05,
                               connect_timeout_s=1.0)
            await meter.start()
            for record in make_records(2000, seed=11):
                meter.record(record)
            while meter.disk_depth < 2000:
                await asyncio.sleep(0.05)
            print("spilled", meter.disk_depth, flush=True)
            os._exit(137)  # crash: no close(), no flush, nothing in memory survives

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 137, done.stderr
    assert "spilled 2000" in done.stdout

    pg_control.start()  # type: ignore[attr-defined]
    meter = UsageMeter(dsn, spill, flush_interval_s=0.05)
    await meter.start()
    await wait_until(lambda: meter.depth == 0)
    await meter.close()
    await assert_exactly_in_postgres(dsn, make_records(2000, seed=11))


async def test_memory_is_bounded_by_spilling_to_disk(dsn: str, tmp_path: Path) -> None:
    meter = UsageMeter(dsn, tmp_path / "spill", max_buffer=100, batch_size=50, segment_max_bytes=64 << 10)
    records = make_records(3000)
    for i, record in enumerate(records):  # writer not started yet: nothing drains memory but the spill
        meter.record(record)
        if i % 200 == 0:
            await asyncio.sleep(0)
    assert meter.depth == 3000  # memory + being written + on disk: never more, never less
    await wait_until(lambda: meter.memory_depth + meter.disk_depth == 3000)  # no write still in flight
    assert meter.memory_depth <= 100 and meter.disk_depth >= 2900 and meter.depth == 3000
    assert len(list((tmp_path / "spill").glob("usage-*.jsonl"))) > 1  # segments rotate
    await meter.start()
    await wait_until(lambda: meter.depth == 0)
    await meter.close()
    await assert_exactly_in_postgres(dsn, records)


async def test_invalid_rows_are_dead_lettered_without_blocking_the_rest(dsn: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    meter = UsageMeter(dsn, spill, batch_size=40)
    await meter.start()
    records = make_records(99)
    bad = make_records(1, seed=99)[0]
    bad.prompt_tokens = -5  # violates the CHECK constraint
    for record in records[:50] + [bad] + records[50:]:
        meter.record(record)
    await meter.close()
    assert meter.rejected_total == 1 and meter.depth == 0
    await assert_exactly_in_postgres(dsn, records)
    rejected = b"".join(p.read_bytes() for p in spill.glob("rejected-*.jsonl"))
    assert bad.request_id.encode() in rejected and rejected.count(b"\n") == 1


async def test_torn_last_line_is_skipped_and_the_rest_replayed(dsn: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    records = make_records(30)
    lines = b"".join(r.to_json() + b"\n" for r in records)
    (spill / "usage-000000000001.jsonl").write_bytes(lines + records[0].to_json()[:40])
    meter = UsageMeter(dsn, spill)
    await meter.start()
    await wait_until(lambda: meter.depth == 0)
    await meter.close()
    await assert_exactly_in_postgres(dsn, records)


async def test_spill_dir_belongs_to_one_process_at_a_time(dsn: str, tmp_path: Path) -> None:
    first = UsageMeter(dsn, tmp_path / "spill")
    await first.start()
    second = UsageMeter(dsn, tmp_path / "spill")
    with pytest.raises(RuntimeError, match="in use by another gateway process"):
        await second.start()
    await first.close()
    await second.start()
    await second.close()


async def test_record_never_raises_and_keeps_naive_timestamps_as_utc(dsn: str, tmp_path: Path) -> None:
    meter = UsageMeter(dsn, tmp_path / "spill")
    await meter.start()
    record = make_records(1)[0]
    record.created_at = datetime(2026, 1, 2, 3, 4, 5)
    meter.record(record)
    meter.record(None)  # type: ignore[arg-type]  # a caller bug must not break the request path
    await meter.close()
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval("SELECT created_at FROM usage_records")
    finally:
        await conn.close()
    assert stored == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_record_round_trips_through_json() -> None:
    record = make_records(1)[0]
    assert UsageRecord.from_json(record.to_json()) == record


async def test_records_arriving_after_close_go_to_disk_and_are_replayed(dsn: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    meter = UsageMeter(dsn, spill)
    await meter.start()
    records = make_records(3)
    meter.record(records[0])
    await meter.close()
    meter.record(records[1])  # e.g. a request that finished during shutdown
    meter.record(records[2])
    assert len(list(spill.glob("usage-*.jsonl"))) == 2
    successor = UsageMeter(dsn, spill)
    await successor.start()  # the straggler files did not keep the spill dir locked
    await wait_until(lambda: successor.depth == 0)
    await successor.close()
    await assert_exactly_in_postgres(dsn, records)


async def test_disk_full_during_an_outage_keeps_records_in_memory(
    dsn: str, tmp_path: Path, pg_control: object
) -> None:
    meter = UsageMeter(dsn, tmp_path / "spill", max_buffer=50, batch_size=20, flush_interval_s=0.05,
                       backoff_initial_s=0.05, backoff_max_s=0.2)
    await meter.start()
    healthy_append = meter._disk.append

    def disk_full(records: list[UsageRecord]) -> int:
        raise OSError(28, "No space left on device")

    meter._disk.append = disk_full  # type: ignore[method-assign]
    pg_control.stop()  # type: ignore[attr-defined]
    records = make_records(400)
    for i, record in enumerate(records):
        meter.record(record)
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    await wait_until(lambda: meter.spill_failures_total >= 2)
    assert meter.depth == 400 and meter.disk_depth == 0  # nowhere to go, so nothing leaves memory
    meter._disk.append = healthy_append  # type: ignore[method-assign]
    await wait_until(lambda: meter.disk_depth == 400)
    pg_control.start()  # type: ignore[attr-defined]
    await wait_until(lambda: meter.depth == 0)
    await meter.close()
    await assert_exactly_in_postgres(dsn, records)
