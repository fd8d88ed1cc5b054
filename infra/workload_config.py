"""Config sections `models` (the served model catalog) and `workloads` (images, charts, gateway sizing).

They are fields of `infra.config.PlatformConfig`; this module also holds the checks that tie them to the node
groups of the same stack (`check_models_fit_node_groups`), run by `PlatformConfig`'s after-validator so a model
that cannot be scheduled stops the program before any resource is declared.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from components.labels import DEVICE_PLUGIN_CONFIG_LABEL
from infra.configkit import Strict
from infra.fit import ModelArchitecture
from infra.pins import CHART_VERSIONS, VLLM_VERSION, vllm_cli

if TYPE_CHECKING:
    from infra.config import NodeGroupConfig, PlatformConfig

# Kubernetes quantities as the API accepts them for cpu / memory.
CPU_QUANTITY = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
MEMORY_QUANTITY = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
# Arguments the model-server component derives from the entry itself; repeating them in extra_args would
# silently fight the derived value.
# Checked against vLLM's CLI at the pinned release (infra/vllm_cli/): `-tp` is --tensor-parallel-size's short form,
# `--load-format` follows the weights source; `--task` no longer exists (replaced by --runner/--convert in 0.10.1).
DERIVED_VLLM_ARGS = (
    "--model", "--served-model-name", "--tensor-parallel-size", "-tp", "--max-model-len", "--gpu-memory-utilization",
    "--host", "--port", "--runner", "--convert", "--enable-prefix-caching", "--download-dir", "--load-format",
)

ChartName = Literal[
    "aws-load-balancer-controller", "nvidia-device-plugin", "dcgm-exporter", "cluster-autoscaler",
    "metrics-server", "keda", "kube-prometheus-stack", "external-secrets",
]


def vllm_flags() -> set[str]:
    flags = vllm_cli()["flags"]
    assert isinstance(flags, list)
    return set(flags)


class ReplicaRange(Strict):
    min: Annotated[int, Field(ge=0, description="replicas kept when idle; 0 lets the model scale to zero")]
    max: Annotated[int, Field(ge=1, le=100, description="upper bound for the autoscaler")]

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"got min={self.min}, max={self.max}; allowed: min <= max")
        return self


class ModelPrices(Strict):
    """USD per 1000 tokens, metered by the gateway."""

    prompt_per_1k: Annotated[float, Field(ge=0)] = 0.0
    completion_per_1k: Annotated[float, Field(ge=0)] = 0.0


# A held request must be answered before the ALB drops the idle connection (edge.idle_timeout_seconds, default
# 300): the default leaves 60 s, and check_wake_timeouts insists on WAKE_IDLE_MARGIN_SECONDS.
DEFAULT_WAKE_TIMEOUT_SECONDS = 240
WAKE_IDLE_MARGIN_SECONDS = 30


class ModelConfig(Strict):
    """One served model: a vLLM Deployment, its Service and autoscaler, and one entry of the gateway catalog."""

    name: Annotated[str, Field(pattern=r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$",
                               description="public model name; also the Kubernetes name of its Deployment and Service")]
    hf_model: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$",
                                          description="Hugging Face repo id, e.g. Qwen/Qwen2.5-7B-Instruct: downloaded from the "
                                                      "Hub at start, unless an S3 source is set (then it records where the staged weights came from)")] = None
    s3_prefix: Annotated[str | None, Field(pattern=r"^[\w.-]+(/[\w.-]+)*/?$",
                                           description="weights under this prefix of the platform's model bucket (streamed with a read-only role)")] = None
    s3_uri: Annotated[str | None, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[\w./-]+$",
                                        description="weights in another bucket (its read access is yours to grant)")] = None
    kind: Literal["chat", "completion", "embedding", "rerank"]
    gpu: Literal["a10g", "a100"]
    gpus_per_replica: Literal[1, 2, 4, 8] = Field(1, description="GPUs of one replica = vLLM tensor parallel size")
    gpu_share: Literal[1, 2, 4] = Field(
        1, description="1 = whole GPUs; N = one of N time-slices of a GPU on a node group labelled "
                       f"{DEVICE_PLUGIN_CONFIG_LABEL}=time-sliced-N (pair with gpu_memory_utilization <= 0.9/N)")
    gpu_memory_utilization: Annotated[float, Field(gt=0.05, le=0.95)] = 0.90
    replicas: ReplicaRange
    max_model_len: Annotated[int, Field(ge=128, le=1_048_576)]
    max_tokens_cap: Annotated[int | None, Field(ge=1)] = None
    extra_args: list[str] = Field(default_factory=list, description="more vLLM CLI arguments, e.g. [--dtype, bfloat16]")
    prices: ModelPrices = Field(default_factory=ModelPrices)
    fallbacks: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    queue_threshold: Annotated[int, Field(ge=1, le=10_000, description="waiting requests per replica before KEDA adds one")] = 5
    prefix_affinity: bool = False
    startup_seconds: Annotated[int, Field(ge=60, le=7200, description="time allowed to download and load the weights")] = 1200
    wake_timeout_seconds: Annotated[int | None, Field(ge=0, le=3600, description=(
        "how long the gateway holds a request while this model has no ready replica (waking from zero), then 503 "
        f"with retry-after; unset = {DEFAULT_WAKE_TIMEOUT_SECONDS} with replicas.min 0, else 0 (503 at once)"))] = None
    architecture: ModelArchitecture | None = Field(
        None, description="memory facts from the model's config.json for the fit check; known hf_models need none (infra/fit.py)")

    @field_validator("extra_args")
    @classmethod
    def _no_derived_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in DERIVED_VLLM_ARGS:
                raise ValueError(f"{flag!r} is derived from the model entry; allowed: any vLLM flag except {', '.join(DERIVED_VLLM_ARGS)}")
            if re.match(r"^--?[A-Za-z]", flag) and flag not in vllm_flags() and "--" + flag.removeprefix("--no-") not in vllm_flags():
                raise ValueError(f"{flag!r} is not a flag of vLLM {VLLM_VERSION} (the pinned model server); "
                                 "allowed: the flags of `vllm serve --help` at that release (infra/vllm_cli/)")
            if re.search(r"\s", arg) and not arg.startswith("{"):
                raise ValueError(f"{arg!r} contains whitespace; give each argument as its own list item")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.s3_uri is not None and self.s3_prefix is not None:
            raise ValueError(f"got s3_uri={self.s3_uri!r} and s3_prefix={self.s3_prefix!r}; allowed: one S3 source")
        if self.hf_model is None and self.s3_uri is None and self.s3_prefix is None:
            raise ValueError("got no weights source; allowed: s3_prefix (model bucket), s3_uri, or hf_model (Hugging Face Hub)")
        if self.gpu_share > 1 and self.gpus_per_replica != 1:
            raise ValueError(f"gpu_share: got {self.gpu_share} with gpus_per_replica={self.gpus_per_replica}; allowed: sharing only for 1-GPU replicas")
        if self.gpu_share > 1 and self.gpu_memory_utilization > 0.9 / self.gpu_share + 1e-9:
            raise ValueError(
                f"gpu_memory_utilization: got {self.gpu_memory_utilization} on a GPU shared {self.gpu_share} ways; "
                f"allowed: <= {0.9 / self.gpu_share:.2f} so the tenants of one GPU fit together"
            )
        if self.max_tokens_cap is not None and self.max_tokens_cap > self.max_model_len:
            raise ValueError(f"max_tokens_cap: got {self.max_tokens_cap}; allowed: <= max_model_len ({self.max_model_len})")
        return self

    @property
    def wake_timeout(self) -> int:
        if self.wake_timeout_seconds is not None:
            return self.wake_timeout_seconds
        return DEFAULT_WAKE_TIMEOUT_SECONDS if self.replicas.min == 0 else 0

    @property
    def from_s3(self) -> bool:
        return self.s3_uri is not None or self.s3_prefix is not None

    @property
    def tokens_cap(self) -> int:
        return self.max_tokens_cap or min(4096, self.max_model_len)


class ImageRef(Strict):
    repository: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$",
                                     description="registry/repository, e.g. <account>.dkr.ecr.<region>.amazonaws.com/llm-platform/gateway")]
    tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", description="pinned version tag")]

    @field_validator("tag")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if value in ("latest", "main", "master", "stable", "nightly"):
            raise ValueError(f"got {value!r}; allowed: a pinned version tag (a moving tag makes rollouts unreproducible)")
        return value

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class Resources(Strict):
    cpu: Annotated[str, Field(pattern=CPU_QUANTITY)]
    memory: Annotated[str, Field(pattern=MEMORY_QUANTITY)]


class GatewayWorkloadConfig(Strict):
    image: ImageRef
    replicas: ReplicaRange = Field(default_factory=lambda: ReplicaRange(min=2, max=10))
    requests: Resources = Field(default_factory=lambda: Resources(cpu="500m", memory="512Mi"))
    limits: Resources = Field(default_factory=lambda: Resources(cpu="2", memory="1Gi"))
    target_cpu_percent: Annotated[int, Field(ge=20, le=95)] = 70
    drain_seconds: Annotated[int, Field(ge=5, le=600, description="in-flight requests get this long after SIGTERM")] = 25

    @model_validator(mode="after")
    def _at_least_one(self) -> GatewayWorkloadConfig:
        if self.replicas.min < 1:
            raise ValueError(f"replicas.min: got {self.replicas.min}; allowed: >= 1 (the gateway is the front door)")
        return self


class ChartPin(Strict):
    repo: Annotated[str, Field(pattern=r"^(https|oci)://[\w./-]+$", description="https:// chart repository or oci:// registry path")]
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$", description="exact chart version, no ranges")]


# Chart versions this release is tested with (infra/pins.py CHART_VERSIONS, verified from each chart repository);
# a stack overrides one by listing it under workloads.charts. external-secrets comes from the project's OCI
# registry: the policy pack approves oci:// chart sources, not charts.external-secrets.io.
DEFAULT_CHARTS: dict[str, ChartPin] = {name: ChartPin(repo=repo, version=version) for name, (repo, version, _) in CHART_VERSIONS.items()}


# Secrets Manager (botocore model): a name is 1-512 of ASCII letters, digits and /_+=.@-; the ARN adds
# `-` and six random characters to it.
SECRET_NAME = r"[A-Za-z0-9/_+=.@-]{1,512}"
SECRET_ARN = r"arn:aws[a-z-]*:secretsmanager:[a-z]{2}(-[a-z]+)+-\d:\d{12}:secret:" + SECRET_NAME + r"-[A-Za-z0-9]{6}"
SECRET_REF_DESCRIPTION = ("Secrets Manager secret: its name (e.g. llm-platform/hf-token; the IAM grant then matches the "
                          "ARN AWS derives from it) or its full ARN (ending in -<6 characters>)")


def check_secret_ref(value: str) -> str:
    """A Secrets Manager secret name or full ARN; a partial ARN (no random suffix) would match no real secret."""
    if value.startswith("arn:"):
        if not re.fullmatch(SECRET_ARN, value):
            raise ValueError(f"got {value!r}; allowed: a full secret ARN arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>, or the secret's name")
    elif "://" in value:  # a webhook URL pasted in place of its secret's name: never echo it into logs
        raise ValueError("got a URL (a credential itself, not repeated here); allowed: the name or full ARN of the Secrets Manager secret holding it")
    elif not re.fullmatch(SECRET_NAME, value):
        raise ValueError(f"got {value!r}; allowed: 1-512 of letters, digits and /_+=.@- (a secret name), or a full secret ARN")
    return value


SecretRef = Annotated[str, AfterValidator(check_secret_ref), Field(description=SECRET_REF_DESCRIPTION)]


class AlertingConfig(Strict):
    """Where Alertmanager sends alerts. Critical alerts page (PagerDuty, else Slack, else SNS); warnings go to Slack
    (else SNS); secrets stay in Secrets Manager and reach Alertmanager as files through External Secrets."""

    pagerduty_routing_key_secret: SecretRef | None = None
    """Secret whose value is a PagerDuty Events API v2 routing (integration) key."""
    slack_webhook_secret: SecretRef | None = None
    """Secret whose value is a Slack incoming-webhook URL."""
    slack_channel: Annotated[str | None, Field(pattern=r"^[#@]?[a-z0-9][a-z0-9._-]{0,79}$")] = None
    sns_topic_arn: Annotated[str | None, Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}$",
                                               description="SNS topic (e-mail/SMS subscribers); Alertmanager publishes with its own IRSA role")] = None

    @model_validator(mode="after")
    def _someone_listens(self) -> AlertingConfig:
        if not (self.pagerduty_routing_key_secret or self.slack_webhook_secret or self.sns_topic_arn):
            raise ValueError("got no receiver; allowed: at least one of pagerduty_routing_key_secret, slack_webhook_secret, "
                             "sns_topic_arn (critical alerts must reach a person)")
        return self


class WorkloadsConfig(Strict):
    gateway: GatewayWorkloadConfig
    vllm_image: ImageRef
    charts: dict[ChartName, ChartPin] = Field(default_factory=dict, description="overrides of DEFAULT_CHARTS")
    hf_token_secret: SecretRef | None = Field(None, description="Secrets Manager secret (name or full ARN) with the Hugging Face token; unset = no token")
    alerting: AlertingConfig
    prometheus_retention_days: Annotated[int, Field(ge=1, le=365)] = 15
    runbook_base_url: Annotated[str, Field(pattern=r"^https://[\w.-]+(/[\w.%~-]+)*/?$",
                                           description="where docs/runbooks is browsable; alerts link <this>/<runbook>.md")] = (
        "https://github.com/llm-platform/llm-platform/blob/main/docs/runbooks")
    prometheus_storage_gib: Annotated[int, Field(ge=10, le=16384)] = 50

    def chart(self, name: ChartName) -> ChartPin:
        return self.charts.get(name) or DEFAULT_CHARTS[name]


def matching_node_groups(model: ModelConfig, node_groups: list[NodeGroupConfig]) -> list[NodeGroupConfig]:
    """Node groups a model's pods can be scheduled on: its GPU class, and the matching sharing mode."""
    wanted = f"time-sliced-{model.gpu_share}" if model.gpu_share > 1 else None
    return [g for g in node_groups if g.gpu == model.gpu and g.labels.get(DEVICE_PLUGIN_CONFIG_LABEL) == wanted]


