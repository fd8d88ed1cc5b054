"""`Namespaces`: the platform's namespaces with Pod Security Admission labels and default-deny network policies.

Workload namespaces (`gateway`, `models`) enforce the `restricted` Pod Security Standard and deny all traffic
except what the serving path needs:

    ALB (VPC) ──8080──► gateway ──8000──► models ──443──► S3 / STS / Hugging Face
                          │ └──6379/5432──► Redis / Postgres (VPC)
    monitoring ──9090──► gateway, ──8000──► models (metrics)          every pod ──53──► kube-dns

`monitoring` enforces `privileged` because node-exporter needs the host's PID and network namespaces (it warns
on anything beyond `baseline`); the add-on namespaces `keda` and `external-secrets` enforce `baseline`.
Enforcement needs the VPC CNI network policy agent (enabled on the EKS cluster's vpc-cni add-on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import pulumi

from components.kube import Manifest, apply_manifest, metadata

GATEWAY_PORT = 8080
GATEWAY_METRICS_PORT = 9090
MODEL_PORT = 8000
PROMETHEUS_PORT = 9090
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
Level = Literal["privileged", "baseline", "restricted"]
# The AWS load balancer controller's pod webhook injects a target-health readiness gate into pods of namespaces
# labelled so (eks-charts aws-load-balancer-controller templates/webhook.yaml, `mpod.elbv2.k8s.aws` namespaceSelector):
# a gateway pod counts as Ready only once the ALB sees it healthy, so rollouts never run out of healthy targets.
READINESS_GATE_LABEL = {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}


@dataclass
class NamespacesArgs:
    vpc_cidr: pulumi.Input[str]
    """VPC CIDR: the ALB's ENIs (gateway ingress) and Redis/Postgres (gateway egress) live in it."""
    k8s_version: str
    """Kubernetes minor version the Pod Security Standards are pinned to, e.g. `1.33`."""
    gateway: str = "gateway"
    models: str = "models"
    monitoring: str = "monitoring"
    keda: str = "keda"
    external_secrets: str = "external-secrets"
    redis_port: int = 6379
    postgres_port: int = 5432
    redis_cidrs: Sequence[pulumi.Input[str]] = ()
    """VPC CIDRs where the Redis the gateway writes to may live (its own and, across peering, the writer's and
    every promotable member's); empty = the VPC only."""
    postgres_cidrs: Sequence[pulumi.Input[str]] = ()
    """Likewise for the usage ledger's Postgres (the writer and every promotable replica); empty = the VPC only."""


def namespace(name: str, enforce: Level, warn: Level, version: str, extra_labels: dict[str, str] | None = None) -> Manifest:
    labels = {
        **(extra_labels or {}),
        "pod-security.kubernetes.io/enforce": enforce,
        "pod-security.kubernetes.io/enforce-version": f"v{version}",
        "pod-security.kubernetes.io/warn": warn,
        "pod-security.kubernetes.io/warn-version": f"v{version}",
        "pod-security.kubernetes.io/audit": warn,
        "pod-security.kubernetes.io/audit-version": f"v{version}",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(name, None, labels)}


def network_policy(name: str, ns: str, spec: dict[str, Any]) -> Manifest:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(name, ns), "spec": spec}


