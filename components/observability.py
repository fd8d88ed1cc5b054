"""`Observability`: alert rules (PrometheusRule) and Grafana dashboards (ConfigMaps picked up by Grafana's sidecar).

Every expression names only metrics that something we run exports; the tests check each name against:
- the gateway's own registry (`llm_gateway.metrics`: `METRIC_NAMES` plus the process collector),
- `VLLM_METRICS` below (vLLM's Prometheus endpoint, V1 engine, as of the pinned `vllm/vllm-openai` image),
- `DCGM_METRICS` below (dcgm-exporter's default counter set),
- `up`, which Prometheus itself records for every scrape target.
Every alert links its runbook in `docs/runbooks/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pulumi

from components.kube import DASHBOARD_LABEL, Manifest, apply_manifest, metadata

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

# Source: vLLM "Production Metrics" (docs.vllm.ai/en/stable/usage/metrics) and docs/design/metrics.md, V1 engine.
# Counters appear with the `_total` suffix on /metrics; histograms with `_bucket`/`_sum`/`_count`.
VLLM_METRICS: dict[str, str] = {
    "vllm:num_requests_running": "gauge: requests in the running batch",
    "vllm:num_requests_waiting": "gauge: requests queued for the scheduler (KEDA scales on it)",
    "vllm:kv_cache_usage_perc": "gauge: fraction of KV-cache blocks in use (0-1)",
    "vllm:prefix_cache_queries_total": "counter: prefix-cache lookups, in tokens",
    "vllm:prefix_cache_hits_total": "counter: prefix-cache hits, in tokens",
    "vllm:num_preemptions_total": "counter: requests preempted for lack of KV cache",
    "vllm:prompt_tokens_total": "counter: prefill tokens processed",
    "vllm:generation_tokens_total": "counter: tokens generated",
    "vllm:request_success_total": "counter: finished requests by finished_reason",
    "vllm:time_to_first_token_seconds": "histogram: time to first token",
    "vllm:inter_token_latency_seconds": "histogram: time between output tokens",
    "vllm:e2e_request_latency_seconds": "histogram: end-to-end request latency",
    "vllm:request_queue_time_seconds": "histogram: time spent waiting in the queue",
}
# Source: NVIDIA dcgm-exporter, etc/default-counters.csv (the chart's default collectors).
DCGM_METRICS: dict[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": "gauge: GPU utilisation (%)",
    "DCGM_FI_DEV_FB_USED": "gauge: framebuffer memory used (MiB)",
    "DCGM_FI_DEV_FB_FREE": "gauge: framebuffer memory free (MiB)",
    "DCGM_FI_DEV_GPU_TEMP": "gauge: GPU temperature (C)",
    "DCGM_FI_DEV_POWER_USAGE": "gauge: power draw (W)",
    "DCGM_FI_DEV_XID_ERRORS": "gauge: last XID error code",
}
PROMETHEUS_BUILTIN_METRICS = ("up",)

RATE_LIMIT_REASONS = "(local_)?(key_rpm|key_tpm|org_rpm|org_tpm|inflight)"
QUOTA_REASONS = "daily_requests|daily_tokens|monthly_tokens"


@dataclass
class ObservabilityArgs:
    namespace: str
    """Where Prometheus and Grafana run (the rule and dashboard objects live there too)."""
    gateway_namespace: str
    models_namespace: str
    runbook_base_url: str
    """Where docs/runbooks is browsable, e.g. `https://github.com/<org>/llm-platform/blob/main/docs/runbooks`."""
    always_on_models: Sequence[str] = ()
    """Models with min replicas >= 1: only their backends alert when unhealthy (a model idling at zero is not down)."""
    gateway_cpu_limit_cores: float = 2.0
    depends_on: Sequence[pulumi.Resource] = ()
    tags: dict[str, str] = field(default_factory=dict)


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, runbook: str, base: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "runbook_url": f"{base.rstrip('/')}/{runbook}"},
    }


def alert_rules(args: ObservabilityArgs) -> list[dict[str, Any]]:
    base, gw, models = args.runbook_base_url, args.gateway_namespace, args.models_namespace
    watched = "|".join(sorted(args.always_on_models)) or "^$"
    cpu_threshold = round(0.9 * args.gateway_cpu_limit_cores, 3)
    return [
        _alert("GatewayBackendUnhealthy", f'max by (model, backend) (gateway_backend_healthy{{model=~"{watched}"}}) == 0', "2m",
               "critical", "Backend {{ $labels.backend }} of {{ $labels.model }} failed its health checks for 2 minutes",
               "backend-failure.md", base),
        _alert("GPUMemoryHigh", "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > 0.9", "5m",
               "warning", "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} above 90% memory for 5 minutes", "gpu-oom.md", base),
        _alert("GatewayErrorRateHigh",
               'sum(rate(gateway_requests_total{status=~"5.."}[5m])) / clamp_min(sum(rate(gateway_requests_total[5m])), 1e-9) > 0.05',
               "2m", "critical", "More than 5% of gateway requests fail with 5xx", "high-error-rate.md", base),
        _alert("ModelQueueDepthHigh", "sum by (model_name) (vllm:num_requests_waiting) > 100", "1m",
               "warning", "{{ $labels.model_name }} has more than 100 requests waiting", "queue-depth.md", base),
        _alert("RateLimitRejectionsHigh", f'sum(increase(gateway_rejections_total{{reason=~"{RATE_LIMIT_REASONS}"}}[1m])) > 100', "1m",
               "warning", "More than 100 requests per minute rejected by rate limits", "quota-exceeded.md", base),
        _alert("QuotaRejections", f'sum(increase(gateway_rejections_total{{reason=~"{QUOTA_REASONS}"}}[5m])) > 0', "5m",
               "info", "Organisations are hitting their usage quotas", "quota-exceeded.md", base),
        _alert("GatewayLatencyP99High",
               "histogram_quantile(0.99, sum by (le) (rate(gateway_request_duration_seconds_bucket[5m]))) > 10", "5m",
               "warning", "Gateway p99 latency above 10 s", "high-latency.md", base),
        _alert("PodDown", f'up{{namespace=~"{gw}|{models}"}} == 0', "2m",
               "critical", "{{ $labels.namespace }}/{{ $labels.pod }} is not answering scrapes", "pod-down.md", base),
        _alert("RedisUnreachable", "max(gateway_degraded_mode) == 1", "1m",
               "critical", "The gateway cannot reach Redis and runs on its local limiter", "redis-down.md", base),
        _alert("UsageBufferGrowing", "max(gateway_usage_buffer_depth) > 10000", "5m",
               "warning", "Usage records are piling up: Postgres is slow or unreachable", "postgres-down.md", base),
        _alert("GatewayHighCPU", f'sum by (pod) (rate(process_cpu_seconds_total{{namespace="{gw}"}}[5m])) > {cpu_threshold}', "10m",
               "warning", "Gateway pod {{ $labels.pod }} above 90% of its CPU limit for 10 minutes", "high-cpu.md", base),
    ]


def prometheus_rule(args: ObservabilityArgs) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": metadata("llm-platform", args.namespace),
        "spec": {"groups": [{"name": "llm-platform", "rules": alert_rules(args)}]},
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """Dashboard file stem -> Grafana dashboard JSON model."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def dashboard_configmaps(namespace: str) -> list[Manifest]:
    return [
        {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(f"dashboard-{stem}", namespace, {DASHBOARD_LABEL: "1"}),
            "data": {f"{stem}.json": json.dumps(model, indent=1, sort_keys=True)},
        }
        for stem, model in dashboards().items()
    ]


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:workloads:Observability", name, None, opts)
        after = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        apply_manifest(f"{name}-rules", prometheus_rule(args), after)
        for cm in dashboard_configmaps(args.namespace):
            apply_manifest(f"{name}-{cm['metadata']['name']}", cm, after)
        self.register_outputs({"dashboards": sorted(dashboards())})
