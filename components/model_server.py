"""`ModelServers`: one vLLM Deployment per catalog entry, each with Service, PDB, ServiceMonitor and KEDA ScaledObject.

Per model:
- vLLM args derived from the entry: served name, tensor parallel = GPUs per replica, max model length, GPU memory
  utilisation, prefix caching for generative models, `--runner pooling --convert embed|classify` for embedding
  and rerank models.
- `nvidia.com/gpu` requests = limits; pods select their GPU class (`llm-platform/gpu=<class>`), tolerate the GPU
  taint, and pick whole-GPU or time-sliced nodes by the device plugin's node config label, so a model lands only
  on the nodes it was sized for.
- Weights stream from the S3 model bucket (`--load-format runai_streamer`, credentials from a read-only IRSA
  role) or, as a configured fallback, download from the Hugging Face Hub with a token synced from Secrets Manager.
- `/dev/shm` is memory-backed (NCCL between tensor-parallel workers needs more than the container default).
- A startup probe allows `startup_seconds` for download and load; readiness and liveness use `/health`.
- KEDA scales on `vllm:num_requests_waiting` (queue depth per replica); a model with min 0 also wakes on gateway
  demand for it (`gateway_model_demand_total`, counted under the model asked for when a request arrives, even if a
  fallback serves it), since a model at zero replicas has no vLLM queue to measure.

GPU sharing (`gpu_share: N`): the node group is labelled `nvidia.com/device-plugin.config=time-sliced-N`, so the
device plugin advertises each physical GPU N times. Each sharing model requests one slice and caps its own memory
with `--gpu-memory-utilization` (at most 0.9/N), which is what keeps the tenants of one GPU from starving each
other: time-slicing shares compute, not memory, and enforces no memory isolation. Tenants of one node also start
one after the other (an init container waits until the older ones are Ready): vLLM sizes its KV cache from
whole-device free memory while it profiles, so two starting together count each other's allocation
(vllm-project/vllm#55827) and one fails or gets a shrunken cache.

Pulumi and the rollout deadline: a replica may need a new GPU node, a ~10 GB image pull, the co-tenant wait and
`startup_seconds` of model load, far beyond the provider's 10-minute await. Models with a minimum of one or more
replicas get `customTimeouts` and `progressDeadlineSeconds` equal to that budget, so `pulumi up` reports a model that
never becomes Ready; models that idle at zero skip the await (`pulumi.com/skipAwait`): their readiness is not a
deploy condition (KEDA starts them on demand), and waiting would make every `up` launch a GPU node for nothing.

`enableServiceLinks: false`: vLLM reads `VLLM_*` environment variables, and Kubernetes would otherwise inject
`<SERVICE>_PORT=tcp://...` for every Service in the namespace (a model named `vllm` yields `VLLM_PORT`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import hashlib
from pathlib import Path

import pulumi

from components.irsa import ServiceAccountIdentity, service_account_role
from components.kube import (
    DEVICE_PLUGIN_CONFIG_LABEL,
    GPU_CLASS_LABEL,
    GPU_TAINT_KEY,
    PROVIDER_AWAIT_SECONDS,
    RESTRICTED_CONTAINER_SECURITY,
    SKIP_AWAIT_ANNOTATION,
    WAIT_BOUND_ENV,
    Manifest,
    apply_manifest,
    checkov_skips,
    metadata,
    pod_security,
    startup_budget_seconds,
)
from components.namespaces import MODEL_PORT
from components.secrets_sync import SecretSource, external_secret, namespace_secret_reader

SERVICE_ACCOUNT = "model-server"
HF_SECRET = "hf-token"
VLLM_UID = 10002
# The vLLM image is ~10 GB; from ECR in the same region a cold pull and unpack stays well inside this.
IMAGE_PULL_SECONDS = 600
# Pods of GPU-sharing models carry this label; the co-tenant wait lists them per node.
GPU_TENANT_LABEL = "llm-platform/gpu-tenant"
TENANT_WAIT_SCRIPT = Path(__file__).resolve().parent / "scripts" / "wait_for_gpu_tenants.py"
TENANT_WAIT_CONFIGMAP = "gpu-tenant-wait"
TENANT_READER_ROLE = "gpu-tenant-reader"
CHECKOV_REASONS = {
    # vLLM's API server, tokenizer and scheduler threads stall under CFS throttling; the GPU bounds the pod, and the
    # CPU request (its share of the node) is what the scheduler reserves.
    "CKV_K8S_11": "no CPU limit on purpose: throttling stalls vLLM's scheduler and tokenizer; the CPU request reserves the node share",
}
DIGEST_REASON = "pinned by version tag in an ECR repository with immutable tags; the digest is recorded beside the tag"
# Demand trigger for models that idle at zero: any request for the model in the last 2 minutes wakes one replica.
# The huge target means this trigger alone never asks for a second replica; queue depth does that.
DEMAND_TARGET = "1000000"
# How often KEDA asks Prometheus whether a model at zero should wake (KEDA's activation loop; 1..N is the HPA's).
# A request is seen by the next scrape of the gateway (components/gateway_workload.py METRICS_SCRAPE_SECONDS) and
# then by the next poll: at most both intervals, 5 + 5 s, before KEDA sets the Deployment to 1 replica.
WAKE_POLLING_SECONDS = 5


@dataclass
class ModelServerSpec:
    name: str
    """Public model name = vLLM served name = Deployment/Service name."""
    kind: str
    """chat | completion | embedding | rerank."""
    weights: pulumi.Input[str]
    """`s3://bucket/prefix/` (streamed from S3) or a Hugging Face repo id."""
    gpu_class: str
    gpus_per_replica: int
    gpu_share: int
    gpu_memory_utilization: float
    max_model_len: int
    replicas_min: int
    replicas_max: int
    queue_threshold: int
    startup_seconds: int
    cpu: str
    """CPU request per replica."""
    memory: str
    """Memory request and limit per replica (includes /dev/shm)."""
    shm_size: str
    extra_args: list[str] = field(default_factory=list)
    from_s3: bool = False
    """True when `weights` is an S3 URI (known only at deploy time when it names the platform's bucket)."""


@dataclass
class ModelServersArgs:
    namespace: str
    image: str
    """Pinned model-server image (images/vllm), e.g. `<ecr>/llm-platform/vllm:v0.34.0-1`."""
    models: Sequence[ModelServerSpec]
    region: str
    identity: ServiceAccountIdentity
    prometheus_url: str
    """Prometheus KEDA queries, e.g. `http://kube-prometheus-stack-prometheus.monitoring.svc:9090`."""
    model_bucket_read_policy: pulumi.Input[str] | None = None
    """IAM policy JSON granting read-only access to the model bucket; None = no S3 role (Hugging Face only)."""
    hf_token: SecretSource | None = None
    """Secrets Manager secret with the Hugging Face token; None = anonymous Hub downloads."""
    secret_kms_key_arns: Sequence[pulumi.Input[str]] = ()
    depends_on: Sequence[pulumi.Resource] = ()
    tags: dict[str, str] = field(default_factory=dict)


def vllm_args(spec: ModelServerSpec) -> list[pulumi.Input[str]]:
    args: list[pulumi.Input[str]] = [
        "--model", spec.weights,
        "--served-model-name", spec.name,
        "--host", "0.0.0.0",
        "--port", str(MODEL_PORT),
        "--tensor-parallel-size", str(spec.gpus_per_replica),
        "--max-model-len", str(spec.max_model_len),
        "--gpu-memory-utilization", f"{spec.gpu_memory_utilization:.2f}",
    ]
    if spec.from_s3:
        args += ["--load-format", "runai_streamer"]
    else:
        args += ["--download-dir", "/models"]
    if spec.kind in ("chat", "completion"):
        args += ["--enable-prefix-caching"]
    elif spec.kind == "embedding":
        args += ["--runner", "pooling", "--convert", "embed"]
    elif spec.kind == "rerank":
        args += ["--runner", "pooling", "--convert", "classify"]
    return [*args, *spec.extra_args]


def labels_of(spec: ModelServerSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "model-server", "llm-platform/model": spec.name}


def pod_labels(spec: ModelServerSpec) -> dict[str, str]:
    return {**labels_of(spec), **({GPU_TENANT_LABEL: "true"} if spec.gpu_share > 1 else {})}


def image_checkov_skips(image: str) -> dict[str, str]:
    return {} if "@sha256:" in image else {"CKV_K8S_43": DIGEST_REASON}


def tenant_wait(spec: ModelServerSpec, image: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init container that orders GPU co-tenants' starts, and the volumes it needs (script, API token)."""
    def field(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    container = {
        "name": "wait-for-gpu-tenants",
        "image": image,
        "imagePullPolicy": "Always",
        "command": ["python3", f"/opt/llm-platform/{TENANT_WAIT_SCRIPT.name}"],
        "env": [
            {"name": "POD_NAME", **field("metadata.name")},
            {"name": "POD_NAMESPACE", **field("metadata.namespace")},
            {"name": "NODE_NAME", **field("spec.nodeName")},
            {"name": "TENANT_SELECTOR", "value": f"{GPU_TENANT_LABEL}=true"},
            # An older tenant gets its own full load time; after that this one starts regardless.
            {"name": WAIT_BOUND_ENV, "value": str(spec.startup_seconds)},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "tenant-wait", "mountPath": "/opt/llm-platform", "readOnly": True},
            {"name": "api-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "tenant-wait", "configMap": {"name": TENANT_WAIT_CONFIGMAP, "defaultMode": 0o444}},
        # Only this container gets an API token (the pod mounts none): short-lived, for listing pods on its node.
        {"name": "api-token", "projected": {"defaultMode": 0o444, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]}},
    ]
    return container, volumes


def tenant_wait_manifests(namespace: str) -> list[Manifest]:
    labels = {"app.kubernetes.io/component": "model-server"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(TENANT_WAIT_CONFIGMAP, namespace, labels),
         "data": {TENANT_WAIT_SCRIPT.name: TENANT_WAIT_SCRIPT.read_text()}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata(TENANT_READER_ROLE, namespace, labels),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata(TENANT_READER_ROLE, namespace, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TENANT_READER_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]},
    ]


def startup_budget(deployment_manifest: Manifest) -> int:
    return startup_budget_seconds(deployment_manifest["spec"]["template"]["spec"], IMAGE_PULL_SECONDS)


def awaits_readiness(spec: ModelServerSpec) -> bool:
    """Whether `pulumi up` waits for the model to be Ready: only models that keep replicas when idle."""
    return spec.replicas_min >= 1


def scheduling(spec: ModelServerSpec) -> dict[str, Any]:
    """Only the node groups sized for this model: its GPU class, and whole vs. time-sliced GPUs."""
    selector = {GPU_CLASS_LABEL: spec.gpu_class}
    out: dict[str, Any] = {"tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}
    if spec.gpu_share > 1:
        selector[DEVICE_PLUGIN_CONFIG_LABEL] = f"time-sliced-{spec.gpu_share}"
    else:
        out["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": DEVICE_PLUGIN_CONFIG_LABEL, "operator": "DoesNotExist"}]}]}}}
    out["nodeSelector"] = selector
    return out


