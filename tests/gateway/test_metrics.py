"""``/metrics`` on its own port: every family in ``METRIC_NAMES`` is exported and the values follow the traffic."""

from __future__ import annotations

import json
import time

from llm_gateway import metrics
from tests.gateway.services import FakeUpstream, GatewayProcess, http_request, metric_value

CHAT = {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]}


def test_metric_names_are_all_exported_and_prefixed() -> None:
    text = metrics.render().decode()
    assert len(set(metrics.METRIC_NAMES)) == len(metrics.METRIC_NAMES)
    for name in metrics.METRIC_NAMES:
        assert name.startswith("gateway_")
        assert f"# TYPE {name} " in text, name  # exactly the family name Prometheus shows


def test_metrics_follow_the_traffic(gateway: GatewayProcess, upstream: FakeUpstream, make_key) -> None:
    key = make_key(key_limits={"rpm": 3})
    auth = {"authorization": f"Bearer {key}"}
    for _ in range(2):
        assert http_request("POST", gateway.base_url + "/v1/chat/completions", CHAT, auth)[0] == 200
    http_request("POST", gateway.base_url + "/v1/chat/completions", {**CHAT, "stream": True}, auth)
    assert http_request("POST", gateway.base_url + "/v1/chat/completions", CHAT, auth)[0] == 429
    http_request("POST", gateway.base_url + "/v1/chat/completions", CHAT, {"authorization": "Bearer nope"})

    text = gateway.metrics_text()
    for name in metrics.METRIC_NAMES:
        assert name in text, name
    requests = {"model": "chat-a", "endpoint": "chat", "status": "200"}
    assert metric_value(text, "gateway_requests_total", requests) == 3
    assert metric_value(text, "gateway_requests_total", {"model": "chat-a", "status": "429"}) == 1
    assert metric_value(text, "gateway_tokens_total", {"model": "chat-a", "direction": "prompt"}) == 33
    assert metric_value(text, "gateway_tokens_total", {"model": "chat-a", "direction": "completion"}) == 15
    assert metric_value(text, "gateway_cost_usd_total", {"model": "chat-a"}) == (33 * 0.5 + 15 * 1.5) / 1000
    assert metric_value(text, "gateway_rejections_total", {"reason": "key_rpm"}) == 1
    assert metric_value(text, "gateway_rejections_total", {"reason": "invalid_key"}) == 1
    assert metric_value(text, "gateway_request_duration_seconds_count", {"model": "chat-a"}) == 4
    assert metric_value(text, "gateway_time_to_first_token_seconds_count", {"model": "chat-a"}) == 1
    assert metric_value(text, "gateway_overhead_seconds_count") == 3
    assert metric_value(text, "gateway_backend_healthy", {"backend": upstream.url(0)}) == 1
    assert metric_value(text, "gateway_backend_breaker_state", {"backend": upstream.url(0)}) == 0
    assert metric_value(text, "gateway_inflight_requests") == 0
    assert metric_value(text, "gateway_degraded_mode") == 0
    assert metric_value(text, "gateway_usage_buffer_depth") is not None

    # the API port does not serve metrics, the metrics port serves nothing else
    status, _, raw = http_request("GET", gateway.base_url + "/metrics")
    assert status == 404 and json.loads(raw)["error"]["code"] == "not_found"
    assert http_request("GET", f"http://127.0.0.1:{gateway.metrics_port}/v1/models")[0] == 404


def test_liveness_and_readiness(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    status, headers, raw = http_request("GET", gateway.base_url + "/health/live")
    assert status == 200 and json.loads(raw) == {"status": "ok"}
    assert headers["cache-control"] == "no-store"
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    body = json.loads(raw)
    assert status == 200 and body["status"] == "ready" and body["models_ready"] == 6
    assert body["redis"] == "ok" and body["postgres"] == "ok" and body["draining"] is False


def test_ready_without_any_healthy_backend_so_a_model_at_zero_can_wake(gateway_factory, upstream: FakeUpstream) -> None:
    # Every model scaled to zero: the pod must still be ready, or the load balancer never sends the request that
    # wakes one. /health/serving keeps the "some model can answer" signal for checks that want it.
    for index in range(4):
        upstream.control(index, health_status=503)
    gateway = gateway_factory()
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert status == 200 and json.loads(raw)["models_ready"] == 0 and json.loads(raw)["status"] == "ready"
    status, _, raw = http_request("GET", gateway.base_url + "/health/serving")
    assert status == 503 and json.loads(raw) == {"status": "not_serving", "models_ready": 0, "draining": False}
    upstream.control(0, health_status=200)
    deadline = time.monotonic() + 10
    while http_request("GET", gateway.base_url + "/health/serving")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http_request("GET", gateway.base_url + "/health/serving")[0] == 200
