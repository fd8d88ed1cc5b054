"""Rate limits and quotas: one atomic Redis round trip per request, exact across any number of replicas.

Semantics (documented in the README, "Limits and quotas"):
- requests/min and tokens/min, per key and per org, are token buckets refilled continuously at ``limit/60``
  per second. A key's request bucket holds ``burst`` (default: its rpm); token buckets hold one minute's
  worth. Redis' clock (``TIME``) is used, so replicas' clocks never matter.
- A request reserves ``prompt estimate + max_tokens`` tokens on admission; ``reconcile`` settles the
  difference with the real usage after the response (a refund, or a debt the next requests wait for).
- Max in-flight per key: a sorted set of request ids scored by their expiry, so slots of a replica that died
  free themselves after ``GATEWAY_INFLIGHT_TTL_S``.
- Org quotas: requests per UTC day, tokens per UTC day and per UTC month. A request is admitted while the
  counter (real usage + reservations in flight) is below the quota; exhaustion is a 429 ``insufficient_quota``
  with ``x-should-retry: false``.
- Every key of one request carries the ``{org_id}`` hash tag so all of them live in one cluster slot.

Transport: on a standalone Redis both scripts go through ``PipelinedRedis`` (``resp.py``) when one is given, which
costs far less Python per call than redis-py; in cluster mode (and without one) they go through redis-py.

Degraded mode: when Redis fails, requests are checked by ``LocalLimiter`` (same buckets and in-flight limit,
each divided by the number of live replicas; quotas are not enforced, since only Redis knows the fleet's
totals) while a background task pings Redis and switches back once it answers. The replica count comes from
heartbeats: every ``GATEWAY_REPLICA_HEARTBEAT_S`` each replica refreshes its entry in one Redis sorted set
(scored by expiry on Redis' clock, 3 heartbeats) and reads how many entries are live; an outage freezes the
last count. Never below ``GATEWAY_EXPECTED_REPLICAS`` (the HPA minimum), which also covers a replica that
started during the outage and never saw a count.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import NoScriptError, RedisError

from llm_gateway import metrics
from llm_gateway.resp import PipelinedRedis, Script


class LimitsPrincipal(Protocol):  # read-only members, so the frozen ``keys.Principal`` satisfies it
    @property
    def key_id(self) -> str: ...
    @property
    def org_id(self) -> str: ...
    @property
    def key_limits(self) -> Any: ...
    @property
    def org_limits(self) -> Any: ...


# Both scripts start with this: Redis's clock in ms, and a token bucket's level now (refilled at `rate` per minute
# since its last write, never above `cap`), so admission and reconciliation refill a bucket the same way.
BUCKET_LUA = r"""
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local function level_now(key, rate, cap)
  local h = redis.call('HMGET', key, 't', 'ts')
  if not h[1] then return cap end
  local level = tonumber(h[1]) + (now - tonumber(h[2])) * rate / 60000
  if level > cap then level = cap end
  return level
end
"""

ADMIT_LUA = BUCKET_LUA + r"""
local reserve = tonumber(ARGV[1])
local request_id = ARGV[2]
local inflight_ttl = tonumber(ARGV[3])
local max_inflight = tonumber(ARGV[4])
local quota_day_req = tonumber(ARGV[5])
local quota_day_tok = tonumber(ARGV[6])
local quota_month_tok = tonumber(ARGV[7])
local day_ttl = tonumber(ARGV[8])
local month_ttl = tonumber(ARGV[9])
-- buckets: {key index, rate per minute, capacity, cost, name, kind}
local buckets = {
  {1, tonumber(ARGV[10]), tonumber(ARGV[11]), 1, 'key_rpm', 'req'},
  {2, tonumber(ARGV[12]), tonumber(ARGV[13]), reserve, 'key_tpm', 'tok'},
  {3, tonumber(ARGV[14]), tonumber(ARGV[15]), 1, 'org_rpm', 'req'},
  {4, tonumber(ARGV[16]), tonumber(ARGV[17]), reserve, 'org_tpm', 'tok'},
}

-- quotas first: exhaustion is not worth retrying
if quota_day_req > 0 then
  local used = tonumber(redis.call('GET', KEYS[6]) or '0')
  if used + 1 > quota_day_req then return {2, 'daily_requests', 0, -1, -1, -1, -1, -1, -1} end
end
if quota_day_tok > 0 then
  local used = tonumber(redis.call('GET', KEYS[7]) or '0')
  if used >= quota_day_tok then return {2, 'daily_tokens', 0, -1, -1, -1, -1, -1, -1} end
