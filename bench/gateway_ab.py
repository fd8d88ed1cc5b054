"""Paired A/B benchmark of two versions of the gateway: is the working tree faster than a git revision?

Single runs of ``gateway_bench.py`` vary by more than most optimisations gain (this host is shared), so this
script runs both versions at once, as two gateway processes on the same Redis, Postgres and fake upstream, and
sends the same fixed-rate load to the upstream directly, to A and to B in short slices whose order is shuffled
in every round: noise then hits all three alike, and the per-round difference B − A is what it reports.

    .venv/bin/python bench/gateway_ab.py                      # A = HEAD, B = the working tree
    .venv/bin/python bench/gateway_ab.py --baseline HEAD~3 --rounds 16
    .venv/bin/python bench/gateway_ab.py --baseline HEAD --candidate HEAD   # a control: expect ~0
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "images" / "gateway"), str(ROOT / "bench")]

import aiohttp  # noqa: E402
import uvloop  # noqa: E402

from gateway_bench import BODY, GATEWAY_ENV, bench_catalog, interleaved, open_loop, unlimited_key  # noqa: E402
from tests.gateway.services import GATEWAY_SRC, FakeUpstream, GatewayProcess, PostgresServer, RedisServer  # noqa: E402


def export_revision(revision: str, into: Path) -> Path:
    """``images/gateway`` as it is at ``revision`` (``git archive``), so the working tree is left alone."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "images/gateway"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "images" / "gateway"


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def added(latencies: list[float], direct: list[float]) -> float:
    return statistics.median(latencies) - statistics.median(direct)


async def run(args: argparse.Namespace, direct_url: str, gateways: dict[str, GatewayProcess],
              key: str) -> dict[str, list[list[float]]]:
    auth = {"authorization": f"Bearer {key}"}
    targets = {"direct": (direct_url, {}), **{name: (gw.base_url + "/v1/chat/completions", auth)
                                              for name, gw in gateways.items()}}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for url, headers in targets.values():  # warm connections, caches and key lookups on every path
            await open_loop(session, url, headers, 200, 1, BODY)
        slices = await interleaved(session, targets, args.rate, args.slice_seconds, args.rounds)
    for name, parts in slices.items():
        errors = sum(count for _, count in parts)
        if errors:
            raise SystemExit(f"{errors} errors on {name}: the comparison would be meaningless")
    return {name: [latencies for latencies, _ in parts] for name, parts in slices.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="git revision for A (default HEAD)")
    parser.add_argument("--candidate", default=None, help="git revision, or a directory holding a copy of "
                        "images/gateway, for B (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--slice-seconds", type=float, default=1.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gw-ab-"))
    sources = {"A": export_revision(args.baseline, workdir / "a"), "B": GATEWAY_SRC}
    if args.candidate and Path(args.candidate).is_dir():
        sources["B"] = Path(args.candidate)
    elif args.candidate:
        sources["B"] = export_revision(args.candidate, workdir / "b")
    redis, postgres, fake = RedisServer(), PostgresServer(), FakeUpstream(1)
    gateways: dict[str, GatewayProcess] = {}
    try:
        redis.start()
        postgres.start()
        dsn = postgres.create_database("ab")
        for name, src in sources.items():
            gateways[name] = GatewayProcess(bench_catalog(fake.url(0)), redis.url, dsn, GATEWAY_ENV, src=src).start()
        key = unlimited_key(dsn, "ab-org")
        slices = uvloop.run(run(args, fake.url(0) + "/v1/chat/completions", gateways, key))
    finally:
        for gateway in gateways.values():
            gateway.stop()
        fake.close()
        redis.close()
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)

    pooled = {name: [x for part in parts for x in part] for name, parts in slices.items()}
    per_round = [statistics.median(b) - statistics.median(a) for a, b in zip(slices["A"], slices["B"], strict=True)]
    b_faster = sum(1 for delta in per_round if delta < 0)
    label_b = args.candidate or "working tree"
    print(f"\nA = {args.baseline}, B = {label_b}: {args.rounds} rounds of {args.slice_seconds:g} s slices at "
          f"{args.rate:.0f} RPS, order shuffled per round")
    print(f"direct p50 {statistics.median(pooled['direct']) * 1000:.3f} ms")
    direct_p99 = p99(pooled["direct"])
    print(f"direct p99 {direct_p99 * 1000:.3f} ms")
    for name in ("A", "B"):
        print(f"{name}: p50 {statistics.median(pooled[name]) * 1000:.3f} ms, added p50 "
              f"{added(pooled[name], pooled['direct']) * 1000:.3f} ms; p99 {p99(pooled[name]) * 1000:.3f} ms, "
              f"added p99 {(p99(pooled[name]) - direct_p99) * 1000:.3f} ms")
    print(f"B − A per round (median of the round's p50 differences): {statistics.median(per_round) * 1000:+.3f} ms; "
          f"B faster in {b_faster} of {len(per_round)} rounds")


if __name__ == "__main__":
    main()