def check_models_fit_node_groups(cfg: PlatformConfig) -> None:
    """Every model schedulable on this stack's node groups, and all of them at max replicas at once.

    Raises ValueError("<key>: got ...; allowed ...") naming the first offending key.
    """
    if cfg.models and cfg.workloads is None:
        raise ValueError("workloads: got nothing; allowed: a workloads section (gateway and vLLM images) when models are listed")
    names = [m.name for m in cfg.models]
    for i, model in enumerate(cfg.models):
        if names.index(model.name) != i:
            raise ValueError(f"models[{i}].name: got {model.name!r} twice; allowed: unique names")
    if cfg.models:
        check_catalog(list(cfg.models))
    demand: dict[str, int] = {}
    for i, model in enumerate(cfg.models):
        groups = matching_node_groups(model, list(cfg.node_groups))
        if not groups:
            have = sorted({f"{g.gpu}" + (f" ({g.labels[DEVICE_PLUGIN_CONFIG_LABEL]})" if DEVICE_PLUGIN_CONFIG_LABEL in g.labels else "")
                           for g in cfg.node_groups if g.gpu}) or ["none"]
            need = model.gpu + (f" labelled {DEVICE_PLUGIN_CONFIG_LABEL}=time-sliced-{model.gpu_share}" if model.gpu_share > 1 else "")
            raise ValueError(f"models[{i}].gpu: got {model.gpu!r} (gpu_share {model.gpu_share}); allowed: a GPU class this stack has "
                             f"as a node group ({need} needed; node_groups have: {', '.join(have)})")
        per_node = max(g.gpus_per_node for g in groups)
        if model.gpus_per_replica > per_node:
            raise ValueError(f"models[{i}].gpus_per_replica: got {model.gpus_per_replica}; allowed: <= {per_node} "
                             f"(GPUs of one node in {', '.join(g.name for g in groups)}; a replica cannot span nodes)")
        key = ",".join(sorted(g.name for g in groups))
        slots = sum(g.max_size * g.gpus_per_node * model.gpu_share for g in groups)
        demand[key] = demand.get(key, 0) + model.replicas.max * model.gpus_per_replica
        if demand[key] > slots:
            raise ValueError(
                f"models[{i}].replicas.max: got {model.replicas.max}; allowed: models on node group {key} need "
                f"{demand[key]} GPU slots at max replicas but max_size x GPUs per node gives {slots}; "
                "lower replicas.max or raise the group's max_size"
            )
    check_wake_timeouts(cfg)


