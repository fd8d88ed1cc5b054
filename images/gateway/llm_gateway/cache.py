"""Exact-match response cache in Redis, scoped per org.

Eligible: non-streamed requests at ``temperature: 0`` (chat and completions), or any non-streamed request whose
client sent ``x-llm-cache: true``; ``x-llm-cache: false`` always bypasses. The key is the sha256 of the canonical
JSON (sorted keys) of the request body with the canonical model name and without fields that cannot change
the output (``user``, ``stream``, ``stream_options``, ``metadata``, ``store``), under the org's hash tag, so
one org never reads another's entries. Entries larger than ``GATEWAY_CACHE_MAX_ENTRY_BYTES`` are not stored.
A Redis failure is a miss, never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
from redis.exceptions import RedisError

from llm_gateway import metrics

_IGNORED_FIELDS = frozenset({"user", "stream", "stream_options", "metadata", "store"})


def cache_key(org_id: str, model: str, body: dict[str, Any]) -> str:
    canonical = {key: value for key, value in body.items() if key not in _IGNORED_FIELDS}
    canonical["model"] = model
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return "gw:{" + org_id + "}:cache:" + digest


def wants_cache(header_value: bytes | None, body: dict[str, Any], kind: str) -> bool:
    if body.get("stream"):
        return False
    if header_value is not None:
        choice = header_value.strip().lower()
        if choice == b"false":
            return False
        if choice == b"true":
            return True
    return kind in ("chat", "completion") and body.get("temperature") in (0, 0.0)


class ResponseCache:
    def __init__(self, redis: Any, ttl_s: float, max_entry_bytes: int, limiter: Any = None) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_s * 1000)
        self.max_entry_bytes = max_entry_bytes
        self._limiter = limiter  # shares the limiter's degraded flag: no Redis calls while Redis is down

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0 and not (self._limiter is not None and self._limiter.degraded)

    async def get(self, key: str) -> tuple[bytes, int, int] | None:
        """``(response body, prompt_tokens, completion_tokens)`` or None."""
        if not self.enabled:
            return None
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            if self._limiter is not None:
                self._limiter.enter_degraded("cache_get", exc)
            raw = None
        if raw is None:
            metrics.CACHE.labels("miss").inc()
            return None
        metrics.CACHE.labels("hit").inc()
        prompt_tokens = int.from_bytes(raw[0:4], "big")
        completion_tokens = int.from_bytes(raw[4:8], "big")
        return bytes(raw[8:]), prompt_tokens, completion_tokens

    async def put(self, key: str, body: bytes, prompt_tokens: int, completion_tokens: int) -> None:
        if not self.enabled or len(body) > self.max_entry_bytes:
            return
        value = prompt_tokens.to_bytes(4, "big") + completion_tokens.to_bytes(4, "big") + body
        try:
            await self.redis.set(key, value, px=self.ttl_ms)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            if self._limiter is not None:
                self._limiter.enter_degraded("cache_put", exc)
