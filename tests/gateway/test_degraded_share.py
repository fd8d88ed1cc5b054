"""Degraded mode's per-replica share follows the replicas that are really live (heartbeats in Redis), not the
HPA minimum: with two replicas live each enforces half a limit during a Redis outage, with one the whole."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import redis.asyncio as aioredis

from llm_gateway.limits import REPLICAS_KEY, Limiter, LocalLimiter
from tests.gateway.services import GatewayProcess, RedisServer, http_request, metric_value

CHAT = {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]}


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def live(gateway: GatewayProcess) -> float | None:
    return metric_value(gateway.metrics_text(), "gateway_live_replicas")


def admitted_in_outage(gateway: GatewayProcess, key: str, tries: int) -> int:
    statuses = [http_request("POST", gateway.base_url + "/v1/chat/completions", CHAT,
                             {"authorization": f"Bearer {key}"})[0] for _ in range(tries)]
    assert set(statuses) <= {200, 429}, statuses
    return statuses.count(200)


def test_local_share_is_the_limit_over_the_replica_count() -> None:
    local = LocalLimiter(expected_replicas=1)
    keys = [f"k{i}" for i in range(8)]
    buckets = [(0, 12, 12, 1), (1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 0)]
    assert sum(local.admit(keys, 1, buckets, 0).allowed for _ in range(20)) == 12
    local.set_replicas(3)
    other = [f"j{i}" for i in range(8)]
    assert sum(local.admit(other, 1, buckets, 0).allowed for _ in range(20)) == 4


async def _heartbeats(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        first = Limiter(client, expected_replicas=1, heartbeat_s=0.2, replica_id="a")
        second = Limiter(client, expected_replicas=1, heartbeat_s=0.2, replica_id="b")
        assert await first.beat() == 1 and first.local.replicas == 1
        assert await second.beat() == 2
        assert await first.beat() == 2 and first.local.replicas == 2
        await second.beat(alive=False)  # a replica that shuts down leaves at once
        assert await first.beat() == 1 and first.local.replicas == 1
        await second.beat()
        await asyncio.sleep(0.7)  # second stops beating (killed): its entry expires after 3 heartbeats
        assert await first.beat() == 1
        floor = Limiter(client, expected_replicas=3, heartbeat_s=0.2, replica_id="c")
        assert await floor.beat() == 2 and floor.local.replicas == 3  # never below GATEWAY_EXPECTED_REPLICAS
        assert await client.exists(REPLICAS_KEY)
    finally:
        await client.aclose()


def test_heartbeats_count_live_replicas(redis_url: str) -> None:
    asyncio.run(_heartbeats(redis_url))


def test_degraded_share_follows_the_live_replicas(gateway_factory, make_key, redis_control: RedisServer) -> None:
    # expected_replicas (the HPA minimum) is 1: the old share would let each replica take the whole limit
    first = gateway_factory(replica_heartbeat_s="0.2")
    assert live(first) == 1
    second = gateway_factory(replica_heartbeat_s="0.2")
    assert wait_until(lambda: live(first) == 2)

    redis_control.stop()
    assert admitted_in_outage(first, make_key(key_limits={"rpm": 10}), 8) == 5  # 10 / 2 live replicas
    redis_control.start()
    assert wait_until(lambda: metric_value(first.metrics_text(), "gateway_degraded_mode") == 0)

    second.stop()  # the fleet shrinks: the survivor's share grows back
    assert wait_until(lambda: live(first) == 1)
    redis_control.stop()
    assert admitted_in_outage(first, make_key("org-b", key_limits={"rpm": 10}), 12) == 10