def check_wake_timeouts(cfg: PlatformConfig) -> None:
    """A request held for a waking model must get its answer before the load balancer closes the idle connection."""
    allowed = cfg.edge.idle_timeout_seconds - WAKE_IDLE_MARGIN_SECONDS
    for i, model in enumerate(cfg.models):
        if model.wake_timeout > allowed:
            given = "" if model.wake_timeout_seconds is not None else " (the default with replicas.min 0)"
            raise ValueError(
                f"models[{i}].wake_timeout_seconds: got {model.wake_timeout}{given}; allowed: <= {allowed} "
                f"(edge.idle_timeout_seconds {cfg.edge.idle_timeout_seconds} minus {WAKE_IDLE_MARGIN_SECONDS} s, "
                "or the ALB drops the held request); lower it or raise edge.idle_timeout_seconds")


def gateway_importable() -> None:
    """Put images/gateway on sys.path: the catalog schema is the gateway's own module, not a copy."""
    import sys
    from pathlib import Path

    gateway_dir = str(Path(__file__).resolve().parent.parent / "images" / "gateway")
    if gateway_dir not in sys.path:
        sys.path.insert(0, gateway_dir)


def default_backend_url(name: str, namespace: str = "models") -> str:
    """Base URL of a model's Service (components/model_server.py `service_url` builds the same)."""
    return f"http://{name}.{namespace}.svc:8000"


def catalog_data(models: list[ModelConfig], namespace: str = "models") -> dict[str, object]:
    """The gateway's models.yaml content for this catalog (one backend: the model's Service)."""
    return {
        "models": [
            {
                "name": m.name,
                "aliases": list(m.aliases),
                "kind": m.kind,
                "backends": [default_backend_url(m.name, namespace)],
                "max_tokens_cap": m.tokens_cap,
                "max_context": m.max_model_len,
                "prices": {"prompt_per_1k": m.prices.prompt_per_1k, "completion_per_1k": m.prices.completion_per_1k},
                "fallbacks": list(m.fallbacks),
                "prefix_affinity": m.prefix_affinity,
                "wake_timeout_s": m.wake_timeout,
            }
            for m in models
        ]
    }


def check_catalog(models: list[ModelConfig]) -> None:
    """Validate the catalog with the gateway's own loader; ValueError naming the `models` key on failure."""
    gateway_importable()
    from llm_gateway.catalog import CatalogError, parse_catalog

    try:
        parse_catalog(catalog_data(models), source="models")
    except CatalogError as err:
        raise ValueError(f"{err}; allowed: unique names and aliases, fallbacks naming catalog models of the same kind, no cycles") from None
