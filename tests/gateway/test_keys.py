"""KeyStore: key format, hashing, authentication, cache behaviour, revocation, expiry, org status."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from llm_gateway.errors import NotFound, ServiceUnavailable
from llm_gateway.keys import KEY_PREFIX, Conflict, KeyStore, parse_key
from tests.gateway.gwdata_support import CountingPool, pool  # noqa: F401  (fixture)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _org(store: KeyStore, org_id: str = "acme") -> None:
    await store.create_org(org_id, org_id.title(), limits={"rpm": 600})


async def test_key_format_and_only_the_hash_is_stored(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool)
    await _org(store)
    full_key, info = await store.create_key("acme", name="ci")
    assert full_key.startswith(KEY_PREFIX)
    key_id, secret = parse_key(full_key) or ("", "")
    assert key_id == info.key_id and len(key_id) == 16 and len(secret) >= 43
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    assert bytes(row["key_hash"]) == hashlib.sha256(full_key.encode()).digest()
    dumped = " ".join(str(v) for v in row.values())
    assert secret not in dumped and full_key not in dumped
    assert secret not in str(info.to_json()) and "hash" not in str(info.to_json())
    audit = await pool.fetch("SELECT action, details::text FROM audit_log ORDER BY id")
    assert [a["action"] for a in audit] == ["org.create", "key.create"]
    assert all(secret not in a["details"] for a in audit)


async def test_authenticate_returns_principal_with_limits(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool)
    await store.create_org("acme", "Acme", tier="gold", limits={"rpm": 600, "daily_tokens": 5000})
    full_key, info = await store.create_key("acme", allowed_models=["m2", "m1"], limits={"tpm": 1000, "burst": 20})
    principal = await store.authenticate(full_key)
    assert principal is not None
    assert principal.key_id == info.key_id and principal.org_id == "acme" and principal.tier == "gold"
    assert principal.allowed_models == frozenset({"m1", "m2"})
    assert principal.key_limits.tpm == 1000 and principal.key_limits.burst == 20 and principal.key_limits.rpm is None
    assert principal.org_limits.rpm == 600 and principal.org_limits.daily_tokens == 5000
    assert principal.org_limits.daily_requests == 100_000 and principal.org_limits.monthly_tokens == 300_000_000
    other_key, _ = await store.create_key("acme", tier="bronze")
    other = await store.authenticate(other_key)
    assert other is not None and other.tier == "bronze" and other.allowed_models is None


async def test_wrong_and_malformed_keys_are_rejected(pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    store = KeyStore(counting)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    key_id, secret = parse_key(full_key) or ("", "")
    before = counting.queries
    # "separator missing" must not start the secret with the separator itself (token_urlsafe does, 1 key in 64)
    no_separator = f"sk-llmp-{key_id}" + secret.lstrip("_")
    for malformed in ["", "Bearer x", "sk-llmp-", "sk-llmp-nothex0000000000_" + secret, no_separator,
                      "sk-other-" + key_id + "_" + secret, f"{KEY_PREFIX}{key_id}_short"]:
        assert await store.authenticate(malformed) is None
    assert counting.queries == before  # malformed keys never reach Postgres
    wrong_secret = f"{KEY_PREFIX}{key_id}_{'A' * len(secret)}"
    assert await store.authenticate(wrong_secret) is None
    unknown_id = f"{KEY_PREFIX}{'0' * 16}_{secret}"
    assert await store.authenticate(unknown_id) is None
    assert await store.authenticate(full_key) is not None  # a wrong guess does not poison the real key


async def test_cache_hit_makes_no_query_and_negative_entries_are_cached(pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    clock = FakeClock()
    store = KeyStore(counting, cache_ttl_s=5.0, negative_ttl_s=1.0, clock=clock)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    before = counting.queries
    for _ in range(100):
        assert await store.authenticate(full_key) is not None
    assert counting.queries == before + 1
    clock.now += 5.1
    assert await store.authenticate(full_key) is not None
    assert counting.queries == before + 2
    unknown = f"{KEY_PREFIX}{'1' * 16}_{'x' * 43}"
    for _ in range(50):
        assert await store.authenticate(unknown) is None
    assert counting.queries == before + 3
    clock.now += 1.1
    assert await store.authenticate(unknown) is None
    assert counting.queries == before + 4


async def test_cache_holds_no_plain_key_nor_the_stored_hash(pool: asyncpg.Pool) -> None:
    """The in-process cache is keyed by a salted BLAKE2b: a heap dump shows neither keys nor database hashes, and
    two replicas' cache keys for the same key differ."""
    counting = CountingPool(pool)
    store, other = KeyStore(counting), KeyStore(pool)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    assert await store.authenticate(full_key) is not None and await other.authenticate(full_key) is not None
    (cached,) = list(store._cache)
    (cached_elsewhere,) = list(other._cache)
    assert full_key.encode() not in cached and cached != hashlib.sha256(full_key.encode()).digest()
    assert cached != cached_elsewhere
    queries = counting.queries
    assert await store.authenticate(full_key) is not None  # a hit: found under the same cache key
    assert counting.queries == queries


