"""The gateway's model-server client (``llm_gateway.upstream``) against aiohttp's client, same server, one run.

Both clients POST the same chat body to the fake upstream on loopback and read the JSON answer, one request at a
time (the per-request cost on an idle path) and with 32 concurrent callers (throughput). Rounds alternate the two
clients so background noise hits both alike; the figure that matters is the ratio.

    .venv/bin/python bench/upstream_client_bench.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "images" / "gateway")]

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402

from llm_gateway.upstream import Timeouts, UpstreamClient  # noqa: E402
from tests.gateway.services import FakeUpstream  # noqa: E402

BODY = orjson.dumps({"model": "bench-chat", "messages": [{"role": "user", "content": "Say something short."}],
                     "max_tokens": 5})
HEADERS = (("content-type", "application/json"), ("x-request-id", "bench"))
TIMEOUTS = Timeouts(connect_s=5.0, total_s=60.0)


async def timed(call: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> float:
    """Seconds per request."""
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / (per_worker * concurrency)


async def run(args: argparse.Namespace, base_url: str) -> dict[str, dict[int, list[float]]]:
    client = UpstreamClient()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    skip_auto_headers=("Accept-Encoding", "User-Agent"))
    url = base_url + "/v1/chat/completions"

    async def with_aiohttp() -> None:
        async with session.post(url, data=BODY, headers=dict(HEADERS)) as response:
            await response.read()
            assert response.status == 200

    async def with_upstream_client() -> None:
        response = await client.request("POST", base_url, "/v1/chat/completions", BODY, TIMEOUTS, HEADERS)
        try:
            await response.read()
        finally:
            response.release()
        assert response.status == 200

    calls = {"aiohttp": with_aiohttp, "llm_gateway.upstream": with_upstream_client}
    results: dict[str, dict[int, list[float]]] = {name: {1: [], 32: []} for name in calls}
    try:
        for name, call in calls.items():  # warm-up: connections, code paths
            await timed(call, 200, 1)
        for round_number in range(args.rounds):
            order = list(calls) if round_number % 2 == 0 else list(reversed(calls))
            for concurrency in (1, 32):
                for name in order:
                    results[name][concurrency].append(await timed(calls[name], args.requests, concurrency))
    finally:
        await session.close()
        await client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    fake = FakeUpstream(1)
    try:
        results = uvloop.run(run(args, fake.url(0)))
    finally:
        fake.close()
    base = results["aiohttp"]
    print(f"\n{args.requests} requests per measurement, median of {args.rounds} alternating rounds")
    print(f"{'client':24}{'sequential':>16}{'ratio':>8}{'32 concurrent':>18}{'ratio':>8}")
    for name, by_concurrency in results.items():
        seq, conc = statistics.median(by_concurrency[1]), statistics.median(by_concurrency[32])
        print(f"{name:24}{seq * 1e6:13.0f} µs{seq / statistics.median(base[1]):8.2f}"
              f"{conc * 1e6:15.0f} µs{conc / statistics.median(base[32]):8.2f}")
    print("(per request, client and the fake upstream's time together; the fake upstream is the same for both)")


if __name__ == "__main__":
    main()
