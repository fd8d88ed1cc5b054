"""Usage metering: every request's usage reaches Postgres exactly once, even across Postgres outages.

Path of a record:
1. ``record()`` appends it to an in-memory deque (O(1); never blocks, raises or drops).
2. The writer task wakes every ``flush_interval_s`` (or as soon as ``batch_size`` records wait) and writes
   batches with one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT (request_id) DO NOTHING`` each.
3. If Postgres is unreachable, or memory passes ``max_buffer``, records go to append-only JSON-lines
   segment files under ``spill_dir`` (fsync'd after every append, rotated at ``segment_max_bytes``).
   When Postgres is back, sealed segments are replayed oldest first and deleted after their rows commit.
4. ``close()`` writes what is in memory, or spills it if Postgres is down: nothing is left only in memory.

Exactly once: ``request_id`` is UNIQUE and every insert is ``ON CONFLICT DO NOTHING``, so a batch whose
commit outcome is unknown (connection lost mid-write) is simply spilled and replayed again.
Rows Postgres rejects as invalid (a CHECK or type violation; a caller bug) must not block the rest:
they are isolated one by one and kept in ``rejected-*.jsonl`` in the spill dir, never replayed.
One process owns a spill dir at a time (``flock`` on ``spill_dir/.lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import asyncpg
import orjson

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    org_id: str
    key_id: str
    model: str
    backend: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    status: int
    cache_hit: bool
    cost_usd: float
    created_at: datetime  # timezone-aware UTC

    def to_json(self) -> bytes:
        return orjson.dumps(self, default=_json_default)

    @classmethod
    def from_json(cls, line: bytes) -> UsageRecord:
        raw = orjson.loads(line)
        values = {name: raw[name] for name in _RECORD_FIELDS}  # KeyError on a torn or foreign line
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        return cls(**values)


_RECORD_FIELDS = tuple(f.name for f in fields(UsageRecord))


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


# Errors that say "this row is bad", as opposed to "Postgres is unavailable right now".
_POISON_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, TypeError, ValueError, ArithmeticError,
)

_INSERT_SQL = """
INSERT INTO usage_records (request_id, org_id, key_id, model, backend, prompt_tokens, completion_tokens,
                           latency_ms, ttft_ms, status, cache_hit, cost_usd, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[],
                     $8::float8[], $9::float8[], $10::int[], $11::bool[], $12::numeric[], $13::timestamptz[])