def deployment(spec: ModelServerSpec, namespace: str, image: str, region: str, has_hf_token: bool) -> Manifest:
    labels = labels_of(spec)
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": "/models/hf"},
        {"name": "XDG_CACHE_HOME", "value": "/cache"},
        {"name": "VLLM_CACHE_ROOT", "value": "/cache/vllm"},
        {"name": "TRITON_CACHE_DIR", "value": "/cache/triton"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        {"name": "AWS_REGION", "value": region},
    ]
    if has_hf_token:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": "token", "optional": True}}})
    gpus = str(spec.gpus_per_replica)
    probe_port = {"path": "/health", "port": "http"}
    container = {
        "name": "vllm",
        "image": image,
        "imagePullPolicy": "Always",
        "args": vllm_args(spec),
        "ports": [{"name": "http", "containerPort": MODEL_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": spec.cpu, "memory": spec.memory, "nvidia.com/gpu": gpus},
            "limits": {"memory": spec.memory, "nvidia.com/gpu": gpus},
        },
        "startupProbe": {"httpGet": probe_port, "periodSeconds": 10, "timeoutSeconds": 5,
                         "failureThreshold": max(1, -(-spec.startup_seconds // 10))},
        "readinessProbe": {"httpGet": probe_port, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": probe_port, "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4},
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "models", "mountPath": "/models"},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "models", "emptyDir": {"sizeLimit": "150Gi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
    ]
    pod: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(VLLM_UID),
        "terminationGracePeriodSeconds": 60,
        **scheduling(spec),
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": labels}},
        ],
        "containers": [container],
        "volumes": volumes,
    }
    template_meta: dict[str, Any] = {"labels": pod_labels(spec)}
    if spec.gpu_share > 1:
        init, init_volumes = tenant_wait(spec, image)
        pod["initContainers"] = [init]
        volumes += init_volumes
        template_meta["annotations"] = {"llm-platform/tenant-wait-checksum": hashlib.sha256(TENANT_WAIT_SCRIPT.read_bytes()).hexdigest()[:16]}
    budget = startup_budget_seconds(pod, IMAGE_PULL_SECONDS)
    annotations = checkov_skips({**CHECKOV_REASONS, **image_checkov_skips(image)})
    if not awaits_readiness(spec):
        annotations[SKIP_AWAIT_ANNOTATION] = "true"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(spec.name, namespace, labels, annotations),
        "spec": {
            # No `replicas`: KEDA owns the count (and takes it to zero where min is 0).
            "selector": {"matchLabels": labels},
            # Surge would need a spare GPU; replace one replica at a time instead.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            # Kubernetes' rollout deadline (default 600 s) would mark a replica still loading its weights as failed.
            "progressDeadlineSeconds": max(PROVIDER_AWAIT_SECONDS, budget),
            "template": {"metadata": template_meta, "spec": pod},
        },
    }


def scaled_object(spec: ModelServerSpec, namespace: str, prometheus_url: str) -> Manifest:
    triggers: list[dict[str, Any]] = [{
        "type": "prometheus",
        "name": "queue-depth",
        "metadata": {
            "serverAddress": prometheus_url,
            "query": f'sum(vllm:num_requests_waiting{{namespace="{namespace}",model_name="{spec.name}"}})',
            "threshold": str(spec.queue_threshold),
            "ignoreNullValues": "true",
        },
    }]
    if spec.replicas_min == 0:
        triggers.append({
            "type": "prometheus",
            "name": "gateway-demand",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": f'sum(rate(gateway_model_demand_total{{model="{spec.name}"}}[2m]))',
                "threshold": DEMAND_TARGET,
                "activationThreshold": "0",
                "ignoreNullValues": "true",
            },
        })
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": metadata(spec.name, namespace, labels_of(spec)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicaCount": spec.replicas_min,
            "maxReplicaCount": spec.replicas_max,
            "pollingInterval": WAKE_POLLING_SECONDS if spec.replicas_min == 0 else 15,
            "cooldownPeriod": 900,
            # If Prometheus cannot answer, hold at least one replica rather than scaling blind.
            "fallback": {"failureThreshold": 4, "replicas": max(1, spec.replicas_min)},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                # A new replica costs a GPU node and minutes of model load: give back capacity slowly.
                "scaleDown": {"stabilizationWindowSeconds": 600, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
            }}},
            "triggers": triggers,
        },
    }


