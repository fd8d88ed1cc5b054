"""Routing: failover, health checks, circuit breaker, retries (only before the first byte), fallbacks, affinity."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from llm_gateway.catalog import parse_catalog
from llm_gateway.routing import CLOSED, HALF_OPEN, OPEN, Router, backoff_delay
from tests.gateway.services import FakeUpstream, GatewayProcess, http_request, metric_value, usage_rows


def post(gateway: GatewayProcess, key: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return http_request("POST", gateway.base_url + "/v1/chat/completions", body, {"authorization": f"Bearer {key}"})


def chat(model: str, content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def wait_until(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_dead_backend_fails_over_and_health_checks_notice(gateway: GatewayProcess, upstream: FakeUpstream,
                                                          make_key) -> None:
    key = make_key()
    upstream.down(0)
    assert [post(gateway, key, chat("chat-a"))[0] for _ in range(10)] == [200] * 10
    assert len(upstream.log(1)) == 10
    dead = {"model": "chat-a", "backend": upstream.url(0)}
    assert wait_until(lambda: metric_value(gateway.metrics_text(), "gateway_backend_healthy", dead) == 0)
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert status == 200
    backends = {b["url"]: b for b in json.loads(raw)["backends"]["chat-a"]}
    assert backends[upstream.url(0)]["healthy"] is False and backends[upstream.url(1)]["healthy"] is True
    upstream.up(0)
    assert wait_until(lambda: metric_value(gateway.metrics_text(), "gateway_backend_healthy", dead) == 1)


def test_breaker_opens_after_five_failures_then_half_opens(gateway_factory, upstream: FakeUpstream,
                                                           make_key) -> None:
    gateway = gateway_factory(breaker_reset_s="2", health_interval_s="60")
    key = make_key()
    upstream.control(0, fail_status=503, fail_count=-1)
    state = {"model": "chat-a", "backend": upstream.url(0)}
    for _ in range(60):
        assert post(gateway, key, chat("chat-a"))[0] == 200  # every failure was retried on the other backend
        if metric_value(gateway.metrics_text(), "gateway_backend_breaker_state", state) == OPEN:
            break
    assert metric_value(gateway.metrics_text(), "gateway_backend_breaker_state", state) == OPEN
    assert len(upstream.log(0)) == 5  # exactly the threshold, then no more traffic
    for _ in range(5):
        assert post(gateway, key, chat("chat-a"))[0] == 200
    assert len(upstream.log(0)) == 5

    upstream.control(0, fail_count=0)  # the backend recovers
    time.sleep(2.1)
    assert wait_until(lambda: post(gateway, key, chat("chat-a"))[0] == 200 and len(upstream.log(0)) > 5)
    assert metric_value(gateway.metrics_text(), "gateway_backend_breaker_state", state) == CLOSED


def test_retries_before_the_first_byte_with_backoff(gateway: GatewayProcess, upstream: FakeUpstream,
                                                    make_key) -> None:
    key = make_key()
    upstream.control(2, fail_status=503, fail_count=2)
    status, _, raw = post(gateway, key, chat("chat-b"))
    assert status == 200 and len(upstream.log(2)) == 3
    upstream.control(2, fail_status=502, fail_count=1)
    status, _, raw = post(gateway, key, chat("chat-b", stream=True))  # a stream is retried before it starts
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n") and len(upstream.log(2)) == 5
    upstream.control(2, drop_count=1)  # connection closed without an answer
    assert post(gateway, key, chat("chat-b"))[0] == 200 and len(upstream.log(2)) == 7
    assert metric_value(gateway.metrics_text(), "gateway_upstream_retries_total", {"model": "chat-b"}) == 4

    upstream.control(2, fail_status=503, fail_count=-1)
    status, headers, raw = post(gateway, key, chat("chat-b"))
    assert status == 503 and json.loads(raw)["error"]["code"] == "service_unavailable"
    assert len(upstream.log(2)) == 7 + 4  # one attempt and three retries


def test_no_retry_after_the_first_byte(gateway: GatewayProcess, upstream: FakeUpstream, make_key,
                                       pg_dsn: str) -> None:
    key = make_key()
    upstream.control(2, stream_chunks=6, drop_after_chunks=2)
    status, _, raw = post(gateway, key, chat("chat-b", stream=True))
    assert status == 200
    assert b"tok0" in raw and b"tok1" in raw and b"tok2" not in raw
    assert b'"code":"stream_interrupted"' in raw and b"[DONE]" not in raw
    assert len(upstream.log(2)) == 1
    row = usage_rows(pg_dsn, 1)[0]
    # usage never arrived: billed from what was delivered (2 chunks) and the prompt estimate
    assert row["completion_tokens"] == 2 and row["prompt_tokens"] > 0


def test_fallback_model_serves_when_primary_fails(gateway: GatewayProcess, upstream: FakeUpstream, make_key,
                                                  pg_dsn: str) -> None:
    key = make_key()
    for index in (0, 1):
        upstream.control(index, fail_status=503, fail_count=-1)
    status, _, raw = post(gateway, key, chat("chat-a"))
    assert status == 200
    assert [entry["body"]["model"] for entry in upstream.log(2)] == ["chat-b"]
    assert len(upstream.log(0)) + len(upstream.log(1)) == 4
    assert metric_value(gateway.metrics_text(), "gateway_fallbacks_total",
                        {"model": "chat-a", "fallback": "chat-b"}) == 1
    row = usage_rows(pg_dsn, 1)[0]
    assert row["model"] == "chat-b"  # billed at the price of the model that answered
    assert float(row["cost_usd"]) == (11 * 1.0 + 5 * 2.0) / 1000


def test_prefix_affinity_keeps_a_prefix_on_one_backend(gateway: GatewayProcess, upstream: FakeUpstream,
                                                       make_key) -> None:
    key = make_key()
    shared_system = "You are a SQL assistant. Schema: " + "table t(c int); " * 200
    for index in range(12):
        body = {"model": "chat-affinity", "messages": [
            {"role": "system", "content": shared_system}, {"role": "user", "content": f"question {index}"}]}
        assert post(gateway, key, body)[0] == 200
    counts = [len(upstream.log(index)) for index in range(3)]
    assert sorted(counts) == [0, 0, 12]

    for index in range(3):
        upstream.reset()
    for index in range(12):
        assert post(gateway, key, chat("chat-affinity", f"unrelated prompt number {index} " * 3))[0] == 200
    spread = [len(upstream.log(index)) for index in range(3)]
    assert sum(spread) == 12 and max(spread) < 12


# ---------------------------------------------------------------------------- unit level
def make_router(prefix_affinity: bool = True, backends: int = 3) -> Router:
    catalog = parse_catalog({"models": [{"name": "m", "kind": "chat", "prefix_affinity": prefix_affinity,
                                         "backends": [f"http://b{i}.local:8000" for i in range(backends)]}]})
    return Router(catalog, breaker_failures=5, breaker_reset_s=30.0, affinity_epsilon=0.25)


def test_least_outstanding_and_bounded_load() -> None:
    router = make_router(prefix_affinity=False)
    entry = router.catalog.lookup("m")
    assert entry is not None
    picks = [router.choose(entry) for _ in range(6)]
    assert Counter(b.url for b in picks if b) == {f"http://b{i}.local:8000": 2 for i in range(3)}

    router = make_router(prefix_affinity=True)
    entry = router.catalog.lookup("m")
    assert entry is not None
    first = router.choose(entry, b"same prefix")
    assert first is not None
    first.release()
    for _ in range(5):  # sequential requests with one prefix stay on its preferred backend
        again = router.choose(entry, b"same prefix")
        assert again is first
        again.release()
    held = [router.choose(entry, b"same prefix") for _ in range(9)]
    # bounded load: the preferred backend takes at most ceil((1+eps) x average), the others the overflow
    assert first.outstanding == 4 and all(b is not None for b in held)
    assert sorted(b.outstanding for b in router.pools["m"]) == [2, 3, 4]


def test_breaker_state_machine() -> None:
    router = make_router(prefix_affinity=False, backends=1)
    backend = router.pools["m"][0]
    for _ in range(4):
        backend.record_failure(5, now=100.0)
    assert backend.state == CLOSED
    backend.record_failure(5, now=100.0)
    assert backend.state == OPEN and not backend.admits(110.0, 30.0)
    assert backend.admits(130.0, 30.0)
    backend.acquire(130.0, 30.0)
    assert backend.state == HALF_OPEN and not backend.admits(130.5, 30.0)  # one trial at a time
    backend.record_failure(5, now=131.0)
    assert backend.state == OPEN and not backend.admits(140.0, 30.0)
    backend.acquire(161.0, 30.0)
    backend.record_success()
    assert backend.state == CLOSED and backend.failures == 0


def test_backoff_has_jitter_and_a_ceiling() -> None:
    delays = [backoff_delay(attempt, 0.1, 1.0) for attempt in range(6) for _ in range(20)]
    assert all(0 <= delay <= 1.0 for delay in delays)
    first = [backoff_delay(0, 0.1, 1.0) for _ in range(50)]
    assert all(0.05 <= delay <= 0.1 for delay in first) and len(set(first)) > 1


def test_request_timeout_and_stream_idle_timeout(gateway_factory, upstream: FakeUpstream, make_key) -> None:
    gateway = gateway_factory(request_timeout_s="1", stream_idle_timeout_s="0.5", max_retries="0")
    key = make_key()
    upstream.control(2, latency_s=3)
    status, _, raw = post(gateway, key, chat("chat-b"))
    assert status == 504 and json.loads(raw)["error"]["code"] == "upstream_timeout"
    upstream.control(2, latency_s=0, stream_chunks=3, chunk_delay_s=2)
    status, _, raw = post(gateway, key, chat("chat-b", stream=True))
    assert status == 200 and b"tok0" in raw and b"tok1" not in raw
    assert b"idle timeout" in raw and b'"code":"stream_interrupted"' in raw
