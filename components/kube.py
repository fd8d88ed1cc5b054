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


# Pulumi's Kubernetes provider waits this long for a Deployment or StatefulSet to become ready unless told otherwise
# (pulumi-kubernetes provider/pkg/await/deployment.go DefaultDeploymentTimeoutMins = 10, statefulset.go the same);
# Kubernetes' own rollout deadline (`progressDeadlineSeconds`) defaults to the same 600 s.
PROVIDER_AWAIT_SECONDS = 600
# Annotation that tells the provider not to wait for readiness at all (provider/pkg/metadata/annotations.go).
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"
# What a new replica may wait before its first container starts when it needs a new node: the cluster-autoscaler's
# scan, the EC2 launch and boot, kubelet registration and, on GPU nodes, the NVIDIA device plugin advertising GPUs.
NODE_SCALE_UP_SECONDS = 600
# Init containers that wait for something publish their bound here, so a startup budget can be read off the pod spec.
WAIT_BOUND_ENV = "WAIT_BOUND_SECONDS"


def startup_budget_seconds(pod: dict[str, Any], image_pull_seconds: int) -> int:
    """Longest a new replica of this pod spec may take to become Ready, from the Deployment's creation.

    A new node, the image pull, every init container's published wait bound, then the startup probe's window
    (initial delay + period x failure threshold) and one readiness period.
    """
    waits = sum(int(e["value"]) for c in pod.get("initContainers", []) for e in c.get("env", []) if e["name"] == WAIT_BOUND_ENV)
    longest = 0
    for c in pod["containers"]:
        probe = c.get("startupProbe") or {}
        ready = c.get("readinessProbe") or {}
        window = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        longest = max(longest, window + ready.get("periodSeconds", 10))
    return NODE_SCALE_UP_SECONDS + image_pull_seconds + waits + longest


def checkov_skips(reasons: dict[str, str]) -> dict[str, str]:
    """Annotations that waive checkov checks on one object, each with the reason (`checkov.io/skip<N>: <id>=<why>`)."""
    return {f"checkov.io/skip{i}": f"{check}={why}" for i, (check, why) in enumerate(sorted(reasons.items()), start=1)}


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
    ("rbac.authorization.k8s.io/v1", "Role"): _typed(k8s.rbac.v1.Role, "rules"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _typed(k8s.rbac.v1.RoleBinding, "roleRef", "subjects"),
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
