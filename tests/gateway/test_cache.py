"""Exact-match response cache: hit/miss/bypass, still metered and limited, never shared across orgs."""

from __future__ import annotations

import json
from typing import Any

from llm_gateway.cache import ResponseCache, cache_key, wants_cache
from tests.gateway.services import FakeUpstream, GatewayProcess, http_request, usage_rows, wait_cached

DETERMINISTIC = {"model": "chat-a", "temperature": 0, "messages": [{"role": "user", "content": "2+2?"}]}


def post(gateway: GatewayProcess, key: str, body: dict[str, Any],
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, response_headers, raw = http_request("POST", gateway.base_url + "/v1/chat/completions", body,
                                                 {"authorization": f"Bearer {key}", **(headers or {})})
    return status, response_headers, json.loads(raw)


def upstream_calls(upstream: FakeUpstream) -> int:
    return len(upstream.log(0)) + len(upstream.log(1))


def test_temperature_zero_is_cached_metered_and_limited(gateway: GatewayProcess, upstream: FakeUpstream,
                                                        make_key, pg_dsn: str, redis_url: str) -> None:
    key = make_key(key_limits={"rpm": 3})
    status, headers, first = post(gateway, key, DETERMINISTIC)
    assert status == 200 and headers["x-llm-cache"] == "miss"
    wait_cached(redis_url, 1)  # the entry is written after the response
    status, headers, second = post(gateway, key, DETERMINISTIC)
    assert status == 200 and headers["x-llm-cache"] == "hit"
    assert second == first  # the very same response, id included
    assert upstream_calls(upstream) == 1
    assert post(gateway, key, DETERMINISTIC)[1]["x-llm-cache"] == "hit"
    assert post(gateway, key, DETERMINISTIC)[0] == 429  # hits count against limits
    rows = usage_rows(pg_dsn, 3)
    assert [row["cache_hit"] for row in rows] == [False, True, True]
    assert all((row["prompt_tokens"], row["completion_tokens"]) == (11, 5) for row in rows)


def test_header_opts_in_and_out(gateway: GatewayProcess, upstream: FakeUpstream, make_key, redis_url: str) -> None:
    key = make_key()
    creative = {**DETERMINISTIC, "temperature": 0.9}
    assert "x-llm-cache" not in post(gateway, key, creative)[1]
    assert "x-llm-cache" not in post(gateway, key, creative)[1]
    assert upstream_calls(upstream) == 2  # not cacheable by default

    assert post(gateway, key, creative, {"x-llm-cache": "true"})[1]["x-llm-cache"] == "miss"
    wait_cached(redis_url, 1)
    assert post(gateway, key, creative, {"x-llm-cache": "true"})[1]["x-llm-cache"] == "hit"
    assert upstream_calls(upstream) == 3

    post(gateway, key, DETERMINISTIC)
    wait_cached(redis_url, 2)
    bypass = post(gateway, key, DETERMINISTIC, {"x-llm-cache": "false"})
    assert bypass[0] == 200 and "x-llm-cache" not in bypass[1]
    assert upstream_calls(upstream) == 5


def test_cache_never_crosses_orgs(gateway: GatewayProcess, upstream: FakeUpstream, make_key, redis_url: str) -> None:
    key_a, key_b = make_key("org-a"), make_key("org-b")
    post(gateway, key_a, DETERMINISTIC)
    wait_cached(redis_url, 1)
    assert post(gateway, key_a, DETERMINISTIC)[1]["x-llm-cache"] == "hit"
    assert post(gateway, key_b, DETERMINISTIC)[1]["x-llm-cache"] == "miss"
    assert upstream_calls(upstream) == 2


def test_streams_are_never_cached(gateway: GatewayProcess, upstream: FakeUpstream, make_key) -> None:
    key = make_key()
    for _ in range(2):
        status, headers, raw = http_request("POST", gateway.base_url + "/v1/chat/completions",
                                            {**DETERMINISTIC, "stream": True}, {"authorization": f"Bearer {key}"})
        assert status == 200 and b"data: [DONE]" in raw and "x-llm-cache" not in headers
    assert upstream_calls(upstream) == 2


def test_cache_key_covers_output_affecting_fields_only() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    key = cache_key("org", "m", base)
    assert key.startswith("gw:{org}:cache:")
    assert cache_key("org", "m", {**base, "user": "someone", "stream_options": {}}) == key
    assert cache_key("org", "m", dict(reversed(list(base.items())))) == key  # canonical JSON
    assert cache_key("org", "m", {**base, "max_tokens": 5}) != key
    assert cache_key("org", "m", {**base, "seed": 1}) != key
    assert cache_key("org", "other", base) != key
    assert cache_key("org2", "m", base) != key
    assert wants_cache(None, base, "chat") and not wants_cache(None, {**base, "stream": True}, "chat")
    assert not wants_cache(b"false", base, "chat") and wants_cache(b"true", {"input": "x"}, "embedding")
    assert not wants_cache(None, {"input": "x"}, "embedding")


def test_oversized_entries_are_not_stored_and_ttl_applies(redis_url: str) -> None:
    import asyncio

    from redis.asyncio import Redis

    async def scenario() -> None:
        redis = Redis.from_url(redis_url)
        cache = ResponseCache(redis, ttl_s=60, max_entry_bytes=64)
        await cache.put("gw:{o}:cache:small", b"x" * 64, 3, 4)
        await cache.put("gw:{o}:cache:big", b"x" * 65, 3, 4)
        assert await cache.get("gw:{o}:cache:small") == (b"x" * 64, 3, 4)
        assert await cache.get("gw:{o}:cache:big") is None
        assert 59_000 < await redis.pttl("gw:{o}:cache:small") <= 60_000
        await redis.aclose()

    asyncio.run(scenario())
