"""Kubernetes objects the platform applies: workloads, services, RBAC, network policies, PDBs, Helm releases
(POLICIES.md 38-45).

Workload rules read the pod template of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and
bare Pods. Helm releases are checked where their inputs say something (chart pinning, namespace, a values tree
asking for a LoadBalancer Service); the pods a chart renders are not visible before the chart is installed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from typing import Any

from policies.core import ADVISORY, MANDATORY, Res, Rule, Settings, Stack, as_list, dig, number, truthy

POD_TEMPLATE_WORKLOADS = (
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:apps/v1:ReplicaSet",
    "kubernetes:batch/v1:Job",
)
CRON_JOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"
WORKLOADS = (*POD_TEMPLATE_WORKLOADS, CRON_JOB, POD)
LONG_RUNNING = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet")
REPLICATED = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "kubernetes:autoscaling/v1:HorizontalPodAutoscaler")
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
RBAC = "kubernetes:rbac.authorization.k8s.io/v1"
ROLES = (f"{RBAC}:Role", f"{RBAC}:ClusterRole")
BINDINGS = (f"{RBAC}:RoleBinding", f"{RBAC}:ClusterRoleBinding")
GPU_RESOURCE = "nvidia.com/gpu"
DANGEROUS_VERBS = ("escalate", "bind", "impersonate")


# --- pod template access --------------------------------------------------------------------------------------

def pod_spec(r: Res) -> Any:
    if r.type == POD:
        return r.get("spec", default={})
    if r.type == CRON_JOB:
        return r.get("spec", "jobTemplate", "spec", "template", "spec", default={})
    return r.get("spec", "template", "spec", default={})


def pod_labels(r: Res) -> Mapping[str, Any]:
    if r.type == POD:
        return r.get("metadata", "labels", default={})
    if r.type == CRON_JOB:
        return r.get("spec", "jobTemplate", "spec", "template", "metadata", "labels", default={})
    return r.get("spec", "template", "metadata", "labels", default={})


def containers(spec: Any, include_init: bool = True) -> list[tuple[str, Any]]:
    kinds = ("initContainers", "containers") if include_init else ("containers",)
    return [(f"{kind}[{c.get('name', i)}]", c) for kind in kinds for i, c in enumerate(as_list(dig(spec, kind)))]


def namespace_of(r: Res) -> str:
    if r.type == HELM_RELEASE:
        return str(r.get("namespace", default="default"))
    return str(r.get("metadata", "namespace", default="default"))


def object_name(r: Res) -> str:
    return str(r.get("metadata", "name", default=r.name))


# --- 38 pod security ------------------------------------------------------------------------------------------

def host_namespaces(r: Res, s: Settings) -> Iterator[str]:
    spec = pod_spec(r)
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if truthy(dig(spec, flag)):
            yield f"pod spec sets {flag}"


def privilege(r: Res, s: Settings) -> Iterator[str]:
    for where, c in containers(pod_spec(r)):
        if truthy(dig(c, "securityContext", "privileged")):
            yield f"{where} is privileged"
        if dig(c, "securityContext", "allowPrivilegeEscalation") is not False:
            yield f"{where}: securityContext.allowPrivilegeEscalation is not false (the default is true)"


def capabilities(r: Res, s: Settings) -> Iterator[str]:
    for where, c in containers(pod_spec(r)):
        dropped = [str(x) for x in as_list(dig(c, "securityContext", "capabilities", "drop"))]
        if "ALL" not in dropped:
            yield f"{where}: securityContext.capabilities.drop does not include ALL"
        added = [str(x) for x in as_list(dig(c, "securityContext", "capabilities", "add"))]
        extra = [a for a in added if a not in s["allowed_capabilities"]]
        if extra:
            yield f"{where}: adds capabilities {extra}"


def non_root(r: Res, s: Settings) -> Iterator[str]:
    spec = pod_spec(r)
    pod_non_root = truthy(dig(spec, "securityContext", "runAsNonRoot"))
    pod_uid = dig(spec, "securityContext", "runAsUser")
    for where, c in containers(spec):
        uid = dig(c, "securityContext", "runAsUser", default=pod_uid)
        if uid is not None and number(uid, default=-1) == 0:
            yield f"{where} runs as uid 0"
        elif not (truthy(dig(c, "securityContext", "runAsNonRoot")) or pod_non_root):
            yield f"{where}: runAsNonRoot is not set (pod or container securityContext)"


def seccomp(r: Res, s: Settings) -> Iterator[str]:
    spec = pod_spec(r)
    pod_profile = dig(spec, "securityContext", "seccompProfile", "type")
    for where, c in containers(spec):
        profile = dig(c, "securityContext", "seccompProfile", "type", default=pod_profile)
        if str(profile) not in ("RuntimeDefault", "Localhost"):
            yield f"{where}: seccompProfile is {profile or 'unset (Unconfined)'}; use RuntimeDefault"


def read_only_root(r: Res, s: Settings) -> Iterator[str]:
    for where, c in containers(pod_spec(r)):
        if not truthy(dig(c, "securityContext", "readOnlyRootFilesystem")):
            yield f"{where}: readOnlyRootFilesystem is not true (mount an emptyDir where it must write)"


# --- 39 resources and probes ----------------------------------------------------------------------------------

def _is_gpu_pod(spec: Any) -> bool:
    if any(str(t.get("key")) == GPU_RESOURCE for t in as_list(dig(spec, "tolerations"))):
        return True
    selector = dig(spec, "nodeSelector", default={})
    return any("gpu" in str(k).lower() for k in selector)


def resources(r: Res, s: Settings) -> Iterator[str]:
    spec = pod_spec(r)
    gpu_limits = 0.0
    for where, c in containers(spec):
        requests = dig(c, "resources", "requests", default={})
        limits = dig(c, "resources", "limits", default={})
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        if "memory" not in limits:
            missing.append("limits.memory")
        if missing:
            yield f"{where} lacks resources {missing}"
        if GPU_RESOURCE in requests and GPU_RESOURCE not in limits:
            yield f"{where} requests {GPU_RESOURCE} without a limit (extended resources are set through limits)"
        gpu_limits += number(limits.get(GPU_RESOURCE)) if GPU_RESOURCE in limits else 0.0
    if _is_gpu_pod(spec) and gpu_limits <= 0:
        yield f"schedules on GPU nodes but no container sets limits.{GPU_RESOURCE}"


def probes(r: Res, s: Settings) -> Iterator[str]:
    if r.type not in LONG_RUNNING:
        return
    for where, c in containers(pod_spec(r), include_init=False):
        missing = [p for p in ("readinessProbe", "livenessProbe") if dig(c, p) is None]
        if missing:
            yield f"{where} has no {' / '.join(missing)}"


# --- 40 images and charts pinned ------------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_reference(image: str) -> tuple[str, str | None, bool]:
    """(registry/repository, tag, has_digest) with Docker Hub's implicit registry made explicit."""
    has_digest = bool(_DIGEST.search(image))
    name = image.split("@", 1)[0]
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
        name = name[: -(len(tag) + 1)]
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + (name if "/" in name else f"library/{name}")
    return name, tag, has_digest