async def test_concurrent_misses_share_one_query(pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    store = KeyStore(counting)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    before = counting.queries
    results = await asyncio.gather(*(store.authenticate(full_key) for _ in range(50)))
    assert all(r is not None for r in results)
    assert counting.queries == before + 1


async def test_cancelled_caller_does_not_break_the_shared_lookup(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    first = asyncio.ensure_future(store.authenticate(full_key))
    second = asyncio.ensure_future(store.authenticate(full_key))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is not None


async def test_revocation_is_immediate_locally_and_within_ttl_on_other_replicas(pool: asyncpg.Pool) -> None:
    clock = FakeClock()
    admin_replica = KeyStore(pool, cache_ttl_s=5.0, clock=clock)
    other_replica = KeyStore(pool, cache_ttl_s=5.0, clock=clock)
    await _org(admin_replica)
    full_key, info = await admin_replica.create_key("acme")
    assert await admin_replica.authenticate(full_key) is not None
    assert await other_replica.authenticate(full_key) is not None
    revoked = await admin_replica.revoke_key(info.key_id)
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert await admin_replica.authenticate(full_key) is None  # same replica: at once
    assert await other_replica.authenticate(full_key) is not None  # other replica: still cached ...
    clock.now += 5.01
    assert await other_replica.authenticate(full_key) is None  # ... until cache_ttl_s has passed
    again = await admin_replica.revoke_key(info.key_id)  # idempotent
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        await admin_replica.revoke_key("0123456789abcdef")


async def test_expired_key_is_rejected_even_when_cached(pool: asyncpg.Pool) -> None:
    wall = FakeClock()
    wall.now = datetime.now(timezone.utc).timestamp()
    store = KeyStore(pool, cache_ttl_s=3600.0, wall_clock=wall)
    await _org(store)
    expires = datetime.fromtimestamp(wall.now, timezone.utc) + timedelta(minutes=10)
    full_key, _ = await store.create_key("acme", expires_at=expires)
    assert await store.authenticate(full_key) is not None
    wall.now += 601
    assert await store.authenticate(full_key) is None  # cached entry, expiry still enforced
    fresh = KeyStore(pool, wall_clock=wall)
    assert await fresh.authenticate(full_key) is None  # and from the database
    past_key, _ = await store.create_key("acme", expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert await KeyStore(pool).authenticate(past_key) is None


async def test_suspended_org_keys_stop_working(pool: asyncpg.Pool) -> None:
    clock = FakeClock()
    store = KeyStore(pool, clock=clock)
    other_replica = KeyStore(pool, cache_ttl_s=5.0, clock=clock)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    assert await other_replica.authenticate(full_key) is not None
    await store.update_org("acme", {"status": "suspended"})
    assert await store.authenticate(full_key) is None
    clock.now += 5.01
    assert await other_replica.authenticate(full_key) is None
    await store.update_org("acme", {"status": "active", "rpm": None})
    principal = await store.authenticate(full_key)
    assert principal is not None and principal.org_limits.rpm is None


async def test_cache_is_bounded(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool, max_cache_entries=10)
    await _org(store)
    for i in range(30):
        assert await store.authenticate(f"{KEY_PREFIX}{i:016x}_{'y' * 43}") is None
    assert store.cache_size == 10


async def test_postgres_outage_serves_known_keys_stale_and_503s_unknown(
    pool: asyncpg.Pool, pg_control: object
) -> None:
    clock = FakeClock()
    counting = CountingPool(pool)
    store = KeyStore(counting, cache_ttl_s=5.0, stale_ttl_s=300.0, db_retry_s=1.0, clock=clock)
    await _org(store)
    full_key, _ = await store.create_key("acme")
    assert await store.authenticate(full_key) is not None
    pg_control.stop()  # type: ignore[attr-defined]
    clock.now += 60
    assert await store.authenticate(full_key) is not None  # stale but known: keeps working
    before = counting.queries
    with pytest.raises(ServiceUnavailable):
        await store.authenticate(f"{KEY_PREFIX}{'2' * 16}_{'z' * 43}")
    assert await store.authenticate(full_key) is not None
    assert counting.queries == before  # within db_retry_s of the failure: Postgres is not asked again
    clock.now += 600
    with pytest.raises(ServiceUnavailable):
        await store.authenticate(full_key)  # past stale_ttl_s
    assert counting.queries == before + 1
    pg_control.start()  # type: ignore[attr-defined]
    clock.now += 2
    for _ in range(10):  # the pool drops connections that died with the old server
        try:
            assert await store.authenticate(full_key) is not None
            break
        except ServiceUnavailable:
            clock.now += 2


async def test_pepper_changes_the_stored_hash(pool: asyncpg.Pool) -> None:
    peppered = KeyStore(pool, pepper=b"runtime-generated-" + bytes(8))
    await _org(peppered)
    full_key, info = await peppered.create_key("acme")
    stored = await pool.fetchval("SELECT key_hash FROM api_keys WHERE key_id = $1", info.key_id)
    assert bytes(stored) != hashlib.sha256(full_key.encode()).digest()
    assert await peppered.authenticate(full_key) is not None
    assert await KeyStore(pool).authenticate(full_key) is None  # without the pepper the hash differs


async def test_org_admin_operations(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool)
    await _org(store)
    with pytest.raises(Conflict):
        await _org(store)
    with pytest.raises(NotFound):
        await store.create_key("nope")
    with pytest.raises(NotFound):
        await store.list_keys("nope")
    with pytest.raises(NotFound):
        await store.update_org("nope", {"rpm": 5})
    updated = await store.update_org("acme", {"daily_tokens": 42, "tier": "gold"})
    assert updated.limits.daily_tokens == 42 and updated.tier == "gold"
    _, first = await store.create_key("acme", name="a")
    _, second = await store.create_key("acme", name="b")
    assert [k.key_id for k in await store.list_keys("acme")] == [first.key_id, second.key_id]
    assert [o.id for o in await store.list_orgs()] == ["acme"]
    with pytest.raises(ValueError, match="unknown field"):
        await store.update_org("acme", {"id; DROP TABLE orgs": 1})


async def _eventually_rejected(store: KeyStore, full_key: str, timeout_s: float = 30.0) -> None:
    """Poll until the key is refused (a bound against hanging, not a latency assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await store.authenticate(full_key) is not None:
        assert asyncio.get_running_loop().time() < deadline, "invalidation never arrived"
        await asyncio.sleep(0.02)


async def _listening(store: KeyStore, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not store.listening:
        assert asyncio.get_running_loop().time() < deadline, "listener never subscribed"
        await asyncio.sleep(0.02)


async def test_notify_invalidates_other_replicas_before_the_ttl(pool: asyncpg.Pool, pg_control: object) -> None:
    clock = FakeClock()  # never advanced: only the NOTIFY can make the other replica forget the key
    admin_replica = KeyStore(pool, cache_ttl_s=3600.0, clock=clock)
    other_replica = KeyStore(pool, cache_ttl_s=3600.0, clock=clock)
    await other_replica.start_listener(health_check_s=0.2)
    try:
        await _listening(other_replica)
        await _org(admin_replica)
        full_key, info = await admin_replica.create_key("acme")
        assert await other_replica.authenticate(full_key) is not None
        await admin_replica.revoke_key(info.key_id)
        await _eventually_rejected(other_replica, full_key)

        second_key, _ = await admin_replica.create_key("acme")
        assert await other_replica.authenticate(second_key) is not None
        await admin_replica.update_org("acme", {"status": "suspended"})
        await _eventually_rejected(other_replica, second_key)
        await admin_replica.update_org("acme", {"status": "active"})

        # The listener comes back by itself after a Postgres restart.
        pg_control.stop()  # type: ignore[attr-defined]
        pg_control.start()  # type: ignore[attr-defined]
        for _ in range(10):  # the pool discards its connections that died with the old server one by one
            try:
                third_key, third = await admin_replica.create_key("acme")
                break
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                continue
        await _listening(other_replica)
        assert await other_replica.authenticate(third_key) is not None
        await admin_replica.revoke_key(third.key_id)
        await _eventually_rejected(other_replica, third_key)
    finally:
        await other_replica.close()
    assert not other_replica.listening


async def test_lookup_racing_an_invalidation_is_not_cached(pool: asyncpg.Pool) -> None:
    class GatedPool(CountingPool):
        gate = asyncio.Event()

        async def fetchrow(self, *args: object, **kw: object) -> object:
            row = await super().fetchrow(*args, **kw)
            await self.gate.wait()  # the row is read; the revocation lands before it is used
            return row

    await _org(KeyStore(pool))
    full_key, info = await KeyStore(pool).create_key("acme")
    gated = GatedPool(pool)
    store = KeyStore(gated)
    racing = asyncio.ensure_future(store.authenticate(full_key))
    while gated.queries == 0:
        await asyncio.sleep(0.01)
    await store.revoke_key(info.key_id)
    gated.gate.set()
    assert await racing is not None  # that request was concurrent with the revocation
    assert await store.authenticate(full_key) is None  # but its pre-revocation row was never cached


async def test_last_used_at_is_written_in_batches(pool: asyncpg.Pool) -> None:
    clock = FakeClock()
    store = KeyStore(pool, cache_ttl_s=5.0, clock=clock, last_used_interval_s=60.0)
    await _org(store)
    full_key, info = await store.create_key("acme")
    assert await store.authenticate(full_key) is not None
    assert await pool.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1", info.key_id) is None
    clock.now += 61  # the next database lookup also flushes the keys used since the last flush
    assert await store.authenticate(full_key) is not None
    await store.close()  # waits for the background write
    assert await pool.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1", info.key_id) is not None
