"""Redis outage (degraded local limiter), Postgres outage on the hot path, and graceful SIGTERM drain."""

from __future__ import annotations

import json
import signal
import threading
import time

from tests.gateway.services import (
    FakeUpstream, GatewayProcess, PostgresServer, RedisServer, http_request, metric_value, usage_rows,
)

CHAT = {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]}


def post(gateway: GatewayProcess, key: str) -> tuple[int, dict[str, str], bytes]:
    return http_request("POST", gateway.base_url + "/v1/chat/completions", CHAT, {"authorization": f"Bearer {key}"})


def wait_until(condition, timeout_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_redis_outage_degrades_to_the_local_limiter_and_recovers(gateway_factory, make_key,
                                                                 redis_control: RedisServer) -> None:
    gateway = gateway_factory(expected_replicas="2")
    key = make_key(key_limits={"rpm": 10})
    assert post(gateway, key)[0] == 200
    assert metric_value(gateway.metrics_text(), "gateway_degraded_mode") == 0

    redis_control.stop()
    # this replica's share of rpm=10 over 2 expected replicas is 5 per minute
    statuses = [post(gateway, key)[0] for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    text = gateway.metrics_text()
    assert metric_value(text, "gateway_degraded_mode") == 1
    assert metric_value(text, "gateway_rejections_total", {"reason": "local_key_rpm"}) == 2
    # The outage is first seen by whichever Redis call runs first (an admission, or the background reconciliation
    # of the request before it); either way it is counted.
    ops = ("admit", "reconcile", "cache_get", "cache_put")
    assert sum(metric_value(text, "gateway_redis_errors_total", {"op": op}) or 0 for op in ops) >= 1
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert status == 200 and json.loads(raw)["redis"] == "degraded"  # Redis does not make the pod unready

    redis_control.start()
    assert wait_until(lambda: metric_value(gateway.metrics_text(), "gateway_degraded_mode") == 0)
    # back on Redis (which restarted empty): the fleet-wide bucket applies again
    assert [post(gateway, key)[0] for _ in range(11)] == [200] * 10 + [429]
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert json.loads(raw)["redis"] == "ok"


def test_postgres_outage_keeps_cached_keys_working_and_usage_is_not_lost(gateway: GatewayProcess, make_key,
                                                                         pg_control: PostgresServer,
                                                                         pg_dsn: str) -> None:
    key = make_key()
    assert post(gateway, key)[0] == 200
    pg_control.stop()
    assert [post(gateway, key)[0] for _ in range(3)] == [200, 200, 200]
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert status == 200 and json.loads(raw)["postgres"] == "down"
    pg_control.start()
    assert len(usage_rows(pg_dsn, 4, timeout_s=30)) == 4


def test_sigterm_drains_a_slow_stream_then_exits_zero(gateway: GatewayProcess, upstream: FakeUpstream, make_key,
                                                      pg_dsn: str) -> None:
    key = make_key()
    for index in (0, 1):
        upstream.control(index, stream_chunks=8, chunk_delay_s=0.25)
    received: list[bytes] = []
    first_chunk = threading.Event()

    def stream() -> None:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        connection.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}),
                           {"authorization": f"Bearer {key}", "content-type": "application/json"})
        response = connection.getresponse()
        while True:
            line = response.readline()
            if not line:
                break
            received.append(line)
            if line.startswith(b"data: {"):
                first_chunk.set()
        connection.close()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert first_chunk.wait(15)
    gateway.signal(signal.SIGTERM)
    assert wait_until(lambda: http_request("GET", gateway.base_url + "/health/ready")[0] == 503, 5)
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert json.loads(raw)["draining"] is True
    assert gateway.wait(30) == 0
    reader.join(10)
    text = b"".join(received)
    assert all(f"tok{i} ".encode() in text for i in range(8))
    assert text.rstrip().endswith(b"data: [DONE]")
    rows = usage_rows(pg_dsn, 1)
    assert len(rows) == 1 and rows[0]["completion_tokens"] == 8  # the meter was flushed before exit


def test_gateway_starts_and_serves_without_redis(gateway_factory, make_key, redis_control: RedisServer) -> None:
    redis_control.stop()
    gateway = gateway_factory()
    key = make_key()
    assert [post(gateway, key)[0] for _ in range(3)] == [200, 200, 200]
    assert metric_value(gateway.metrics_text(), "gateway_degraded_mode") == 1
    redis_control.start()
    assert wait_until(lambda: metric_value(gateway.metrics_text(), "gateway_degraded_mode") == 0)
    assert post(gateway, key)[0] == 200