ON CONFLICT (request_id) DO NOTHING
"""


def _columns(records: list[UsageRecord]) -> list[list[Any]]:
    return [
        [r.request_id for r in records], [r.org_id for r in records], [r.key_id for r in records],
        [r.model for r in records], [r.backend for r in records], [r.prompt_tokens for r in records],
        [r.completion_tokens for r in records], [r.latency_ms for r in records], [r.ttft_ms for r in records],
        [r.status for r in records], [r.cache_hit for r in records],
        [Decimal(str(r.cost_usd)) for r in records], [r.created_at for r in records],
    ]


class SpillStore:
    """Append-only, fsync'd JSON-lines segments in one directory. Blocking: call it from a thread."""

    _SEGMENT = re.compile(r"^usage-(\d{12})\.jsonl$")

    def __init__(self, directory: Path, segment_max_bytes: int = 8 << 20) -> None:
        self.directory = Path(directory)
        self.segment_max_bytes = segment_max_bytes
        self._lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self._opened = False
        self._next_seq = 1
        self._active: IO[bytes] | None = None
        self._active_path: Path | None = None
        self._counts: dict[Path, int] = {}  # records per segment, active one included
        self.corrupt_lines = 0

    def open(self) -> int:
        """Take the dir lock; returns how many records the existing segments hold."""
        with self._lock:
            self._open_locked()
            return sum(self._counts.values())

    def _open_locked(self) -> None:
        if self._opened:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.directory / ".lock", "ab")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise RuntimeError(
                f"spill dir {self.directory} is in use by another gateway process; each process needs its own"
            ) from None
        self._lock_file = lock_file
        for path in self._segments():
            self._counts[path] = _count_lines(path)
            self._next_seq = max(self._next_seq, self._seq(path) + 1)
        self._opened = True

    def _seq(self, path: Path) -> int:
        match = self._SEGMENT.match(path.name)
        assert match is not None
        return int(match.group(1))

    def _segments(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if self._SEGMENT.match(p.name))

    def append(self, records: list[UsageRecord]) -> int:
        """Returns how many records are now durably on disk (all of them, or it raises)."""
        if not records:
            return 0
        lines = [record.to_json() + b"\n" for record in records]
        with self._lock:
            self._open_locked()
            start = 0
            while start < len(lines):
                if self._active is None:
                    self._active_path = self.directory / f"usage-{self._next_seq:012d}.jsonl"
                    self._next_seq += 1
                    self._active = open(self._active_path, "ab")
                    self._counts[self._active_path] = 0
                    _fsync_dir(self.directory)  # the new file's name must survive a crash too
                assert self._active_path is not None
                room = self.segment_max_bytes - self._active.tell()
                end, size = start + 1, len(lines[start])  # at least one line per segment
                while end < len(lines) and size + len(lines[end]) <= room:
                    size += len(lines[end])
                    end += 1
                self._active.write(b"".join(lines[start:end]))
                self._active.flush()
                os.fsync(self._active.fileno())
                self._counts[self._active_path] += end - start
                if self._active.tell() >= self.segment_max_bytes or end < len(lines):
                    self._seal_locked()
                start = end
        return len(records)

    def append_detached(self, records: list[UsageRecord]) -> Path:
        """A new segment for records that arrive after ``close()``, written without taking the dir lock."""
        self.directory.mkdir(parents=True, exist_ok=True)
        seq = max((self._seq(p) for p in self._segments()), default=0) + 1
        while True:
            path = self.directory / f"usage-{seq:012d}.jsonl"
            try:
                out = open(path, "xb")
            except FileExistsError:
                seq += 1
                continue
            with out:
                out.write(b"".join(record.to_json() + b"\n" for record in records))
                out.flush()
                os.fsync(out.fileno())
            _fsync_dir(self.directory)
            return path

    def reject(self, records: list[UsageRecord]) -> Path:
        """Dead-letter file for rows Postgres refuses; kept for an operator, never replayed."""
        path = self.directory / f"rejected-{time.time_ns()}.jsonl"
        with open(path, "ab") as out:
            out.write(b"".join(record.to_json() + b"\n" for record in records))
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(self.directory)
        return path

    def _seal_locked(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
            self._active_path = None

    def sealed_segments(self) -> list[Path]:
        """Every segment, oldest first, after sealing the one being appended to (so it can be replayed)."""
        with self._lock:
            self._open_locked()
            self._seal_locked()
            return self._segments()

    def read(self, path: Path) -> list[UsageRecord]:
        records: list[UsageRecord] = []
        with open(path, "rb") as segment:
            for number, line in enumerate(segment, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(UsageRecord.from_json(line))
                except (ValueError, KeyError, TypeError):
                    # Only the last line of a segment can be torn (a crash during its write, before fsync).
                    self.corrupt_lines += 1
                    log.warning("skipping unreadable line %d of usage spill segment %s", number, path.name)
        return records

    def remove(self, path: Path) -> int:
        """Delete a replayed segment; returns how many records it held."""
        with self._lock:
            path.unlink(missing_ok=True)
            _fsync_dir(self.directory)
            return self._counts.pop(path, 0)

    def close(self) -> None:
        with self._lock:
            self._seal_locked()
            if self._lock_file is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None
            self._opened = False
            self._counts.clear()


def _count_lines(path: Path) -> int:
    with open(path, "rb") as segment:
        return sum(1 for line in segment if line.strip())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UsageMeter:
    def __init__(
        self,
        dsn: str,
        spill_dir: Path,
        max_buffer: int = 100_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        *,
        segment_max_bytes: int = 8 << 20,
        connect_timeout_s: float = 5.0,
        write_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        on_write_failure: Callable[[BaseException], None] | None = None,
        password: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._dsn = dsn
        self._password = password  # called for every new connection (rotated credentials, IAM tokens)
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._write_timeout_s = write_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self.on_write_failure = on_write_failure
        self._disk = SpillStore(Path(spill_dir), segment_max_bytes)
        self._memory: deque[UsageRecord] = deque()
        self._in_flight = 0  # taken from memory, not yet in Postgres or on disk
        # Updated only on the event loop, in the same step as _in_flight, so depth never counts a record twice.
        self._disk_count = 0
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._overflow: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._consecutive_failures = 0
        self._next_connect_at = 0.0
        self._closing = False
        self._closed = False
        # Read by metrics (GW-CORE polls these) and by tests.
        self.postgres_up = False
        self.written_total = 0  # rows inserted
        self.duplicates_total = 0  # rows skipped by ON CONFLICT (replays of already-written records)
        self.spilled_total = 0
        self.replayed_total = 0
        self.rejected_total = 0
        self.write_failures_total = 0  # failed connects or writes (each one triggers a spill)
        self.spill_failures_total = 0  # failed disk writes (records then stay in memory)
        self._spill_retry_at = 0.0

    # ---- hot path --------------------------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        try:
            if rec.created_at.tzinfo is None:
                rec.created_at = rec.created_at.replace(tzinfo=timezone.utc)
            if self._closed:
                self._disk.append_detached([rec])  # a straggler after close(): rare, so blocking is fine
                return
            self._memory.append(rec)
            depth = len(self._memory)
            if depth >= self._batch_size:
                self._wake.set()
            if depth > self._max_buffer and (self._overflow is None or self._overflow.done()):
                self._overflow = asyncio.get_running_loop().create_task(self._spill_overflow())
        except Exception:
            log.exception("usage record could not be queued")  # never propagate into the request path

    @property
    def depth(self) -> int:
        """Records not yet in Postgres: in memory, being written, and on disk."""
        return len(self._memory) + self._in_flight + self._disk_count

    @property
    def memory_depth(self) -> int:
        return len(self._memory)

    @property
    def disk_depth(self) -> int:
        return self._disk_count

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spill dir (its records count towards ``depth``) and start the writer, which replays them."""
        self._disk_count = await asyncio.to_thread(self._disk.open)
        self._closing = self._closed = False
        self._writer = asyncio.create_task(self._run(), name="usage-meter-writer")
        self._wake.set()

    async def flush(self) -> bool:
        """Write everything now (disk first, then memory), ignoring the reconnect backoff; True if depth is 0."""
        self._next_connect_at = 0.0
        async with self._drain_lock:
            await self._drain()
        return self.depth == 0

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._overflow is not None:
            await self._overflow
        async with self._drain_lock:
            self._next_connect_at = 0.0  # one last attempt regardless of backoff
            conn = await self._connection()
            while self._memory and conn is not None:
                if not await self._write_batch(conn, self._take(self._batch_size)):
                    break
                conn = self._conn
            await self._spill(self._take(len(self._memory)))
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close(timeout=2.0)
                self._conn = None
            await asyncio.to_thread(self._disk.close)
            self._disk_count = 0  # what is on disk now belongs to the next process using this dir
            self._closed = True  # from here on record() writes straight to disk
            late = self._take(len(self._memory))  # arrived during the awaits above
            if late:
                try:
                    self._disk.append_detached(late)
                except OSError:
                    log.error("could not write %d usage records to %s during shutdown: they are lost",
                              len(late), self._disk.directory)

    # ---- writer ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                break
            try:
                async with self._drain_lock:
                    await self._drain()
            except Exception:
                log.exception("usage writer iteration failed; retrying")  # the writer never dies

    async def _drain(self) -> None:
        conn = await self._connection()
        if conn is None or not await self._replay_disk(conn):
            # Postgres is down: put memory on disk now, so a crash during the outage loses nothing.
            await self._spill(self._take(len(self._memory)))
            return
        while self._memory:
            if not await self._write_batch(conn, self._take(self._batch_size)):
                await self._spill(self._take(len(self._memory)))
                return

    def _take(self, count: int) -> list[UsageRecord]:
        count = min(count, len(self._memory))
        return [self._memory.popleft() for _ in range(count)]

    async def _write_batch(self, conn: asyncpg.Connection, batch: list[UsageRecord]) -> bool:
        """Insert ``batch``; on a connection failure it is spilled instead. False when Postgres is down."""
        self._in_flight += len(batch)
        try:
            ok = await self._insert(conn, batch)
        finally:
            self._in_flight -= len(batch)
        if not ok:
            await self._spill(batch)
        return ok

    async def _insert(self, conn: asyncpg.Connection, records: list[UsageRecord]) -> bool:
        """True once every record is in Postgres (or dead-lettered as invalid); False if Postgres failed."""
        try:
            self._count_inserted(len(records), await conn.execute(
                _INSERT_SQL, *_columns(records), timeout=self._write_timeout_s))
            return True
        except _POISON_ERRORS:
            if len(records) == 1:
                self.rejected_total += 1
                try:
                    await asyncio.to_thread(self._disk.reject, records)
                    log.error("usage record %s rejected by Postgres; kept in the spill dir's rejected-*.jsonl",
                              records[0].request_id)
                except OSError:
                    log.error("usage record rejected by Postgres and not writable to disk: %s",
                              records[0].to_json().decode())  # the log line is then its only copy
                return True
            for record in records:  # isolate the bad rows; the good ones still go in
                if not await self._insert(conn, [record]):
                    return False
            return True
        except Exception as exc:  # connection lost, timeout, failover, schema not migrated yet, ...
            await self._mark_down(exc)
            return False

    def _count_inserted(self, attempted: int, status: str) -> None:
        inserted = int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <n>"
        self.written_total += inserted
        self.duplicates_total += attempted - inserted

    async def _replay_disk(self, conn: asyncpg.Connection) -> bool:
        if self._disk_count == 0:
            return True
        for segment in await asyncio.to_thread(self._disk.sealed_segments):
            records = await asyncio.to_thread(self._disk.read, segment)
            for start in range(0, len(records), self._batch_size):
                if not await self._insert(conn, records[start:start + self._batch_size]):
                    return False  # the segment stays; rows already written are skipped on the next replay
            self._disk_count -= await asyncio.to_thread(self._disk.remove, segment)
            self.replayed_total += len(records)
        return True

    async def _spill(self, records: list[UsageRecord]) -> bool:
        if not records:
            return True
        self._in_flight += len(records)
        try:
            self._disk_count += await asyncio.to_thread(self._disk.append, records)
            self.spilled_total += len(records)
            return True
        except Exception:
            # Disk full or unwritable: keep them in memory (at the front, in order) rather than lose them;
            # with both Postgres and the disk failing, memory is the last resort and max_buffer is exceeded.
            log.exception("usage spill to %s failed; keeping %d records in memory", self._disk.directory,
                          len(records))
            self.spill_failures_total += 1
            self._spill_retry_at = time.monotonic() + 1.0
            self._memory.extendleft(reversed(records))
            return False
        finally:
            self._in_flight -= len(records)

    async def _spill_overflow(self) -> None:
        """Bring memory back to ``max_buffer`` by moving the newest records to disk."""
        while (excess := len(self._memory) - self._max_buffer) > 0:  # records keep arriving while we write
            if time.monotonic() < self._spill_retry_at:
                return  # the disk just failed: don't spin on it
            newest = [self._memory.pop() for _ in range(excess)]
            newest.reverse()
            if not await self._spill(newest):
                return

    # ---- connection ------------------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection | None:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        if time.monotonic() < self._next_connect_at:
            return None
        try:
            self._conn = await asyncpg.connect(self._dsn, password=self._password, timeout=self._connect_timeout_s)
        except Exception as exc:
            await self._mark_down(exc)
            return None
        self._consecutive_failures = 0
        self.postgres_up = True
        return self._conn

    async def _mark_down(self, exc: BaseException) -> None:
        self.postgres_up = False
        self.write_failures_total += 1
        self._consecutive_failures += 1
        delay = min(self._backoff_max_s, self._backoff_initial_s * 2 ** (self._consecutive_failures - 1))
        self._next_connect_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
        log.warning("usage writes to Postgres failed (%s: %s); spilling to disk, retry in %.1fs",
                    type(exc).__name__, exc, delay)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # its state is unknown after a failure; a fresh connection is cheap
        if self.on_write_failure is not None:
            try:
                self.on_write_failure(exc)
            except Exception:
                log.exception("usage meter on_write_failure hook failed")