end
if quota_month_tok > 0 then
  local used = tonumber(redis.call('GET', KEYS[8]) or '0')
  if used >= quota_month_tok then return {2, 'monthly_tokens', 0, -1, -1, -1, -1, -1, -1} end
end

local status, reason, retry_ms = 1, '', 0
local levels = {}
for i, b in ipairs(buckets) do
  local rate, cap, cost = b[2], b[3], b[4]
  if rate > 0 then
    local level = level_now(KEYS[b[1]], rate, cap)
    levels[i] = level
    if cost > cap then
      return {3, b[5], 0, -1, -1, -1, -1, -1, -1}
    end
    if level < cost then
      local wait = math.ceil((cost - level) * 60000 / rate)
      if status == 1 then reason = b[5] end
      status = 0
      if wait > retry_ms then retry_ms = wait end
    end
  end
end

local inflight_full = false
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= max_inflight then
    inflight_full = true
    if status == 1 then reason = 'inflight' end
    status = 0
    if retry_ms < 1000 then retry_ms = 1000 end
  end
end

if status == 1 then
  for i, b in ipairs(buckets) do
    if b[2] > 0 then
      levels[i] = levels[i] - b[4]
      redis.call('HSET', KEYS[b[1]], 't', tostring(levels[i]), 'ts', now)
      redis.call('PEXPIRE', KEYS[b[1]], math.ceil(b[3] * 60000 / b[2]) + 1000)
    end
  end
  if max_inflight > 0 then
    redis.call('ZADD', KEYS[5], now + inflight_ttl, request_id)
    redis.call('PEXPIRE', KEYS[5], inflight_ttl)
  end
  if quota_day_req > 0 then
    redis.call('INCR', KEYS[6]); redis.call('EXPIRE', KEYS[6], day_ttl)
  end
  if quota_day_tok > 0 then
    redis.call('INCRBY', KEYS[7], reserve); redis.call('EXPIRE', KEYS[7], day_ttl)
  end
  if quota_month_tok > 0 then
    redis.call('INCRBY', KEYS[8], reserve); redis.call('EXPIRE', KEYS[8], month_ttl)
  end
end

-- report the most constrained request bucket and token bucket
local out = {status, reason, retry_ms, -1, -1, -1, -1, -1, -1}
for i, b in ipairs(buckets) do
  if b[2] > 0 then
    local slot = 4
    if b[6] == 'tok' then slot = 7 end
    local remaining = math.floor(levels[i])
    if remaining < 0 then remaining = 0 end
    if out[slot] == -1 or remaining < out[slot + 1] then
      out[slot] = b[2]
      out[slot + 1] = remaining
      out[slot + 2] = math.ceil((b[3] - levels[i]) * 60000 / b[2])
    end
  end
end
return out
"""

RECONCILE_LUA = BUCKET_LUA + r"""
local delta = tonumber(ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[2])
if delta ~= 0 then
  local token_buckets = {{2, tonumber(ARGV[3]), tonumber(ARGV[4])}, {4, tonumber(ARGV[5]), tonumber(ARGV[6])}}
  for _, b in ipairs(token_buckets) do
    local rate, cap = b[2], b[3]
    if rate > 0 then
      local level = level_now(KEYS[b[1]], rate, cap) - delta
      if level > cap then level = cap end
      if level < -cap then level = -cap end
      redis.call('HSET', KEYS[b[1]], 't', tostring(level), 'ts', now)
      redis.call('PEXPIRE', KEYS[b[1]], math.ceil(2 * cap * 60000 / rate) + 1000)
    end
  end
  if tonumber(ARGV[7]) > 0 and redis.call('EXISTS', KEYS[7]) == 1 then redis.call('INCRBY', KEYS[7], delta) end
  if tonumber(ARGV[8]) > 0 and redis.call('EXISTS', KEYS[8]) == 1 then redis.call('INCRBY', KEYS[8], delta) end
end
return 1
"""

# Refresh this replica's heartbeat (or drop it, ARGV[3] = 0), forget expired ones, return how many are live.
HEARTBEAT_LUA = r"""
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""
REPLICAS_KEY = "gw:{replicas}:live"
HEARTBEATS_PER_TTL = 3

STATUS_OK, STATUS_LIMITED, STATUS_QUOTA, STATUS_TOO_LARGE = 1, 0, 2, 3