def images_pinned(r: Res, s: Settings) -> Iterator[str]:
    for where, c in containers(pod_spec(r)):
        image = str(c.get("image", ""))
        if not image:
            yield f"{where} has no image"
            continue
        repository, tag, has_digest = image_reference(image)
        if not has_digest and (tag is None or tag == "latest"):
            yield f"{where}: image {image} is not pinned to a version tag or digest"
        if s["require_digest"] and not has_digest:
            yield f"{where}: image {image} is not pinned by digest (this tier requires digests)"
        if not any(fnmatch.fnmatchcase(repository, p) for p in s["approved_registries"]):
            yield f"{where}: image {repository} is not from an approved registry"


def chart_pinned(r: Res, s: Settings) -> Iterator[str]:
    version = str(r.get("version", default=""))
    if not re.fullmatch(r"v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?", version):
        yield f"chart version {version or '(none)'} is not an exact version"
    repo = str(r.get("repositoryOpts", "repo", default=""))
    chart = str(r.get("chart", default=""))
    source = repo or chart
    if source.startswith("http://"):
        yield f"chart source {source} is plain HTTP"
    if repo and not any(fnmatch.fnmatchcase(repo.rstrip("/"), p) for p in s["approved_chart_repositories"]):
        yield f"chart repository {repo} is not approved"


# --- 41 namespaces and service accounts -----------------------------------------------------------------------

def own_namespace(r: Res, s: Settings) -> Iterator[str]:
    namespace = namespace_of(r)
    if namespace in s["forbidden_namespaces"]:
        yield f"runs in namespace {namespace}; give it a namespace of its own"


