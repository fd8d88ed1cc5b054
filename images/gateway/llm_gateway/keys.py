"""API keys and organisations: creation, hashing, and authentication with an in-process cache.

Key format: ``sk-llmp-<key_id>_<secret>`` where ``key_id`` is 16 hex characters (public, safe to log) and
``secret`` is ``secrets.token_urlsafe(32)`` (256 random bits). Postgres stores only
HMAC-SHA256(pepper, key) — or SHA-256(key) without a pepper, which is enough for 256-bit random secrets.
The full key is returned once, at creation.

Authentication cost: a hit in the in-process cache costs one hash and a dict lookup, no Postgres query. The
cache is keyed by a keyed BLAKE2b of the key (a random salt per process, so the cache holds no plain keys and
nothing usable elsewhere): Python's own BLAKE2 avoids OpenSSL's per-call digest fetch, which measured ~16 µs
per request in the running gateway against ~7 µs. The stored hash below is computed only on a miss.
Entries (positive and negative) live ``cache_ttl_s`` / ``negative_ttl_s``; concurrent misses for the same
key share one query (single flight). Revocation, limit changes and org suspension therefore
reach every replica within ``cache_ttl_s``; the replica that performs the change drops its own entries
at once, and with ``start_listener()`` every replica also drops them as soon as Postgres delivers the
change's NOTIFY (usually milliseconds; ``cache_ttl_s`` stays the bound if the listener is down).
Key expiry (``expires_at``) is checked on every hit, so it is exact.
If Postgres is unreachable, a key seen within ``stale_ttl_s`` keeps working (stale entry) so a database
outage does not log every client out; an unknown key then gets ``ServiceUnavailable`` (503), not 401.
After a failed lookup, misses skip Postgres for ``db_retry_s``: an outage costs one timeout per
second, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import random
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from llm_gateway.errors import GatewayError, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-llmp-"
INVALIDATION_CHANNEL = "llm_gateway_keys"  # NOTIFY payloads: "key:<key_id>" or "org:<org_id>"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_MAX_SECRET_LEN = 128
ORG_LIMIT_FIELDS = ("rpm", "tpm", "daily_tokens", "daily_requests", "monthly_tokens")
KEY_LIMIT_FIELDS = ("rpm", "tpm", "burst", "max_inflight")


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


@dataclass(frozen=True, slots=True)
class OrgLimits:
    """``None`` = unlimited. Quota defaults live in the org row (seed: 10M tok/day, 100k req/day, 300M tok/month)."""

    rpm: int | None
    tpm: int | None
    daily_tokens: int | None
    daily_requests: int | None
    monthly_tokens: int | None


@dataclass(frozen=True, slots=True)
class KeyLimits:
    rpm: int | None
    tpm: int | None
    burst: int | None
    max_inflight: int | None


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str  # public key id, safe to log; never the secret
    org_id: str
    tier: str
    allowed_models: frozenset[str] | None  # None = every catalog model
    key_limits: KeyLimits
    org_limits: OrgLimits


@dataclass(frozen=True, slots=True)
class OrgInfo:
    id: str
    name: str
    tier: str
    limits: OrgLimits
    status: str
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "organization", "id": self.id, "name": self.name, "tier": self.tier,
            "status": self.status,
            **{field: getattr(self.limits, field) for field in ORG_LIMIT_FIELDS},
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Everything about a key except its secret and hash."""

    key_id: str
    org_id: str
    name: str
    allowed_models: list[str] | None
    tier: str | None
    limits: KeyLimits
    status: str
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "object": "api_key", "id": self.key_id, "org_id": self.org_id, "name": self.name,
            "allowed_models": self.allowed_models, "tier": self.tier, "status": self.status,
            **{field: getattr(self.limits, field) for field in KEY_LIMIT_FIELDS},
            "expires_at": iso(self.expires_at), "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at), "last_used_at": iso(self.last_used_at),
        }


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None`` (rejected without touching Postgres)."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX):].partition("_")
    if not sep or not _KEY_ID.match(key_id) or not 16 <= len(secret) <= _MAX_SECRET_LEN:
        return None
    return key_id, secret


