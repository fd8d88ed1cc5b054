"""`Observability`: alert rules (PrometheusRule) and Grafana dashboards (ConfigMaps picked up by Grafana's sidecar).

Every expression names only metrics that something we run exports; the tests check each name against:
- the gateway's own registry (`llm_gateway.metrics`: `METRIC_NAMES` plus the process collector),
- `VLLM_METRICS` below (vLLM's Prometheus endpoint, V1 engine, as of the pinned `vllm/vllm-openai` image),
- `DCGM_METRICS` below (dcgm-exporter's default counter set),
- `up`, which Prometheus itself records for every scrape target.
- `KUBE_STATE_METRICS` below (kube-state-metrics, shipped by kube-prometheus-stack),
- `up`, which Prometheus itself records for every scrape target.
Every alert links its runbook in `docs/runbooks/`.

Alerts stay quiet through normal operation: a model server loading its weights (tens of minutes, not Ready, not
answering scrapes) is not "down" (`PodDown` asks for pods that are Ready yet unscrapeable), and vLLM preallocating
`gpu_memory_utilization` of its GPU is not "memory high" (`GPUMemoryHigh` fires above what the catalog reserves).

Alertmanager (`alertmanager_config`): critical alerts page (PagerDuty, else Slack, else SNS), warnings notify
(Slack, else SNS, else PagerDuty), `info` and the Watchdog heartbeat go nowhere. Receiver credentials never enter
the config: PagerDuty's routing key and Slack's webhook URL are files Alertmanager reads from a Secret that External
Secrets syncs from Secrets Manager (`alertmanager_secret`); SNS is published to with Alertmanager's own IRSA role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pulumi

from components.kube import DASHBOARD_LABEL, Manifest, apply_manifest, metadata
from components.secrets_sync import SecretSource, external_secret

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
# Source: kubernetes/kube-state-metrics docs/metrics/workload/pod-metrics.md.
KUBE_STATE_METRICS: dict[str, str] = {
    "kube_pod_status_ready": "gauge: pod Ready condition (condition=true|false|unknown)",
}
PROMETHEUS_BUILTIN_METRICS = ("up",)
# vLLM's own accounting can exceed `gpu_memory_utilization` by its CUDA graphs and the CUDA context; dcgm's used /
# (used + free) also leaves out the driver's reserved framebuffer. Above reserved + this, memory is really short.
GPU_MEMORY_HEADROOM = 0.07

# Alertmanager (kube-prometheus-stack's `alertmanager.alertmanagerSpec.secrets` mounts each Secret here).
ALERTMANAGER_SECRET = "alertmanager-receivers"
ALERTMANAGER_SECRET_DIR = f"/etc/alertmanager/secrets/{ALERTMANAGER_SECRET}"
NULL_RECEIVER = "null"
PAGE_RECEIVER = "page"
NOTIFY_RECEIVER = "notify"


@dataclass
class AlertReceivers:
    """Where alerts go; at least one. Secrets are Secrets Manager references, never values."""

    pagerduty_routing_key: SecretSource | None = None
    slack_webhook_url: SecretSource | None = None
    slack_channel: str | None = None
    sns_topic_arn: str | None = None

    def secret_files(self) -> dict[str, SecretSource]:
        files = {"pagerduty_routing_key": self.pagerduty_routing_key, "slack_webhook_url": self.slack_webhook_url}
        return {k: v for k, v in files.items() if v is not None}


def _receiver_configs(kind: str, receivers: AlertReceivers, region: str, severity: str) -> dict[str, Any]:
    if kind == "pagerduty":
        return {"pagerduty_configs": [{"routing_key_file": f"{ALERTMANAGER_SECRET_DIR}/pagerduty_routing_key",
                                       "severity": severity, "send_resolved": True}]}
    if kind == "slack":
        slack: dict[str, Any] = {"api_url_file": f"{ALERTMANAGER_SECRET_DIR}/slack_webhook_url", "send_resolved": True,
                                 "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}',
                                 "text": '{{ range .Alerts }}{{ .Annotations.summary }} {{ .Annotations.runbook_url }}\n{{ end }}'}
        if receivers.slack_channel:
            slack["channel"] = receivers.slack_channel
        return {"slack_configs": [slack]}
    return {"sns_configs": [{"topic_arn": receivers.sns_topic_arn, "sigv4": {"region": region}, "send_resolved": True,
                             "subject": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}'}]}


def _available(receivers: AlertReceivers) -> list[str]:
    return [k for k, v in (("pagerduty", receivers.pagerduty_routing_key), ("slack", receivers.slack_webhook_url),
                           ("sns", receivers.sns_topic_arn)) if v]


def alertmanager_config(receivers: AlertReceivers, region: str) -> dict[str, Any]:
    """The Alertmanager configuration (kube-prometheus-stack `alertmanager.config`): no secret values in it."""
    have = _available(receivers)
    if not have:
        raise ValueError("alertmanager_config: no receiver; at least one of PagerDuty, Slack, SNS is needed")
    page = next(k for k in ("pagerduty", "slack", "sns") if k in have)
    notify = next(k for k in ("slack", "sns", "pagerduty") if k in have)
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": NOTIFY_RECEIVER,  # anything not matched below still reaches a person
            "group_by": ["alertname", "namespace"],
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
            "routes": [
                # kube-prometheus-stack's always-firing heartbeat and its info-inhibitor helper.
                {"receiver": NULL_RECEIVER, "matchers": ['alertname = "Watchdog"']},
                {"receiver": NULL_RECEIVER, "matchers": ['alertname = "InfoInhibitor"']},
                {"receiver": PAGE_RECEIVER, "matchers": ['severity = "critical"'], "repeat_interval": "1h"},
                {"receiver": NULL_RECEIVER, "matchers": ['severity = "info"']},
            ],
        },
        "inhibit_rules": [
            {"source_matchers": ['severity = "critical"'], "target_matchers": ['severity =~ "warning|info"'],
             "equal": ["namespace", "alertname"]},
        ],
        "receivers": [
            {"name": NULL_RECEIVER},
            {"name": PAGE_RECEIVER, **_receiver_configs(page, receivers, region, "critical")},
            {"name": NOTIFY_RECEIVER, **_receiver_configs(notify, receivers, region, "warning")},
        ],
    }


def alertmanager_secret(namespace: str, receivers: AlertReceivers) -> Manifest | None:
    """ExternalSecret producing the Secret Alertmanager reads its receiver credentials from (None: none needed)."""
    files = receivers.secret_files()
    return external_secret(ALERTMANAGER_SECRET, namespace, files) if files else None

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
    gpu_memory_reserved: float = 0.9
    """Largest fraction of one GPU's memory the catalog has vLLM preallocate (utilisation x tenants sharing it)."""
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
    gpu_threshold = round(min(0.99, args.gpu_memory_reserved + GPU_MEMORY_HEADROOM), 3)
    return [
        _alert("GatewayBackendUnhealthy", f'max by (model, backend) (gateway_backend_healthy{{model=~"{watched}"}}) == 0', "2m",
               "critical", "Backend {{ $labels.backend }} of {{ $labels.model }} failed its health checks for 2 minutes",
               "backend-failure.md", base),
        _alert("GPUMemoryHigh", f"DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > {gpu_threshold}", "5m",
               "warning", f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.Hostname }}}} above {gpu_threshold:.0%} memory for 5 minutes "
               f"(vLLM reserves up to {args.gpu_memory_reserved:.0%})", "gpu-oom.md", base),
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
        # A gateway pod starts in seconds, so 2 minutes unscrapeable is down. A model server loads its weights for tens
        # of minutes without answering: it counts as down only once Ready (its crash loops page through
        # GatewayBackendUnhealthy).
        _alert("PodDown", f'(up{{namespace="{gw}"}} == 0) or ((up{{namespace="{models}"}} == 0) and on (namespace, pod) '
                          f'(kube_pod_status_ready{{namespace="{models}",condition="true"}} == 1))', "2m",
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