def deploy_timeouts(deployment_manifest: Manifest) -> pulumi.CustomTimeouts | None:
    """How long `pulumi up` waits for this Deployment: its startup budget when it awaits readiness at all."""
    if deployment_manifest["metadata"].get("annotations", {}).get(SKIP_AWAIT_ANNOTATION) == "true":
        return None
    budget = f"{max(PROVIDER_AWAIT_SECONDS, startup_budget(deployment_manifest))}s"
    return pulumi.CustomTimeouts(create=budget, update=budget)


def model_manifests(spec: ModelServerSpec, args: ModelServersArgs) -> list[Manifest]:
    ns, labels = args.namespace, labels_of(spec)
    return [
        deployment(spec, ns, args.image, args.region, args.hf_token is not None),
        {
            "apiVersion": "v1", "kind": "Service", "metadata": metadata(spec.name, ns, labels),
            "spec": {"type": "ClusterIP", "selector": labels,
                     "ports": [{"name": "http", "port": MODEL_PORT, "targetPort": "http", "protocol": "TCP"}]},
        },
        {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(spec.name, ns, labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
        {
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": metadata(spec.name, ns, labels),
            "spec": {"selector": {"matchLabels": labels}, "namespaceSelector": {"matchNames": [ns]},
                     "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]},
        },
        scaled_object(spec, ns, args.prometheus_url),
    ]


def service_url(name: str, namespace: str) -> str:
    """The backend base URL the gateway catalog lists for a model."""
    return f"http://{name}.{namespace}.svc:{MODEL_PORT}"


class ModelServers(pulumi.ComponentResource):
    def __init__(self, name: str, args: ModelServersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:workloads:ModelServers", name, None, opts)
        ns = args.namespace
        after = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        annotations: dict[str, Any] = {}
        if args.model_bucket_read_policy is not None:
            role = service_account_role(f"{name}-weights", args.identity, ns, SERVICE_ACCOUNT,
                                        args.model_bucket_read_policy, self, args.tags)
            annotations["eks.amazonaws.com/role-arn"] = role.arn
        apply_manifest(f"{name}-serviceaccount", {
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": metadata(SERVICE_ACCOUNT, ns, {"app.kubernetes.io/component": "model-server"}, annotations or None),
            "automountServiceAccountToken": False,
        }, after)
        waits: list[pulumi.Resource] = list(args.depends_on)
        if args.hf_token is not None:
            reader = namespace_secret_reader(name, ns, args.region, args.identity, [args.hf_token.arn],
                                             args.secret_kms_key_arns, self, args.depends_on, args.tags)
            waits.append(apply_manifest(f"{name}-externalsecret-hf", external_secret(HF_SECRET, ns, {"token": args.hf_token}),
                                        pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *reader])))
        if any(spec.gpu_share > 1 for spec in args.models):
            for obj in tenant_wait_manifests(ns):
                waits.append(apply_manifest(f"{name}-tenant-wait-{obj['kind'].lower()}", obj, after))
        for spec in args.models:
            for obj in model_manifests(spec, args):
                timeouts = deploy_timeouts(obj) if obj["kind"] == "Deployment" else None
                apply_manifest(f"{name}-{spec.name}-{obj['kind'].lower()}", obj,
                               pulumi.ResourceOptions(parent=self, depends_on=waits, custom_timeouts=timeouts))
        self.backends = {spec.name: service_url(spec.name, ns) for spec in args.models}
        self.register_outputs({"backends": self.backends})