def from_namespace(ns: str, pod_labels: dict[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": pod_labels}
    return peer


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def default_deny(ns: str, egress: bool = True) -> Manifest:
    return network_policy("default-deny", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"] if egress else ["Ingress"]})


def allow_dns(ns: str) -> Manifest:
    dns = {**from_namespace("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    return network_policy("allow-dns", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [dns], "ports": DNS_PORTS}]})


def policies(args: NamespacesArgs) -> list[Manifest]:
    gw, models, mon = args.gateway, args.models, args.monitoring
    gateway_pods = {"app.kubernetes.io/name": "gateway"}
    model_pods = {"app.kubernetes.io/component": "model-server"}
    vpc = {"ipBlock": {"cidr": args.vpc_cidr}}
    return [
        default_deny(gw),
        allow_dns(gw),
        network_policy("gateway-from-alb", gw, {
            "podSelector": {"matchLabels": gateway_pods}, "policyTypes": ["Ingress"],
            # The ALB registers pod IPs (target type ip) and connects from its ENIs inside the VPC.
            "ingress": [{"from": [vpc], "ports": tcp(GATEWAY_PORT)}],
        }),
        network_policy("gateway-from-prometheus", gw, {
            "podSelector": {"matchLabels": gateway_pods}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [from_namespace(mon)], "ports": tcp(GATEWAY_METRICS_PORT)}],
        }),
        network_policy("gateway-to-models", gw, {
            "podSelector": {"matchLabels": gateway_pods}, "policyTypes": ["Egress"],
            "egress": [{"to": [from_namespace(models, model_pods)], "ports": tcp(MODEL_PORT)}],
        }),
        network_policy("gateway-to-data", gw, {
            "podSelector": {"matchLabels": gateway_pods}, "policyTypes": ["Egress"],
            # Exactly where the data stores it may use live: in a multi-region stack the writers (and what a
            # failover promotes) sit in other regions' VPCs, reached over peering.
            "egress": [{"to": [{"ipBlock": {"cidr": c}} for c in (args.redis_cidrs or [args.vpc_cidr])], "ports": tcp(args.redis_port)},
                       {"to": [{"ipBlock": {"cidr": c}} for c in (args.postgres_cidrs or [args.vpc_cidr])], "ports": tcp(args.postgres_port)}],
        }),
        default_deny(models),
        allow_dns(models),
        network_policy("models-from-gateway", models, {
            "podSelector": {"matchLabels": model_pods}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [from_namespace(gw, gateway_pods)], "ports": tcp(MODEL_PORT)}],
        }),
        network_policy("models-from-prometheus", models, {
            "podSelector": {"matchLabels": model_pods}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [from_namespace(mon)], "ports": tcp(MODEL_PORT)}],
        }),
        network_policy("models-to-weights", models, {
            "podSelector": {"matchLabels": model_pods}, "policyTypes": ["Egress"],
            # S3 (gateway endpoint, public prefix list), STS for IRSA and the Hugging Face fallback: HTTPS only.
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": tcp(443)}],
        }),
        # monitoring: ingress closed except within the namespace, KEDA's queries and the operator's webhook;
        # egress stays open because Prometheus scrapes every namespace and the API server.
        default_deny(mon, egress=False),
        network_policy("monitoring-internal", mon, {
            "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}],
        }),
        network_policy("prometheus-from-keda", mon, {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [from_namespace(args.keda)], "ports": tcp(PROMETHEUS_PORT)}],
        }),
        network_policy("operator-webhook-from-apiserver", mon, {
            "podSelector": {"matchLabels": {"app": "kube-prometheus-stack-operator"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [vpc], "ports": tcp(10250)}],
        }),
        # Add-on namespaces: ingress closed except the API server's calls (webhooks, KEDA's external-metrics
        # APIService; the control plane's ENIs sit in the VPC), their own pods and Prometheus.
        *addon_policies(args.keda, mon, vpc, (6443, 9443)),
        *addon_policies(args.external_secrets, mon, vpc, (10250,)),
    ]


def addon_policies(ns: str, monitoring: str, vpc: dict[str, Any], api_ports: tuple[int, ...]) -> list[Manifest]:
    return [
        default_deny(ns, egress=False),
        network_policy("allow-internal-and-metrics", ns, {
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}, from_namespace(monitoring)]}],
        }),
        network_policy("allow-apiserver", ns, {
            "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [vpc], "ports": tcp(*api_ports)}],
        }),
    ]


class Namespaces(pulumi.ComponentResource):
    """Namespaces and network policies; `ready` is what namespaced objects depend on."""

    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NamespacesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:workloads:Namespaces", name, None, opts)
        self.args = args
        v = args.k8s_version
        namespaces = [
            namespace(args.gateway, "restricted", "restricted", v, READINESS_GATE_LABEL),
            namespace(args.models, "restricted", "restricted", v),
            namespace(args.monitoring, "privileged", "baseline", v),
            namespace(args.keda, "baseline", "restricted", v),
            namespace(args.external_secrets, "baseline", "restricted", v),
        ]
        created: list[pulumi.Resource] = [apply_manifest(f"{name}-ns-{ns['metadata']['name']}", ns, pulumi.ResourceOptions(parent=self)) for ns in namespaces]
        after_ns = pulumi.ResourceOptions(parent=self, depends_on=created)
        created += [
            apply_manifest(f"{name}-netpol-{p['metadata']['namespace']}-{p['metadata']['name']}", p, after_ns) for p in policies(args)
        ]
        self.ready = created
        self.register_outputs({"namespaces": [ns["metadata"]["name"] for ns in namespaces]})
