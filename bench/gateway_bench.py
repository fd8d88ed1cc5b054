"""Gateway benchmark: latency the gateway adds, max sustained RPS, streaming first-byte delay.

Starts real Redis and Postgres, the fake upstream and the gateway (auth, limits, metering on) on loopback, then
drives both the upstream directly and the gateway with the same open-loop load, alternating between them in
one-second slices. Everything shares this machine's
cores, so the figures that matter are the differences and ratios measured in one run.

    .venv/bin/python bench/gateway_bench.py [--rate 300] [--seconds 10] [--slice-seconds 1] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "images" / "gateway")]

import aiohttp  # noqa: E402
import uvloop  # noqa: E402

from tests.gateway.services import (  # noqa: E402
    FakeUpstream, GatewayProcess, PostgresServer, RedisServer, create_api_key, metric_value, usage_rows,
)

BODY = {"model": "bench-chat", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 5}


# The gateway under test: one model on the fake upstream, health checks rare, logs quiet.
GATEWAY_ENV = {"GATEWAY_HEALTH_INTERVAL_S": "5", "GATEWAY_LOG_LEVEL": "warning"}


def bench_catalog(upstream_url: str) -> dict[str, object]:
    return {"models": [{"name": "bench-chat", "kind": "chat", "backends": [upstream_url],
                        "prices": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}}]}


def unlimited_key(dsn: str, org_id: str) -> str:
    """An API key whose limits and quotas the benchmark never reaches (they are still checked on every request)."""
    key, _ = asyncio.run(create_api_key(
        dsn, org_id, key_limits={"rpm": 10_000_000, "tpm": 1_000_000_000, "max_inflight": 10_000},
        org_limits={"rpm": 10_000_000, "tpm": 1_000_000_000, "daily_requests": 100_000_000,
                    "daily_tokens": 10_000_000_000, "monthly_tokens": 100_000_000_000}))
    return key


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(session: aiohttp.ClientSession, url: str, headers: dict[str, str], rate: float,
                    seconds: float, body: dict[str, object]) -> tuple[list[float], int]:
    """Fixed-rate arrivals; latency is measured from each request's scheduled start (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        try:
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
                    return
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    start = time.perf_counter() + 0.05
    tasks = []
    for index in range(int(rate * seconds)):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return latencies, errors


async def interleaved(session: aiohttp.ClientSession, targets: dict[str, tuple[str, dict[str, str]]], rate: float,
                      slice_seconds: float, rounds: int) -> dict[str, list[tuple[list[float], int]]]:
    """Open-loop slices, every target once per round in a shuffled order: bursts of background load on this shared
    host then hit all targets alike instead of whichever stretch they happen to fall in. Per target, each slice's
    ``(latencies, errors)``."""
    slices: dict[str, list[tuple[list[float], int]]] = {name: [] for name in targets}
    for _ in range(rounds):
        order = list(targets)
        random.shuffle(order)
        for name in order:
            url, headers = targets[name]
            slices[name].append(await open_loop(session, url, headers, rate, slice_seconds, BODY))
    return slices