async def write_audit(
    conn: asyncpg.Connection, actor: str, action: str, target_type: str, target_id: str,
    details: Mapping[str, Any] | None = None, remote_addr: str | None = None,
) -> None:
    """One audit row; callers pass it the same connection as the change so both commit together."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target_type, target_id, details, remote_addr) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        actor, action, target_type, target_id, orjson.dumps(dict(details or {}), default=str).decode(),
        remote_addr,
    )


@dataclass(slots=True)
class _CacheEntry:
    principal: Principal | None
    fresh_until: float  # monotonic clock
    stale_until: float  # monotonic clock; only positive entries are ever served stale
    key_expires_at: float | None  # wall clock (epoch seconds)


_LOOKUP_SQL = """
SELECT k.key_id, k.org_id, k.key_hash, k.allowed_models, coalesce(k.tier, o.tier) AS tier,
       k.rpm, k.tpm, k.burst, k.max_inflight, k.status, k.expires_at,
       o.status AS org_status, o.rpm AS org_rpm, o.tpm AS org_tpm, o.daily_tokens, o.daily_requests,
       o.monthly_tokens
FROM api_keys k JOIN orgs o ON o.id = k.org_id
WHERE k.key_id = $1
"""
_KEY_COLUMNS = ("key_id, org_id, name, allowed_models, tier, rpm, tpm, burst, max_inflight, status, "
                "expires_at, created_at, revoked_at, last_used_at")
_ORG_COLUMNS = "id, name, tier, rpm, tpm, daily_tokens, daily_requests, monthly_tokens, status, created_at, updated_at"


class KeyStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        cache_ttl_s: float = 5.0,
        negative_ttl_s: float = 1.0,
        *,
        stale_ttl_s: float = 300.0,
        max_cache_entries: int = 100_000,
        pepper: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        last_used_interval_s: float = 60.0,
        lookup_timeout_s: float = 2.0,
        db_retry_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self.cache_ttl_s = cache_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.stale_ttl_s = stale_ttl_s
        self._max_entries = max_cache_entries
        self._pepper = pepper
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: OrderedDict[bytes, _CacheEntry] = OrderedDict()  # keyed by ``_cache_key``
        self._cache_salt = secrets.token_bytes(16)
        self._inflight: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._last_used_interval_s = last_used_interval_s
        self._lookup_timeout_s = lookup_timeout_s
        self._db_retry_s = db_retry_s  # after a failed lookup, misses skip Postgres for this long
        self._db_retry_at = 0.0
        self._touched: set[str] = set()
        self._last_touch_flush = clock()
        self._background: set[asyncio.Task[None]] = set()
        self._generation = 0  # bumped by every invalidation
        self._listener: asyncio.Task[None] | None = None
        self.listening = False  # True while subscribed to other replicas' invalidations
        # Counters for metrics.
        self.cache_hits = 0
        self.cache_misses = 0
        self.db_lookups = 0
        self.stale_served = 0

    # ---- hashing ---------------------------------------------------------------------------------

    def hash_key(self, token: str) -> bytes:
        if self._pepper:
            return hmac.new(self._pepper, token.encode(), hashlib.sha256).digest()
        return hashlib.sha256(token.encode()).digest()

    def _cache_key(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._cache_salt, digest_size=16).digest()

    # ---- authentication (hot path) ---------------------------------------------------------------

    async def authenticate(self, bearer_token: str) -> Principal | None:
        """The key's principal, or ``None`` for an unknown, wrong, revoked or expired key or inactive org."""
        parsed = parse_key(bearer_token)
        if parsed is None:
            return None
        cache_key = self._cache_key(bearer_token)
        now = self._clock()
        entry = self._cache.get(cache_key)
        if entry is not None and now < entry.fresh_until:
            self._cache.move_to_end(cache_key)
            self.cache_hits += 1
            return self._unexpired(entry)
        self.cache_misses += 1
        if now < self._db_retry_at:
            return self._stale_or_unavailable(entry, now, None)  # Postgres just failed: don't pile on
        lookup = self._inflight.get(cache_key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._load(parsed[0], self.hash_key(bearer_token), cache_key))
            self._inflight[cache_key] = lookup
            lookup.add_done_callback(functools.partial(self._lookup_done, cache_key))
        try:
            # shield: one caller being cancelled (client went away) must not cancel the shared lookup.
            return await asyncio.shield(lookup)
        except Exception as exc:  # refused, timed out, connection broken mid-query (asyncpg raises several kinds)
            log.warning("key lookup failed: %s", type(exc).__name__)
            self._db_retry_at = self._clock() + self._db_retry_s
            return self._stale_or_unavailable(entry, now, exc)

    def _stale_or_unavailable(self, entry: _CacheEntry | None, now: float, exc: BaseException | None) -> Principal | None:
        """During a Postgres outage: a recently valid key keeps working; any other key gets a 503, not a 401."""
        if entry is not None and entry.principal is not None and now < entry.stale_until:
            self.stale_served += 1
            return self._unexpired(entry)
        raise ServiceUnavailable("API key store temporarily unavailable; retry shortly") from exc

    def _lookup_done(self, key: bytes, done: asyncio.Future[Principal | None]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # marks it retrieved even if every waiter was cancelled

    def _unexpired(self, entry: _CacheEntry) -> Principal | None:
        if entry.key_expires_at is not None and self._wall_clock() >= entry.key_expires_at:
            return None
        return entry.principal

    async def _load(self, key_id: str, digest: bytes, cache_key: bytes) -> Principal | None:
        self.db_lookups += 1
        generation = self._generation
        try:
            row = await asyncio.wait_for(self._pool.fetchrow(_LOOKUP_SQL, key_id), self._lookup_timeout_s)
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError):
            # Once: after a database restart or failover the pool still holds dead connections.
            row = await asyncio.wait_for(self._pool.fetchrow(_LOOKUP_SQL, key_id), self._lookup_timeout_s)
        principal, key_expires_at = self._principal_from_row(row, digest)
        now = self._clock()
        ttl = self.cache_ttl_s if principal is not None else self.negative_ttl_s
        entry = _CacheEntry(principal, now + ttl, now + max(ttl, self.stale_ttl_s), key_expires_at)
        if generation == self._generation:
            # Not cached if an invalidation ran during the query: the row may predate a revocation.
            self._store(cache_key, entry)
        if principal is not None:
            self._touch(principal.key_id)
        return self._unexpired(entry)

    def _principal_from_row(self, row: asyncpg.Record | None, digest: bytes) -> tuple[Principal | None, float | None]:
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
            return None, None
        if row["status"] != "active" or row["org_status"] != "active":
            return None, None
        expires_at: datetime | None = row["expires_at"]
        key_expires_at = expires_at.timestamp() if expires_at is not None else None
        if key_expires_at is not None and self._wall_clock() >= key_expires_at:
            return None, None
        allowed = row["allowed_models"]
        principal = Principal(
            key_id=row["key_id"],
            org_id=row["org_id"],
            tier=row["tier"],
            allowed_models=frozenset(allowed) if allowed is not None else None,
            key_limits=KeyLimits(row["rpm"], row["tpm"], row["burst"], row["max_inflight"]),
            org_limits=OrgLimits(row["org_rpm"], row["org_tpm"], row["daily_tokens"], row["daily_requests"],
                                 row["monthly_tokens"]),
        )
        return principal, key_expires_at

    def _store(self, cache_key: bytes, entry: _CacheEntry) -> None:
        self._cache[cache_key] = entry
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def invalidate(self, *, key_id: str | None = None, org_id: str | None = None) -> int:
        """Drop this replica's cache entries for a key or a whole org; returns how many were dropped."""
        self._generation += 1
        self._inflight.clear()  # later callers must not join a lookup that started before the change
        doomed = [
            digest for digest, entry in self._cache.items()
            if entry.principal is not None
            and ((key_id is not None and entry.principal.key_id == key_id)
                 or (org_id is not None and entry.principal.org_id == org_id))
        ]
        for digest in doomed:
            del self._cache[digest]
        return len(doomed)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # ---- cross-replica invalidation (LISTEN/NOTIFY) ----------------------------------------------

    async def start_listener(self, health_check_s: float = 5.0) -> None:
        """Listen for other replicas' revocations and org changes; holds one pool connection until ``close()``."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(health_check_s), name="keystore-listener")

    async def close(self) -> None:
        """Stop the listener (returning its connection to the pool) and finish background writes."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _listen_forever(self, health_check_s: float) -> None:
        delay = 0.5
        while True:
            try:
                async with self._pool.acquire() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _conn: lost.set())
                    await conn.add_listener(INVALIDATION_CHANNEL, self._on_notification)
                    # Changes made while we were not listening were never delivered: start from a clean cache.
                    self._drop_everything()
                    self.listening, delay = True, 0.5
                    try:
                        while not lost.is_set():
                            try:
                                await asyncio.wait_for(lost.wait(), timeout=health_check_s)
                            except asyncio.TimeoutError:
                                await conn.fetchval("SELECT 1", timeout=2.0)  # a silently dead connection raises
                    finally:
                        self.listening = False
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(INVALIDATION_CHANNEL, self._on_notification)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("key invalidation listener lost (%s); cache TTL still applies", type(exc).__name__)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 30.0)

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        if kind == "key":
            self.invalidate(key_id=ident)
        elif kind == "org":
            self.invalidate(org_id=ident)

    def _drop_everything(self) -> None:
        self._generation += 1
        self._inflight.clear()
        self._cache.clear()

    def _touch(self, key_id: str) -> None:
        """Remember a used key; ``last_used_at`` is written in batches, at most once per interval."""
        self._touched.add(key_id)
        now = self._clock()
        if now - self._last_touch_flush < self._last_used_interval_s:
            return
        self._last_touch_flush = now
        task = asyncio.ensure_future(self.flush_last_used())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush_last_used(self) -> None:
        touched, self._touched = self._touched, set()
        if not touched:
            return
        try:
            await self._pool.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = ANY($1::text[])",
                                     sorted(touched))
        except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
            log.info("last_used_at update skipped: %s", type(exc).__name__)

    # ---- organisations (admin) -------------------------------------------------------------------

    async def create_org(
        self, org_id: str, name: str, *, tier: str = "standard", limits: Mapping[str, int | None] | None = None,
        actor: str = "system", remote_addr: str | None = None,
    ) -> OrgInfo:
        """A new org. ``limits`` keys are ``ORG_LIMIT_FIELDS``; absent quotas take the seed defaults."""
        limits = dict(limits or {})
        _only(limits, ORG_LIMIT_FIELDS)
        columns = ["id", "name", "tier", *limits]
        values: list[Any] = [org_id, name, tier, *limits.values()]
        placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO orgs ({', '.join(columns)}) VALUES ({placeholders}) RETURNING {_ORG_COLUMNS}",
                    *values,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"organization {org_id!r} already exists", param="id") from None
            await write_audit(conn, actor, "org.create", "org", org_id,
                              {"name": name, "tier": tier, **limits}, remote_addr)
        return _org_from_row(row)

    async def update_org(
        self, org_id: str, changes: Mapping[str, Any], *, actor: str = "system", remote_addr: str | None = None,
    ) -> OrgInfo:
        """Set any of name, tier, status and ``ORG_LIMIT_FIELDS`` (``None`` = unlimited)."""
        changes = dict(changes)
        _only(changes, ("name", "tier", "status", *ORG_LIMIT_FIELDS))
        async with self._pool.acquire() as conn, conn.transaction():
            if changes:
                assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
                row = await conn.fetchrow(
                    f"UPDATE orgs SET {assignments}, updated_at = now() WHERE id = $1 RETURNING {_ORG_COLUMNS}",
                    org_id, *changes.values(),
                )
            else:
                row = await conn.fetchrow(f"SELECT {_ORG_COLUMNS} FROM orgs WHERE id = $1", org_id)
            if row is None:
                raise NotFound(f"organization {org_id!r} does not exist", param="org_id")
            await write_audit(conn, actor, "org.update", "org", org_id, changes, remote_addr)
            await conn.execute("SELECT pg_notify($1, $2)", INVALIDATION_CHANNEL, f"org:{org_id}")  # sent on commit
        self.invalidate(org_id=org_id)
        return _org_from_row(row)

    async def get_org(self, org_id: str) -> OrgInfo:
        row = await self._pool.fetchrow(f"SELECT {_ORG_COLUMNS} FROM orgs WHERE id = $1", org_id)
        if row is None:
            raise NotFound(f"organization {org_id!r} does not exist", param="org_id")
        return _org_from_row(row)

    async def list_orgs(self) -> list[OrgInfo]:
        rows = await self._pool.fetch(f"SELECT {_ORG_COLUMNS} FROM orgs ORDER BY created_at, id")
        return [_org_from_row(row) for row in rows]

    # ---- keys (admin) ----------------------------------------------------------------------------

    async def create_key(
        self, org_id: str, *, name: str = "", allowed_models: Iterable[str] | None = None,
        tier: str | None = None, limits: Mapping[str, int | None] | None = None,
        expires_at: datetime | None = None, actor: str = "system", remote_addr: str | None = None,
    ) -> tuple[str, KeyInfo]:
        """``(full_key, info)``; the full key exists only in this return value."""
        limits = dict(limits or {})
        _only(limits, KEY_LIMIT_FIELDS)
        models = sorted(set(allowed_models)) if allowed_models is not None else None
        key_id = secrets.token_hex(8)
        full_key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        async with self._pool.acquire() as conn, conn.transaction():
            org_status = await conn.fetchval("SELECT status FROM orgs WHERE id = $1 FOR SHARE", org_id)
            if org_status is None:
                raise NotFound(f"organization {org_id!r} does not exist", param="org_id")
            row = await conn.fetchrow(
                f"""INSERT INTO api_keys (key_id, org_id, key_hash, name, allowed_models, tier,
                                          rpm, tpm, burst, max_inflight, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_KEY_COLUMNS}""",
                key_id, org_id, self.hash_key(full_key), name, models, tier,
                *(limits.get(field) for field in KEY_LIMIT_FIELDS), expires_at,
            )
            await write_audit(
                conn, actor, "key.create", "api_key", key_id,
                {"org_id": org_id, "name": name, "allowed_models": models, "tier": tier, **limits,
                 "expires_at": expires_at.isoformat() if expires_at else None},
                remote_addr,
            )
        return full_key, _key_from_row(row)

    async def update_key(
        self, key_id: str, changes: Mapping[str, Any], *, actor: str = "system", remote_addr: str | None = None,
    ) -> KeyInfo:
        """Change a key's name, allowed_models, tier, limits or expiry (``None`` = unlimited / never / all)."""
        changes = dict(changes)
        _only(changes, ("name", "allowed_models", "tier", "expires_at", *KEY_LIMIT_FIELDS))
        if changes.get("allowed_models") is not None:
            changes["allowed_models"] = sorted(set(changes["allowed_models"]))
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval("SELECT status FROM api_keys WHERE key_id = $1 FOR UPDATE", key_id)
            if status is None:
                raise NotFound(f"API key {key_id!r} does not exist", param="key_id")
            if status != "active":
                raise Conflict(f"API key {key_id!r} is {status}; create a new key instead", param="key_id")
            if changes:
                assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
                row = await conn.fetchrow(
                    f"UPDATE api_keys SET {assignments} WHERE key_id = $1 RETURNING {_KEY_COLUMNS}",
                    key_id, *changes.values())
            else:
                row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
            await write_audit(conn, actor, "key.update", "api_key", key_id, {"org_id": row["org_id"], **changes},
                              remote_addr)
            await conn.execute("SELECT pg_notify($1, $2)", INVALIDATION_CHANNEL, f"key:{key_id}")
        self.invalidate(key_id=key_id)
        return _key_from_row(row)

    async def list_keys(self, org_id: str) -> list[KeyInfo]:
        async with self._pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM orgs WHERE id = $1", org_id) is None:
                raise NotFound(f"organization {org_id!r} does not exist", param="org_id")
            rows = await conn.fetch(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, key_id", org_id)
        return [_key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: str, *, actor: str = "system", remote_addr: str | None = None) -> KeyInfo:
        """Revoke now (idempotent). Other replicas stop accepting the key within ``cache_ttl_s``."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE api_keys SET status = 'revoked', revoked_at = coalesce(revoked_at, now())
                    WHERE key_id = $1 RETURNING {_KEY_COLUMNS}""",
                key_id,
            )
            if row is None:
                raise NotFound(f"API key {key_id!r} does not exist", param="key_id")
            await write_audit(conn, actor, "key.revoke", "api_key", key_id, {"org_id": row["org_id"]}, remote_addr)
            await conn.execute("SELECT pg_notify($1, $2)", INVALIDATION_CHANNEL, f"key:{key_id}")  # sent on commit
        self.invalidate(key_id=key_id)
        return _key_from_row(row)


def _only(values: Mapping[str, Any], allowed: Iterable[str]) -> None:
    # Column names are interpolated into SQL, so they must come from a fixed list, never from input.
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _org_from_row(row: asyncpg.Record) -> OrgInfo:
    return OrgInfo(
        id=row["id"], name=row["name"], tier=row["tier"],
        limits=OrgLimits(*(row[field] for field in ORG_LIMIT_FIELDS)),
        status=row["status"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _key_from_row(row: asyncpg.Record) -> KeyInfo:
    allowed = row["allowed_models"]
    return KeyInfo(
        key_id=row["key_id"], org_id=row["org_id"], name=row["name"],
        allowed_models=list(allowed) if allowed is not None else None, tier=row["tier"],
        limits=KeyLimits(*(row[field] for field in KEY_LIMIT_FIELDS)), status=row["status"],
        expires_at=row["expires_at"], created_at=row["created_at"], revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
