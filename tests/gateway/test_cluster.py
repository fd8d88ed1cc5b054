"""ElastiCache cluster mode: limits, reconciliation and cache on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from llm_gateway.cache import ResponseCache, cache_key
from llm_gateway.keys import KeyLimits, OrgLimits, Principal
from llm_gateway.limits import Limiter, _keys
from llm_gateway.server import redis_client
from llm_gateway.settings import Settings
from tests.gateway.services import GatewayProcess, RedisClusterServers, default_catalog, http_request


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_limiter_and_cache_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    async def scenario() -> None:
        redis = redis_client(Settings(redis_url=redis_cluster.url, redis_cluster=True))
        limiter = Limiter(redis, cluster=True)
        cache = ResponseCache(redis, 60, 10_000, limiter)
        slots = set()
        for org in ("org-a", "org-b", "org-c", "org-d", "org-e"):
            keys = _keys(org, "k1", datetime.now(UTC))
            assert len({await redis.cluster_keyslot(key) for key in keys}) == 1  # one slot per request
            slots.add(await redis.cluster_keyslot(keys[0]))
            principal = Principal("k1", org, "t", None, KeyLimits(10, 1000, None, 2),
                                  OrgLimits(100, 10_000, 1000, 50, 100_000))
            results = [await limiter.admit(principal, f"{org}-r{i}", 100) for i in range(3)]
            assert [decision.allowed for decision, _ in results] == [True, True, False]
            assert results[2][0].reason == "inflight"
            await asyncio.gather(*(limiter.reconcile(reservation, 10) for _, reservation in results if reservation))
            assert await redis.zcard(keys[4]) == 0  # slots released
            decision, _ = await limiter.admit(principal, f"{org}-r9", 100)
            assert decision.allowed and decision.tok_remaining == 1000 - 200 + 180 - 100
            key = cache_key(org, "m", {"prompt": "x"})
            await cache.put(key, b"body", 1, 2)
            assert await cache.get(key) == (b"body", 1, 2)
        assert not limiter.degraded
        assert len(slots) > 1  # orgs spread over the cluster
        await redis.aclose()

    asyncio.run(scenario())


def test_gateway_in_cluster_mode(redis_cluster: RedisClusterServers, pg_dsn: str, upstream, make_key) -> None:
    gateway = GatewayProcess(default_catalog(upstream), redis_cluster.url, pg_dsn, {"GATEWAY_REDIS_CLUSTER": "true"})
    try:
        gateway.start()
        key = make_key("org-cluster", key_limits={"rpm": 3})
        body = {"model": "chat-a", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
        answers = []
        for _ in range(4):
            answers.append(http_request("POST", gateway.base_url + "/v1/chat/completions", body,
                                        {"authorization": f"Bearer {key}"}))
            time.sleep(0.1)
        assert [status for status, _, _ in answers] == [200, 200, 200, 429]
        assert [headers.get("x-llm-cache") for _, headers, _ in answers[:3]] == ["miss", "hit", "hit"]
        status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
        assert json.loads(raw)["redis"] == "ok"
    finally:
        gateway.stop()
