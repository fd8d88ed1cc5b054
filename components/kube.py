"""Kubernetes objects as plain manifests, applied as Pulumi resources.

Every workload component builds its objects as ordinary Kubernetes manifests (camelCase dicts, exactly what
`kubectl apply` would take), then hands each one to `apply_manifest`. One shape serves three readers: the
Kubernetes provider, the offline `manifests` command, and the tests that validate each object against the
official schemas. Values that are only known at deploy time (ARNs, endpoints) may be `pulumi.Output`s anywhere
inside the dict; Pulumi resolves nested outputs in resource inputs.
"""

from __future__ import annotations

from typing import Any, Callable

import pulumi
import pulumi_kubernetes as k8s

# The GPU node label and taint come from the node-group component, the sharing label from components/labels.py.
from components.node_group import GPU_LABEL as GPU_CLASS_LABEL
from components.node_group import GPU_TAINT_KEY as GPU_TAINT_KEY
from components.labels import DEVICE_PLUGIN_CONFIG_LABEL as DEVICE_PLUGIN_CONFIG_LABEL

Manifest = dict[str, Any]

# Labels every object of the platform carries, so `kubectl get -l app.kubernetes.io/part-of=llm-platform` finds them.
PART_OF = {"app.kubernetes.io/part-of": "llm-platform", "app.kubernetes.io/managed-by": "pulumi"}

# Grafana's dashboard sidecar loads every ConfigMap carrying this label.
DASHBOARD_LABEL = "grafana_dashboard"

RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_security(uid: int) -> dict[str, Any]:
    """Pod-level security context for the Pod Security Standard `restricted` profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def metadata(name: str, namespace: str | None, labels: dict[str, str] | None = None,
             annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**PART_OF, **(labels or {})}}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = annotations
    return meta


def _typed(cls: Callable[..., pulumi.CustomResource], *fields: str) -> Callable[[str, Manifest, pulumi.ResourceOptions], pulumi.CustomResource]:
    def make(name: str, obj: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
        kwargs = {_snake(f): obj[f] for f in fields if f in obj}
        return cls(name, metadata=obj["metadata"], opts=opts, **kwargs)

    return make


def _snake(field: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in field)


# Built-in kinds go through the SDK's typed classes (so the provider's schema-aware diffing applies);
# CRD kinds (KEDA, Prometheus Operator, AWS LB controller, External Secrets) through CustomResource.
_BUILTIN: dict[tuple[str, str], Callable[[str, Manifest, pulumi.ResourceOptions], pulumi.CustomResource]] = {
    ("v1", "Namespace"): _typed(k8s.core.v1.Namespace, "spec"),
    ("v1", "ServiceAccount"): _typed(k8s.core.v1.ServiceAccount, "automountServiceAccountToken"),
    ("v1", "ConfigMap"): _typed(k8s.core.v1.ConfigMap, "data"),
    ("v1", "Secret"): _typed(k8s.core.v1.Secret, "type", "stringData"),
    ("v1", "Service"): _typed(k8s.core.v1.Service, "spec"),
    ("apps/v1", "Deployment"): _typed(k8s.apps.v1.Deployment, "spec"),
    ("policy/v1", "PodDisruptionBudget"): _typed(k8s.policy.v1.PodDisruptionBudget, "spec"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): _typed(k8s.autoscaling.v2.HorizontalPodAutoscaler, "spec"),
    ("networking.k8s.io/v1", "NetworkPolicy"): _typed(k8s.networking.v1.NetworkPolicy, "spec"),
    ("storage.k8s.io/v1", "StorageClass"): _typed(
        k8s.storage.v1.StorageClass, "provisioner", "parameters", "reclaimPolicy", "volumeBindingMode", "allowVolumeExpansion"
    ),
}


def apply_manifest(name: str, obj: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Declare one Kubernetes object. `name` is the Pulumi resource name (unique within the stack)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in _BUILTIN:
        return _BUILTIN[key](name, obj, opts)
    extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise ValueError(f"{obj['kind']} {name}: custom resources carry only metadata and spec, got {sorted(extra)}")
    return k8s.apiextensions.CustomResource(
        name, api_version=obj["apiVersion"], kind=obj["kind"], metadata=obj["metadata"], spec=obj.get("spec"), opts=opts
    )


def is_kubernetes_object(resource_type: str) -> bool:
    """True for rendered resource types that are plain Kubernetes objects (not Helm releases or providers)."""
    return resource_type.startswith("kubernetes:") and not resource_type.startswith("kubernetes:helm.sh/")


def manifest_from_inputs(inputs: dict[str, Any]) -> Manifest:
    """The Kubernetes object a rendered resource's inputs describe (the provider adds nothing we rely on)."""
    order = ["apiVersion", "kind", "metadata"]
    return {k: inputs[k] for k in [*order, *sorted(set(inputs) - set(order))] if k in inputs}