async def closed_loop(session: aiohttp.ClientSession, url: str, headers: dict[str, str], concurrency: int,
                      seconds: float) -> float:
    """Requests per second with ``concurrency`` clients back to back (the saturation throughput)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.post(url, json=BODY, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def first_byte(session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int) -> list[float]:
    delays = []
    body = {**BODY, "stream": True}
    for _ in range(count):
        started = time.perf_counter()
        async with session.post(url, json=body, headers=headers) as response:
            await response.content.readany()
            delays.append(time.perf_counter() - started)
            await response.read()
        await asyncio.sleep(0.005)
    return delays


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.3f} ms"


def overhead_totals(gateway: GatewayProcess) -> tuple[float, float]:
    text = gateway.metrics_text()
    return (metric_value(text, "gateway_overhead_seconds_sum") or 0.0,
            metric_value(text, "gateway_overhead_seconds_count") or 0.0)


async def run(args: argparse.Namespace, upstream_url: str, gateway: GatewayProcess, key: str) -> dict[str, float]:
    gateway_url = gateway.base_url
    direct_url = upstream_url + "/v1/chat/completions"
    gw_url = gateway_url + "/v1/chat/completions"
    auth = {"authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm up connections, caches and JITs on both paths
        await open_loop(session, direct_url, {}, 200, 1, BODY)
        await open_loop(session, gw_url, auth, 200, 1, BODY)

        overhead_before = overhead_totals(gateway)
        slices = await interleaved(session, {"direct": (direct_url, {}), "gateway": (gw_url, auth)}, args.rate,
                                   args.slice_seconds, max(1, round(args.seconds / args.slice_seconds)))
        overhead_after = overhead_totals(gateway)
        direct = [x for latencies, _ in slices["direct"] for x in latencies]
        via_gateway = [x for latencies, _ in slices["gateway"] for x in latencies]
        direct_errors = sum(errors for _, errors in slices["direct"])
        gateway_errors = sum(errors for _, errors in slices["gateway"])

        fb_direct = await first_byte(session, direct_url, {}, 200)
        fb_gateway = await first_byte(session, gw_url, auth, 200)

        rps_direct = await closed_loop(session, direct_url, {}, args.concurrency, 5)
        rps_gateway = await closed_loop(session, gw_url, auth, args.concurrency, 5)

    results = {
        "direct_p50": statistics.median(direct), "direct_p99": percentile(direct, 0.99),
        "gateway_p50": statistics.median(via_gateway), "gateway_p99": percentile(via_gateway, 0.99),
        "fb_direct_p50": statistics.median(fb_direct), "fb_gateway_p50": statistics.median(fb_gateway),
        "fb_direct_p99": percentile(fb_direct, 0.99), "fb_gateway_p99": percentile(fb_gateway, 0.99),
        "rps_direct": rps_direct, "rps_gateway": rps_gateway,
        "direct_errors": direct_errors, "gateway_errors": gateway_errors, "requests": len(via_gateway),
        "overhead_mean": (overhead_after[0] - overhead_before[0]) / max(overhead_after[1] - overhead_before[1], 1),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="open-loop duration per path")
    parser.add_argument("--slice-seconds", type=float, default=1.0,
                        help="the open loop alternates between the paths in slices this long")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop clients for max RPS")
    args = parser.parse_args()

    redis, postgres, fake = RedisServer(), PostgresServer(), FakeUpstream(1)
    gateway = None
    try:
        redis.start()
        postgres.start()
        dsn = postgres.create_database("bench")
        gateway = GatewayProcess(bench_catalog(fake.url(0)), redis.url, dsn, GATEWAY_ENV).start()
        key = unlimited_key(dsn, "bench-org")
        r = uvloop.run(run(args, fake.url(0), gateway, key))
        metered = len(usage_rows(dsn, 1, timeout_s=5))
    finally:
        if gateway is not None:
            gateway.stop()
        fake.close()
        redis.close()
        postgres.close()

    added_p50 = r["gateway_p50"] - r["direct_p50"]
    added_p99 = r["gateway_p99"] - r["direct_p99"]
    print(f"\nGateway benchmark: {args.rate:.0f} RPS open loop, {r['requests']:.0f} requests per path, "
          f"auth + limits (Redis) + metering (Postgres) on; all processes share this machine")
    print(f"{'':28}{'direct':>12}{'gateway':>12}{'added':>12}{'ratio':>8}")
    print(f"{'latency p50':28}{ms(r['direct_p50'])}{ms(r['gateway_p50'])}{ms(added_p50)}"
          f"{r['gateway_p50'] / r['direct_p50']:8.2f}")
    print(f"{'latency p99':28}{ms(r['direct_p99'])}{ms(r['gateway_p99'])}{ms(added_p99)}"
          f"{r['gateway_p99'] / r['direct_p99']:8.2f}")
    print(f"{'stream first byte p50':28}{ms(r['fb_direct_p50'])}{ms(r['fb_gateway_p50'])}"
          f"{ms(r['fb_gateway_p50'] - r['fb_direct_p50'])}{r['fb_gateway_p50'] / r['fb_direct_p50']:8.2f}")
    print(f"{'stream first byte p99':28}{ms(r['fb_direct_p99'])}{ms(r['fb_gateway_p99'])}"
          f"{ms(r['fb_gateway_p99'] - r['fb_direct_p99'])}{r['fb_gateway_p99'] / r['fb_direct_p99']:8.2f}")
    print(f"{'max sustained RPS':28}{r['rps_direct']:12.0f}{r['rps_gateway']:12.0f}{'':12}"
          f"{r['rps_gateway'] / r['rps_direct']:8.2f}")
    print(f"gateway time before the backend call at {args.rate:.0f} RPS (auth, validation, the Redis limits round "
          f"trip; gateway_overhead_seconds mean): {ms(r['overhead_mean']).strip()}")
    print(f"errors: direct {r['direct_errors']:.0f}, gateway {r['gateway_errors']:.0f}; "
          f"usage rows written: {metered}")
    print(f"targets: added p50 <= 1 ms: {'MET' if added_p50 <= 0.001 else 'MISSED'}; "
          f"added p99 <= 5 ms: {'MET' if added_p99 <= 0.005 else 'MISSED'}")


if __name__ == "__main__":
    main()
