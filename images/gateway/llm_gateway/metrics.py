"""Prometheus metrics of the gateway, served on their own port (9090) from ``REGISTRY``.

``METRIC_NAMES`` lists every metric family the gateway exports, spelled as in the ``# TYPE`` lines of the
exposition (counters end in ``_total``; histograms also expose ``<name>_bucket``, ``_sum`` and ``_count``). The
infra dashboards and alert rules are checked against it. Only prometheus_client is imported here (the infra code imports this module).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter(
    "gateway_requests", "Requests answered, by model, endpoint and HTTP status.",
    ["model", "endpoint", "status"], registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "gateway_request_duration_seconds", "Time from request received to last byte sent.",
    ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds", "Streaming: time from request received to first upstream chunk sent.",
    ["model"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds", "Time the gateway itself adds before the request leaves for the backend.",
    buckets=_OVERHEAD_BUCKETS, registry=REGISTRY,
)
TOKENS = Counter(
    "gateway_tokens", "Tokens metered, by model and direction (prompt|completion).",
    ["model", "direction"], registry=REGISTRY,
)
COST = Counter("gateway_cost_usd", "Cost in USD from catalog prices.", ["model"], registry=REGISTRY)
CACHE = Counter("gateway_cache_lookups", "Response cache lookups by result (hit|miss).", ["result"],
                registry=REGISTRY)
REJECTIONS = Counter(
    "gateway_rejections", "Requests refused before reaching a backend, by reason.", ["reason"], registry=REGISTRY,
)
BACKEND_HEALTHY = Gauge(
    "gateway_backend_healthy", "1 if the backend's last health check passed.", ["model", "backend"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "gateway_backend_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["model", "backend"],
    registry=REGISTRY,
)
BACKEND_OUTSTANDING = Gauge(
    "gateway_backend_outstanding_requests", "Requests in flight to the backend.", ["model", "backend"],
    registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries", "Upstream attempts retried or failed over, by model.", ["model"], registry=REGISTRY,
)
FALLBACKS = Counter(
    "gateway_fallbacks", "Requests served by a fallback model.", ["model", "fallback"], registry=REGISTRY,
)
INFLIGHT = Gauge("gateway_inflight_requests", "Requests being handled by this replica.", registry=REGISTRY)
USAGE_BUFFER_DEPTH = Gauge(
    "gateway_usage_buffer_depth", "Usage records not yet written to Postgres (memory + spill).", registry=REGISTRY,
)
DEGRADED = Gauge(
    "gateway_degraded_mode", "1 while Redis is unreachable and the local per-replica limiter is in use.",
    registry=REGISTRY,
)
DRAINING = Gauge("gateway_draining", "1 after SIGTERM while in-flight requests finish.", registry=REGISTRY)
REDIS_ERRORS = Counter("gateway_redis_errors", "Redis commands that failed.", ["op"], registry=REGISTRY)
# Scale from zero. KEDA wakes a model on this counter, so it counts the model the client asked for (not a fallback
# that served it), when the request arrives (not when it ends), and every catalog model's series exists from
# startup at 0 (Prometheus' rate() needs a sample before the first increment to see it).
MODEL_DEMAND = Counter(
    "gateway_model_demand", "Admitted requests that needed a backend, by the catalog model the client asked for.",
    ["model"], registry=REGISTRY,
)
HELD = Gauge(
    "gateway_held_requests", "Requests waiting for a model without a healthy backend to wake.", ["model"],
    registry=REGISTRY,
)
WAKE_OUTCOMES = Counter(
    "gateway_wake_outcomes", "How held requests ended: woken, timeout, disconnected, draining, or full (not held).",
    ["model", "outcome"], registry=REGISTRY,
)
LIVE_REPLICAS = Gauge(
    "gateway_live_replicas", "Gateway replicas with a live heartbeat in Redis, as last seen (degraded-mode share).",
    registry=REGISTRY,
)

METRIC_NAMES: tuple[str, ...] = (
    "gateway_requests_total",
    "gateway_request_duration_seconds",
    "gateway_time_to_first_token_seconds",
    "gateway_overhead_seconds",
    "gateway_tokens_total",
    "gateway_cost_usd_total",
    "gateway_cache_lookups_total",
    "gateway_rejections_total",
    "gateway_backend_healthy",
    "gateway_backend_breaker_state",
    "gateway_backend_outstanding_requests",
    "gateway_upstream_retries_total",
    "gateway_fallbacks_total",
    "gateway_inflight_requests",
    "gateway_usage_buffer_depth",
    "gateway_degraded_mode",
    "gateway_draining",
    "gateway_redis_errors_total",
    "gateway_model_demand_total",
    "gateway_held_requests",
    "gateway_wake_outcomes_total",
    "gateway_live_replicas",
)


def render() -> bytes:
    return generate_latest(REGISTRY)