def service_account(r: Res, s: Settings) -> Iterator[str]:
    spec = pod_spec(r)
    account = str(dig(spec, "serviceAccountName", default="default"))
    if account == "default":
        yield "uses the namespace's default ServiceAccount; give the workload its own"
    if dig(spec, "automountServiceAccountToken") is not False:
        yield "automountServiceAccountToken is not false (the pod gets a Kubernetes API token it does not need)"


# --- 42 default deny ------------------------------------------------------------------------------------------

def _is_default_deny(policy: Res) -> bool:
    selector = policy.get("spec", "podSelector", default={})
    selects_all = not selector.get("matchLabels") and not as_list(selector.get("matchExpressions"))
    types = [str(t) for t in as_list(policy.get("spec", "policyTypes"))]
    return selects_all and "Ingress" in types and not as_list(policy.get("spec", "ingress"))


def _declared_namespaces(stack: Stack) -> set[str]:
    return {object_name(n) for n in stack.of_type(NAMESPACE)}


def default_deny(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if subject.type == NAMESPACE:
        namespace = object_name(subject)
    else:
        namespace = namespace_of(subject)
        if namespace in _declared_namespaces(stack):
            return  # reported once, on the Namespace
    if namespace in s["system_namespaces"]:
        return
    policies = [p for p in stack.of_type(NETWORK_POLICY) if namespace_of(p) == namespace]
    if not any(_is_default_deny(p) for p in policies):
        yield f"namespace {namespace} has no default-deny ingress NetworkPolicy (podSelector {{}}, policyTypes [Ingress])"


# --- 43 no LoadBalancer services ------------------------------------------------------------------------------

def _values_ask_for_load_balancer(values: Any, path: str = "values") -> Iterator[str]:
    if isinstance(values, Mapping):
        for key in values:
            child = values[key]
            if str(key).lower().endswith("service") and isinstance(child, Mapping) and str(child.get("type")) == "LoadBalancer":
                yield f"{path}.{key}.type"
            yield from _values_ask_for_load_balancer(child, f"{path}.{key}")


def no_load_balancer_service(r: Res, s: Settings) -> Iterator[str]:
    if r.type == SERVICE:
        if str(r.get("spec", "type", default="ClusterIP")) == "LoadBalancer":
            yield "Service type LoadBalancer creates a second, unprotected entry point; route through the ALB"
        return
    for path in _values_ask_for_load_balancer(r.get("values", default={})):
        yield f"Helm values set {path}=LoadBalancer; route through the ALB"


# --- 44 replicas and disruption budgets -----------------------------------------------------------------------

def _min_replicas(subject: Res, stack: Stack) -> float:
    name, namespace = object_name(subject), namespace_of(subject)
    kind = subject.type.rsplit(":", 1)[-1]
    for hpa in stack.of_type(*HPA):
        ref = hpa.get("spec", "scaleTargetRef", default={})
        if namespace_of(hpa) == namespace and str(ref.get("name")) == name and str(ref.get("kind")) == kind:
            return number(hpa.get("spec", "minReplicas"), default=1.0)
    for scaled in stack.of_type(SCALED_OBJECT):
        ref = scaled.get("spec", "scaleTargetRef", default={})
        if namespace_of(scaled) == namespace and str(ref.get("name")) == name:
            return number(scaled.get("spec", "minReplicaCount"), default=0.0)
    return number(subject.get("spec", "replicas"), default=1.0)


def _allows_disruption(pdb: Res, replicas: float) -> bool:
    spec = pdb.get("spec", default={})
    if "maxUnavailable" in spec:
        value = str(spec["maxUnavailable"])
        return value.rstrip("%") not in ("0", "0.0", "")
    if "minAvailable" in spec:
        value = str(spec["minAvailable"])
        if value.endswith("%"):
            return number(value[:-1]) < 100
        return number(value) < replicas
    return False


def replicas_and_pdb(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    replicas = _min_replicas(subject, stack)
    if replicas < s["min_replicas"]:
        yield f"runs {replicas:g} replica(s) at minimum; this tier requires at least {s['min_replicas']}"
    if replicas < 2:
        return
    labels = pod_labels(subject)
    matching = [
        pdb for pdb in stack.of_type(PDB)
        if namespace_of(pdb) == namespace_of(subject)
        and (wanted := pdb.get("spec", "selector", "matchLabels", default={}))
        and all(str(labels.get(k)) == str(wanted[k]) for k in wanted)
    ]
    if not matching:
        yield "has no PodDisruptionBudget selecting its pods"
    elif not any(_allows_disruption(p, replicas) for p in matching):
        yield f"PodDisruptionBudget {matching[0].name} allows no disruption (node drains would block)"


# --- 45 RBAC --------------------------------------------------------------------------------------------------

def rbac_rules(r: Res, s: Settings) -> Iterator[str]:
    if r.type in BINDINGS:
        role = str(r.get("roleRef", "name", default=""))
        if role in s["forbidden_roles"]:
            yield f"binds {role}"
        return
    for i, rule in enumerate(as_list(r.get("rules"))):
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in [str(x) for x in as_list(rule.get(field))]:
                yield f"rules[{i}].{field} contains '*'"
        verbs = [str(x) for x in as_list(rule.get("verbs"))]
        bad = [v for v in DANGEROUS_VERBS if v in verbs]
        if bad:
            yield f"rules[{i}] grants {bad}"
        if r.type.endswith(":ClusterRole") and "secrets" in [str(x) for x in as_list(rule.get("resources"))]:
            reads = [v for v in ("get", "list", "watch") if v in verbs]
            if reads:
                yield f"rules[{i}] grants {reads} on secrets cluster-wide"


RULES = [
    Rule(
        id="k8s-pod-security",
        controls=("CIS EKS 4.2.1", "CIS EKS 4.2.2", "CIS EKS 4.2.3", "CIS EKS 4.2.4", "CIS EKS 4.2.5",
                  "CKV_K8S_16", "CKV_K8S_17", "CKV_K8S_18", "CKV_K8S_19", "CKV_K8S_20", "CKV_K8S_22",
                  "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_40"),
        summary="Pods run restricted: no privileged/host namespaces/escalation, drop ALL capabilities, non-root, "
                "RuntimeDefault seccomp, read-only root filesystem",
        remediation="Set pod securityContext {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}} and container "
                    "securityContext {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: "
                    "{drop: [ALL]}}. GPU add-ons that need more go in the stack's policy config exceptions with the reason.",
        enforcement=MANDATORY, types=WORKLOADS,
        checks=(host_namespaces, privilege, capabilities, non_root, seccomp, read_only_root), policies_md=(38,),
        config={"allowed_capabilities": {"type": "array", "items": {"type": "string"}, "default": ["NET_BIND_SERVICE"]}},
    ),
    Rule(
        id="k8s-resources",
        controls=("CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"),
        summary="Containers set CPU/memory requests and a memory limit; GPU pods set an nvidia.com/gpu limit",
        remediation="Set resources.requests.cpu/memory and resources.limits.memory (and limits['nvidia.com/gpu'] on "
                    "pods that tolerate the GPU taint).",
        enforcement=MANDATORY, types=WORKLOADS, checks=(resources,), policies_md=(39,),
    ),
    Rule(
        id="k8s-probes",
        controls=("CKV_K8S_8", "CKV_K8S_9"),
        summary="Long-running containers have readiness and liveness probes",
        remediation="Add readinessProbe and livenessProbe (gateway: /health/ready and /health/live on :8080).",
        enforcement=ADVISORY, types=LONG_RUNNING, checks=(probes,), policies_md=(39,),
    ),
    Rule(
        id="k8s-image-pinned",
        controls=("CIS EKS 5.1.4", "CKV_K8S_14", "CKV_K8S_43"),
        summary="Container images are pinned by version tag or digest and come from approved registries",
        remediation="Reference images as <approved registry>/<repo>:<version> or @sha256:<digest>; extend "
                    "approved_registries in the stack's policy config for a new registry.",
        enforcement=MANDATORY, types=WORKLOADS, checks=(images_pinned,), policies_md=(40,),
        config={
            "approved_registries": {"type": "array", "items": {"type": "string"}, "default": [
                "*.dkr.ecr.*.amazonaws.com/*", "public.ecr.aws/*", "docker.io/vllm/*", "nvcr.io/nvidia/*",
                "registry.k8s.io/*", "quay.io/prometheus/*", "quay.io/prometheus-operator/*", "docker.io/grafana/*",
            ]},
            "require_digest": {"type": "boolean", "default": False},
        },
    ),
    Rule(
        id="k8s-helm-pinned",
        controls=("CIS EKS 5.1.4",),
        summary="Helm releases pin an exact chart version from an approved HTTPS/OCI repository",
        remediation="Set version to an exact chart version and repositoryOpts.repo to an https:// repository listed in "
                    "approved_chart_repositories.",
        enforcement=MANDATORY, types=(HELM_RELEASE,), checks=(chart_pinned,), policies_md=(40,),
        config={"approved_chart_repositories": {"type": "array", "items": {"type": "string"}, "default": [
            "https://aws.github.io/eks-charts", "https://nvidia.github.io/*", "https://kubernetes.github.io/*",
            "https://prometheus-community.github.io/helm-charts", "https://grafana.github.io/helm-charts",
            "https://kedacore.github.io/charts", "https://kubernetes-sigs.github.io/*", "https://charts.external-secrets.io",
            "oci://*",
        ]}},
    ),
    Rule(
        id="k8s-own-namespace",
        controls=("CIS EKS 4.5.2", "CKV_K8S_21"),
        summary="Workloads and Helm releases run in a namespace of their own, never default",
        remediation="Set metadata.namespace (Helm: namespace) to the component's namespace.",
        enforcement=MANDATORY, types=(*WORKLOADS, HELM_RELEASE), checks=(own_namespace,), policies_md=(41,),
        config={"forbidden_namespaces": {"type": "array", "items": {"type": "string"}, "default": ["default", "kube-public"]}},
    ),
    Rule(
        id="k8s-service-account",
        controls=("CIS EKS 4.1.5", "CIS EKS 4.1.6", "CKV_K8S_38"),
        summary="Workloads use their own ServiceAccount and do not mount an API token unless they need one",
        remediation="Set serviceAccountName to a dedicated ServiceAccount and automountServiceAccountToken: false; "
                    "workloads that call the Kubernetes API go in the exceptions with the reason.",
        enforcement=MANDATORY, types=WORKLOADS, checks=(service_account,), policies_md=(41,),
    ),
    Rule(
        id="k8s-default-deny",
        controls=("CIS EKS 4.3.2", "CIS EKS 5.4.4", "CKV2_K8S_6"),
        summary="Every workload namespace has a default-deny ingress NetworkPolicy",
        remediation="Add a NetworkPolicy with podSelector {} and policyTypes [Ingress] (no ingress rules) to the namespace, "
                    "then allow the flows the component needs.",
        enforcement=MANDATORY, types=(NAMESPACE, *WORKLOADS), stack_checks=(default_deny,), policies_md=(42,),
        config={"system_namespaces": {"type": "array", "items": {"type": "string"},
                                      "default": ["kube-system", "kube-public", "kube-node-lease"]}},
    ),
    Rule(
        id="k8s-no-lb-service",
        controls=("Pulumi compliance-policies kubernetes-core-v1-service-disallow-load-balancer",),
        summary="No Service of type LoadBalancer (traffic enters only through the WAF-protected ALB)",
        remediation="Use a ClusterIP Service behind the ALB target group / Ingress.",
        enforcement=MANDATORY, types=(SERVICE, HELM_RELEASE), checks=(no_load_balancer_service,), policies_md=(43,),
    ),
    Rule(
        id="k8s-replicas-pdb",
        controls=("Pulumi compliance-policies kubernetes-apps-v1-deployment-configure-minimum-replicas",),
        summary="Deployments/StatefulSets run at least N replicas (policy config min_replicas) and, when replicated, "
                "have a PodDisruptionBudget that still allows a disruption",
        remediation="Raise replicas (or the HPA/KEDA minimum) and add a PodDisruptionBudget with maxUnavailable: 1 "
                    "selecting the pods.",
        enforcement=MANDATORY, types=REPLICATED, stack_checks=(replicas_and_pdb,), policies_md=(44,),
        config={"min_replicas": {"type": "integer", "minimum": 0, "default": 2}},
    ),
    Rule(
        id="k8s-rbac-least-privilege",
        controls=("CIS EKS 4.1.1", "CIS EKS 4.1.2", "CIS EKS 4.1.3", "CIS EKS 4.1.8",
                  "CKV_K8S_49", "CKV_K8S_155", "CKV_K8S_156", "CKV_K8S_157", "CKV_K8S_158"),
        summary="RBAC grants no wildcards, no escalate/bind/impersonate, no cluster-wide secret reads, no cluster-admin bindings",
        remediation="List explicit apiGroups/resources/verbs; bind narrower roles than cluster-admin.",
        enforcement=MANDATORY, types=(*ROLES, *BINDINGS), checks=(rbac_rules,), policies_md=(45,),
        config={"forbidden_roles": {"type": "array", "items": {"type": "string"}, "default": ["cluster-admin"]}},
    ),
]