@dataclass(slots=True)
class Decision:
    status: int
    reason: str = ""
    retry_after_ms: int = 0
    req_limit: int = -1
    req_remaining: int = -1
    req_reset_ms: int = -1
    tok_limit: int = -1
    tok_remaining: int = -1
    tok_reset_ms: int = -1

    @property
    def allowed(self) -> bool:
        return self.status == STATUS_OK

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.req_limit >= 0:
            out += [
                (b"x-ratelimit-limit-requests", str(self.req_limit).encode()),
                (b"x-ratelimit-remaining-requests", str(self.req_remaining).encode()),
                (b"x-ratelimit-reset-requests", _duration(self.req_reset_ms)),
            ]
        if self.tok_limit >= 0:
            out += [
                (b"x-ratelimit-limit-tokens", str(self.tok_limit).encode()),
                (b"x-ratelimit-remaining-tokens", str(self.tok_remaining).encode()),
                (b"x-ratelimit-reset-tokens", _duration(self.tok_reset_ms)),
            ]
        return out


def _duration(ms: int) -> bytes:
    """OpenAI's reset format: ``120ms``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms".encode()
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s".encode()
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s".encode()


@dataclass(slots=True)
class Reservation:
    """What one admitted request holds until ``reconcile``: the tokens reserved and the in-flight slot."""

    request_id: str
    keys: list[str]
    reserved_tokens: int
    key_tpm: int
    org_tpm: int
    has_day_tok: bool
    has_month_tok: bool
    local: bool  # admitted by the degraded local limiter
    released: bool = field(default=False)


def _pos(value: int | None) -> int:
    return int(value) if value else 0


def _keys(org_id: str, key_id: str, now: datetime) -> list[str]:
    tag = "{" + org_id + "}"
    day = now.strftime("%Y%m%d")
    month = now.strftime("%Y%m")
    return [
        f"gw:{tag}:k:{key_id}:rpm",
        f"gw:{tag}:k:{key_id}:tpm",
        f"gw:{tag}:org:rpm",
        f"gw:{tag}:org:tpm",
        f"gw:{tag}:k:{key_id}:inflight",
        f"gw:{tag}:q:d{day}:req",
        f"gw:{tag}:q:d{day}:tok",
        f"gw:{tag}:q:m{month}:tok",
    ]


class LocalLimiter:
    """In-process buckets used while Redis is down: every limit divided by the replica count."""

    def __init__(self, expected_replicas: int) -> None:
        self.replicas = expected_replicas
        self.share = 1.0 / expected_replicas
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, monotonic ts)
        self._inflight: dict[str, int] = {}

    def set_replicas(self, replicas: int) -> None:
        self.replicas = max(1, replicas)
        self.share = 1.0 / self.replicas

    def _level(self, key: str, rate: float, cap: float, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return cap
        level, ts = state
        return min(cap, level + (now - ts) * rate / 60.0)

    def admit(self, keys: list[str], reserve: int, buckets: list[tuple[int, int, int, float]],
              max_inflight: int) -> Decision:
        now = time.monotonic()
        retry_ms, reason, status = 0, "", STATUS_OK
        levels: dict[int, float] = {}
        for index, rate_full, cap_full, cost in buckets:
            if rate_full <= 0:
                continue
            rate, cap = rate_full * self.share, max(1.0, cap_full * self.share)
            level = self._level(keys[index], rate, cap, now)
            levels[index] = level
            if level < cost:
                wait = math.ceil((cost - level) * 60000 / rate)
                if status == STATUS_OK:
                    reason = "local_" + ("key_rpm", "key_tpm", "org_rpm", "org_tpm")[index]
                status = STATUS_LIMITED
                retry_ms = max(retry_ms, wait)
        inflight_key = keys[4]
        if max_inflight > 0:
            local_max = max(1, math.ceil(max_inflight * self.share))
            if self._inflight.get(inflight_key, 0) >= local_max:
                if status == STATUS_OK:
                    reason = "local_inflight"
                status = STATUS_LIMITED
                retry_ms = max(retry_ms, 1000)
        if status != STATUS_OK:
            return Decision(status, reason, retry_ms)
        for index, rate_full, _cap_full, cost in buckets:
            if rate_full > 0:
                self._buckets[keys[index]] = (levels[index] - cost, now)
        if max_inflight > 0:
            self._inflight[inflight_key] = self._inflight.get(inflight_key, 0) + 1
        return Decision(STATUS_OK)

    def reconcile(self, reservation: Reservation, delta: int) -> None:
        inflight_key = reservation.keys[4]
        if inflight_key in self._inflight:
            self._inflight[inflight_key] -= 1
            if self._inflight[inflight_key] <= 0:
                del self._inflight[inflight_key]
        if delta:
            now = time.monotonic()
            for index, tpm in ((1, reservation.key_tpm), (3, reservation.org_tpm)):
                if tpm > 0:
                    rate, cap = tpm * self.share, max(1.0, tpm * self.share)
                    level = self._level(reservation.keys[index], rate, cap, now) - delta
                    self._buckets[reservation.keys[index]] = (max(-cap, min(cap, level)), now)


class Limiter:
    def __init__(self, redis: Any, expected_replicas: int = 1, inflight_ttl_s: float = 900.0,
                 reconnect_interval_s: float = 1.0, logger: Any = None, cluster: bool = False,
                 pipelined: PipelinedRedis | None = None, heartbeat_s: float = 5.0,
                 replica_id: str | None = None) -> None:
        self.redis = redis
        self.cluster = cluster  # cluster pipelines refuse scripts: reconciliations then go concurrently
        # the scripts' fast path on a standalone Redis; redis-py still serves pings (recovery) and cluster mode
        self.pipelined = None if cluster else pipelined
        self.local = LocalLimiter(expected_replicas)
        self.expected_replicas = expected_replicas
        self.heartbeat_s = heartbeat_s
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._heartbeat_script = redis.register_script(HEARTBEAT_LUA)
        self._heartbeat: asyncio.Task[None] | None = None
        metrics.LIVE_REPLICAS.set(expected_replicas)
        self.inflight_ttl_ms = int(inflight_ttl_s * 1000)
        self.reconnect_interval_s = reconnect_interval_s
        self.degraded = False
        self._admit = redis.register_script(ADMIT_LUA)
        self._reconcile = redis.register_script(RECONCILE_LUA)
        self._admit_script = Script.of(ADMIT_LUA)
        self._reconcile_script = Script.of(RECONCILE_LUA)
        self._recovery: asyncio.Task[None] | None = None
        self._logger = logger
        self._pending: list[tuple[Reservation, int]] = []
        self._names: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        metrics.DEGRADED.set(0)

    # --- degraded mode ---
    def enter_degraded(self, op: str, exc: BaseException) -> None:
        metrics.REDIS_ERRORS.labels(op).inc()
        if self.degraded:
            return
        self.degraded = True
        metrics.DEGRADED.set(1)
        if self._logger:
            self._logger.warning("redis_unavailable", op=op, error=type(exc).__name__, degraded=True)
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        while self.degraded:
            await asyncio.sleep(self.reconnect_interval_s)
            try:
                await self.redis.ping()
            except (RedisError, OSError, asyncio.TimeoutError):
                continue
            self.degraded = False
            metrics.DEGRADED.set(0)
            if self._logger:
                self._logger.info("redis_recovered", degraded=False)

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            if not self.degraded:
                await self.beat(alive=False)  # the others' shares grow now, not after the heartbeat expires

    # --- live replicas (the degraded-mode share) ---
    async def beat(self, alive: bool = True) -> int | None:
        """Refresh this replica's heartbeat; the live replica count, or None if Redis did not answer."""
        ttl_ms = int(self.heartbeat_s * HEARTBEATS_PER_TTL * 1000)
        try:
            live = int(await self._heartbeat_script(keys=[REPLICAS_KEY], args=[ttl_ms, self.replica_id,
                                                                              1 if alive else 0]))
        except (RedisError, OSError, asyncio.TimeoutError):
            return None  # an outage keeps the last count: the fleet as it was when Redis went away
        if alive:
            metrics.LIVE_REPLICAS.set(live)
            self.local.set_replicas(max(self.expected_replicas, live))
        return live

    async def start_heartbeat(self) -> None:
        await self.beat()

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.heartbeat_s)
                if not self.degraded:
                    await self.beat()

        self._heartbeat = asyncio.create_task(loop())

    # --- admission ---
    def _key_names(self, org_id: str, key_id: str) -> list[str]:
        """The Redis keys of this key and org for the current UTC day, built once per day (read-only list)."""
        day = int(time.time() // 86400)
        cached = self._names.get((org_id, key_id))
        if cached is not None and cached[0] == day:
            return cached[1]
        if len(self._names) >= 50_000:  # bounded: active keys come back on their next request
            self._names.clear()
        keys = _keys(org_id, key_id, datetime.fromtimestamp(day * 86400, UTC))
        self._names[(org_id, key_id)] = (day, keys)
        return keys

    async def admit(self, principal: LimitsPrincipal, request_id: str, reserve_tokens: int) -> tuple[Decision, Reservation | None]:
        kl, ol = principal.key_limits, principal.org_limits
        keys = self._key_names(principal.org_id, principal.key_id)
        key_rpm, key_tpm, org_rpm, org_tpm = _pos(kl.rpm), _pos(kl.tpm), _pos(ol.rpm), _pos(ol.tpm)
        key_burst = _pos(kl.burst) or key_rpm
        max_inflight = _pos(kl.max_inflight)
        q_day_req, q_day_tok, q_month_tok = _pos(ol.daily_requests), _pos(ol.daily_tokens), _pos(ol.monthly_tokens)
        reservation = Reservation(request_id, keys, reserve_tokens, key_tpm, org_tpm,
                                  q_day_tok > 0, q_month_tok > 0, local=False)
        if not self.degraded:
            day_ttl = 2 * 86400
            month_ttl = 32 * 86400
            args = [reserve_tokens, request_id, self.inflight_ttl_ms, max_inflight,
                    q_day_req, q_day_tok, q_month_tok, day_ttl, month_ttl,
                    key_rpm, key_burst, key_tpm, key_tpm, org_rpm, org_rpm, org_tpm, org_tpm]
            try:
                if self.pipelined is not None:
                    raw = await self.pipelined.evalsha(self._admit_script, keys, args)
                else:
                    raw = await self._admit(keys=keys, args=args)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self.enter_degraded("admit", exc)
            else:
                reason = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
                decision = Decision(int(raw[0]), reason, *(int(value) for value in raw[2:]))
                return decision, reservation if decision.allowed else None
        reservation.local = True
        decision = self.local.admit(keys, reserve_tokens, [
            (0, key_rpm, key_burst, 1), (1, key_tpm, key_tpm, reserve_tokens),
            (2, org_rpm, org_rpm, 1), (3, org_tpm, org_tpm, reserve_tokens),
        ], max_inflight)
        return decision, reservation if decision.allowed else None

    async def reconcile(self, reservation: Reservation, used_tokens: int) -> None:
        """Release the in-flight slot and settle reserved vs used tokens. Idempotent; never raises.

        Reconciliations of the responses that finish in the same event-loop turn share one pipelined round trip
        (they are off the response path, so this only saves Redis work and syscalls under load)."""
        if reservation.released:
            return
        reservation.released = True
        delta = used_tokens - reservation.reserved_tokens
        if reservation.local:
            self.local.reconcile(reservation, delta)
            return
        self._pending.append((reservation, delta))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_reconciliations())
        await asyncio.shield(self._flusher)

    @staticmethod
    def _reconcile_args(reservation: Reservation, delta: int) -> list[Any]:
        return [delta, reservation.request_id, reservation.key_tpm, reservation.key_tpm,
                reservation.org_tpm, reservation.org_tpm, int(reservation.has_day_tok),
                int(reservation.has_month_tok)]

    async def _flush_reconciliations(self) -> None:
        while True:
            await asyncio.sleep(0)  # let the other responses of this loop turn join the batch
            batch, self._pending = self._pending, []
            if not batch:
                return  # nothing can be appended between this check and the task's end: no await
            await self._send_reconciliations(batch)

    async def _send_reconciliations(self, batch: list[tuple[Reservation, int]]) -> None:
        try:
            if self.pipelined is not None:  # the whole batch in one write, replies in order
                results = await self.pipelined.evalsha_many(self._reconcile_script, [
                    (reservation.keys, self._reconcile_args(reservation, delta)) for reservation, delta in batch])
                failed = [result for result in results if isinstance(result, RedisError)]
                if failed:
                    raise failed[0]
                return
            if len(batch) == 1 or self.cluster:
                await asyncio.gather(*(
                    self._reconcile(keys=reservation.keys, args=self._reconcile_args(reservation, delta))
                    for reservation, delta in batch))
                return
            pipe = self.redis.pipeline(transaction=False)
            for reservation, delta in batch:
                pipe.evalsha(self._reconcile.sha, len(reservation.keys), *reservation.keys,
                             *self._reconcile_args(reservation, delta))
            results = await pipe.execute(raise_on_error=False)
            missing = [item for item, result in zip(batch, results, strict=True) if isinstance(result, NoScriptError)]
            for reservation, delta in missing:  # script cache flushed (failover, restart): load it again
                await self._reconcile(keys=reservation.keys, args=self._reconcile_args(reservation, delta))
        except Exception as exc:  # noqa: BLE001 - a background settlement must never raise
            # In-flight slots expire by themselves (inflight TTL); the token debt is lost, which only errs in the
            # client's favour.
            self.enter_degraded("reconcile", exc)
