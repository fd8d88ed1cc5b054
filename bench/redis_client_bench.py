"""Limiter round trip: redis-py (the gateway's configured client) vs PipelinedRedis (``llm_gateway/resp.py``).

Runs the limiter's real admission script with the keys and arguments ``Limiter.admit`` sends, against a throwaway
loopback redis-server, on uvloop (as the gateway does): first the bare script call, then the whole
``Limiter.admit``; each sequentially and with 32 concurrent callers. The two clients alternate in rounds so that
noise from other work on this shared machine hits both alike; the median round is reported, with the median
of the rounds' pipelined/redis-py ratios (below 1 = faster).

    .venv/bin/python bench/redis_client_bench.py [--calls 2000] [--rounds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "images" / "gateway")]

import uvloop  # noqa: E402

from llm_gateway.keys import KeyLimits, OrgLimits, Principal  # noqa: E402
from llm_gateway.limits import ADMIT_LUA, Limiter, _keys  # noqa: E402
from llm_gateway.resp import PipelinedRedis, Script  # noqa: E402
from llm_gateway.server import redis_client  # noqa: E402
from llm_gateway.settings import Settings  # noqa: E402
from tests.gateway.services import RedisServer  # noqa: E402

Call = Callable[[], Awaitable[Any]]

# Limits high enough that every call is admitted and does the full write path (buckets, quotas, in-flight set).
PRINCIPAL = Principal("bench-key", "bench-org", "t", None, KeyLimits(10**9, 10**12, None, 10**9),
                      OrgLimits(10**9, 10**12, 10**9, 10**12, 10**13))


def admit_args(request_id: str) -> tuple[list[str], list[Any]]:
    """What ``Limiter.admit`` sends for PRINCIPAL: 8 keys, 17 arguments."""
    keys = _keys(PRINCIPAL.org_id, PRINCIPAL.key_id, datetime.now(UTC))
    return keys, [120, request_id, 900_000, 10**9, 10**9, 10**12, 10**13, 2 * 86400, 32 * 86400,
                  10**9, 10**9, 10**12, 10**12, 10**9, 10**9, 10**12, 10**12]


async def per_call_us(call: Call, calls: int, concurrency: int) -> float:
    """Microseconds of wall time per call: ``calls`` calls spread over ``concurrency`` callers."""
    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    return (time.perf_counter() - started) / (calls // concurrency * concurrency) * 1e6


async def compare(name: str, baseline: Call, candidate: Call, calls: int, rounds: int, concurrency: int) -> None:
    for callers in (1, concurrency):
        await per_call_us(baseline, calls // 10, callers)  # warm up: connections, script cache
        await per_call_us(candidate, calls // 10, callers)
        base_rounds, cand_rounds = [], []
        for _ in range(rounds):
            base_rounds.append(await per_call_us(baseline, calls, callers))
            cand_rounds.append(await per_call_us(candidate, calls, callers))
        base, cand = statistics.median(base_rounds), statistics.median(cand_rounds)
        # each round's pair ran back to back: their ratio is what survives the machine's noise
        ratios = sorted(c / b for b, c in zip(base_rounds, cand_rounds, strict=True))
        print(f"{name:<16} {callers:>3} caller(s)  redis-py {base:7.1f} µs/call  pipelined {cand:7.1f} µs/call  "
              f"ratio {statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})  "
              f"saves {base - cand:6.1f} µs")


async def main(calls: int, rounds: int, concurrency: int) -> None:
    server = RedisServer()
    server.start()
    try:
        settings = Settings(redis_url=server.url)
        py_client = redis_client(settings)  # exactly the gateway's redis-py configuration
        pipelined = PipelinedRedis.from_url(settings.redis_url, None, settings.redis_timeout_s)
        ids = itertools.count()
        py_script = py_client.register_script(ADMIT_LUA)
        admit_script = Script.of(ADMIT_LUA)

        async def py_call() -> Any:
            keys, args = admit_args(f"r{next(ids)}")
            return await py_script(keys=keys, args=args)

        async def pipelined_call() -> Any:
            keys, args = admit_args(f"r{next(ids)}")
            return await pipelined.evalsha(admit_script, keys, args)

        assert (await py_call())[0] == 1 and (await pipelined_call())[0] == 1  # both admitted: the full path

        py_limiter = Limiter(py_client, inflight_ttl_s=60)
        pipelined_limiter = Limiter(py_client, inflight_ttl_s=60, pipelined=pipelined)

        async def py_admit() -> Any:
            return await py_limiter.admit(PRINCIPAL, f"r{next(ids)}", 120)

        async def pipelined_admit() -> Any:
            return await pipelined_limiter.admit(PRINCIPAL, f"r{next(ids)}", 120)

        print(f"{calls} calls per round, median of {rounds} alternating rounds, uvloop, loopback redis-server; "
              f"wall time per call (1 caller: latency; {concurrency} callers: inverse throughput)")
        await compare("script call", py_call, pipelined_call, calls, rounds, concurrency)
        await compare("Limiter.admit", py_admit, pipelined_admit, calls, rounds, concurrency)
        assert not py_limiter.degraded and not pipelined_limiter.degraded
        await pipelined.aclose()
        await py_client.aclose()
    finally:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    uvloop.run(main(options.calls, options.rounds, options.concurrency))
