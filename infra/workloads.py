"""Cluster workloads of one region: config (`models`, `workloads`) mapped to component args.

Called from `infra.program.build_region` once the cluster and node groups exist. Order on the cluster:
namespaces → add-ons (CRDs, controllers) → model servers, gateway, alert rules and dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import pulumi
import pulumi_aws as aws
import yaml

from components.cluster_addons import ClusterAddons, ClusterAddonsArgs, HelmChart
from components.gateway_workload import DatabaseSource, GatewayWorkload, GatewayWorkloadArgs
from components.irsa import ServiceAccountIdentity
from components.model_server import ModelServers, ModelServersArgs, ModelServerSpec, service_url
from components.namespaces import Namespaces, NamespacesArgs
from components.observability import AlertReceivers, Observability, ObservabilityArgs
from components.secrets_sync import SecretSource, secret_reference
from infra.config import ConfigError
from infra.instances import INSTANCE_SPECS
from infra.workload_config import DEFAULT_CHARTS, AlertingConfig, ModelConfig, catalog_data, check_catalog, default_backend_url, matching_node_groups

if TYPE_CHECKING:
    from infra.config import PlatformConfig
    from infra.program import RegionalPlatform

GATEWAY_NS = "gateway"
MODELS_NS = "models"
MONITORING_NS = "monitoring"
# The gateway's own least-privilege database role (IAM authentication; the gateway creates it at start as master).
GATEWAY_DB_ROLE = "llm_gateway"


@dataclass
class WorkloadInputs:
    """What other building blocks (data, edge) hand to the workloads; None = that block is not deployed."""

    target_group_arn: pulumi.Input[str] | None = None
    redis_url: pulumi.Input[str] | None = None
    redis_cluster: bool = False
    redis_auth: SecretSource | None = None
    database: DatabaseSource | None = None
    admin_token: SecretSource | None = None
    admin_token_kms_key_arn: pulumi.Input[str] | None = None
    model_bucket_read_policy: pulumi.Input[str] | None = None
    model_bucket_name: pulumi.Input[str] | None = None
    secret_kms_key_arns: list[pulumi.Input[str]] = field(default_factory=list)
    redis_cidrs: list[str] = field(default_factory=list)
    """VPC CIDRs the gateway may reach Redis in (multi-region: writer and promotable members); empty = own VPC."""
    postgres_cidrs: list[str] = field(default_factory=list)
    """VPC CIDRs the gateway may reach the ledger in; empty = own VPC."""
    image_rewrite: Callable[[str], str] | None = None
    """Multi-region: maps an image reference to this region's ECR replica of it (None = as configured)."""
    keep_alive_seconds: int | None = None
    max_body_bytes: int | None = None


@dataclass
class Workloads:
    namespaces: Namespaces
    addons: ClusterAddons
    models: ModelServers | None
    gateway: GatewayWorkload | None
    observability: Observability


def models_yaml(models: Sequence[ModelConfig], namespace: str = MODELS_NS) -> str:
    """The gateway's models.yaml, checked by the gateway's own loader before it is written."""
    check_catalog(list(models))
    data = catalog_data(list(models), namespace)
    for model in models:
        if default_backend_url(model.name, namespace) != service_url(model.name, namespace):
            raise AssertionError("catalog backend URLs and model Service URLs disagree")  # one URL scheme for both
    return yaml.safe_dump(data, sort_keys=False)


def replica_size(model: ModelConfig, cfg: PlatformConfig) -> tuple[str, str, str]:
    """CPU request, memory request/limit and /dev/shm for one replica: its share of the smallest node it may land on."""
    groups = matching_node_groups(model, list(cfg.node_groups))
    specs = [INSTANCE_SPECS[t] for g in groups for t in g.instance_types]
    node = min(specs, key=lambda s: (s.memory_gib, s.vcpus))
    share = model.gpus_per_replica / (node.gpus * model.gpu_share)
    # Leave one vCPU and a quarter of memory to the kubelet, system reserve and the GPU/monitoring DaemonSets.
    cpu_milli = max(500, int((node.vcpus - 1) * share * 1000) // 100 * 100)
    memory_gib = max(2, int(node.memory_gib * 0.75 * share))
    shm_gib = max(1, min(16, memory_gib // 8))
    return f"{cpu_milli}m", f"{memory_gib}Gi", f"{shm_gib}Gi"


def weights_of(i: int, m: ModelConfig, model_bucket_name: pulumi.Input[str] | None) -> pulumi.Input[str]:
    if m.s3_uri is not None:
        return m.s3_uri
    if m.s3_prefix is not None:
        if model_bucket_name is None:
            raise ConfigError(f"stacks/Pulumi.{pulumi.get_stack()}.yaml: llm-platform:models[{i}].s3_prefix: got {m.s3_prefix!r}; "
                              "allowed: only in a stack that creates the model bucket (model_store); use s3_uri or hf_model")
        return pulumi.Output.concat("s3://", model_bucket_name, "/", m.s3_prefix.rstrip("/"), "/")
    return str(m.hf_model)


def model_specs(cfg: PlatformConfig, model_bucket_name: pulumi.Input[str] | None = None) -> list[ModelServerSpec]:
    specs = []
    for i, m in enumerate(cfg.models):
        cpu, memory, shm = replica_size(m, cfg)
        specs.append(ModelServerSpec(
            name=m.name, kind=m.kind, weights=weights_of(i, m, model_bucket_name), from_s3=m.from_s3, gpu_class=m.gpu,
            gpus_per_replica=m.gpus_per_replica, gpu_share=m.gpu_share, gpu_memory_utilization=m.gpu_memory_utilization,
            max_model_len=m.max_model_len, replicas_min=m.replicas.min, replicas_max=m.replicas.max,
            queue_threshold=m.queue_threshold, startup_seconds=m.startup_seconds, cpu=cpu, memory=memory,
            shm_size=shm, extra_args=list(m.extra_args),
        ))
    return specs


def secret_of(name_or_arn: str, platform: RegionalPlatform, property: str | None = None) -> SecretSource:
    """A configured secret (name or full ARN) in this region's account, ready for IAM and External Secrets."""
    invoke = pulumi.InvokeOptions(provider=platform.provider)
    return secret_reference(name_or_arn, aws.get_partition_output(opts=invoke).partition, platform.region,
                            aws.get_caller_identity_output(opts=invoke).account_id, property)


def alert_receivers(alerting: AlertingConfig, platform: RegionalPlatform) -> AlertReceivers:
    return AlertReceivers(
        pagerduty_routing_key=secret_of(alerting.pagerduty_routing_key_secret, platform) if alerting.pagerduty_routing_key_secret else None,
        slack_webhook_url=secret_of(alerting.slack_webhook_secret, platform) if alerting.slack_webhook_secret else None,
        slack_channel=alerting.slack_channel, sns_topic_arn=alerting.sns_topic_arn,
    )


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def inputs_from_platform(cfg: PlatformConfig, platform: RegionalPlatform) -> WorkloadInputs:
    """What the data and edge building blocks of this region hand over (absent ones stay None)."""
    de = getattr(platform, "data_edge", None)
    if de is None:
        return WorkloadInputs()
    redis, postgres = de.redis, de.postgres
    # No regional Redis in a Global Datastore secondary region: the global tier supplies the shared one.
    redis_url = pulumi.Output.all(redis.endpoint, redis.port).apply(lambda v: f"rediss://{v[0]}:{int(v[1])}/0") if redis else None
    database = None
    if postgres is not None:
        database = DatabaseSource(secret=SecretSource(arn=postgres.secret_arn), host=postgres.address,
                                  port=postgres.port, database=postgres.database_name, iam_user=GATEWAY_DB_ROLE,
                                  iam_connect_arn=postgres.iam_connect_arn(GATEWAY_DB_ROLE))
    # Imported here: infra.data_edge imports infra.global_tier, which imports this module (the cycle issue 20 breaks).
    from infra.data_edge import gateway_keep_alive_seconds

    return WorkloadInputs(
        target_group_arn=de.edge.target_group_arn,
        redis_url=redis_url,
        redis_cluster=bool(cfg.data.redis.cluster_mode),
        redis_auth=SecretSource(arn=redis.auth_secret_arn, property="auth_token") if redis else None,
        database=database,
        admin_token_kms_key_arn=de.data_key.arn,
        model_bucket_read_policy=de.model_bucket.read_policy_json,
        model_bucket_name=de.model_bucket.bucket_name,
        secret_kms_key_arns=[de.data_key.arn],
        keep_alive_seconds=gateway_keep_alive_seconds(cfg),
        max_body_bytes=cfg.edge.max_body_bytes,
    )


def build_workloads(cfg: PlatformConfig, platform: RegionalPlatform, inputs: WorkloadInputs | None = None,
                    depends_on: Sequence[pulumi.Resource] = ()) -> Workloads | None:
    """Everything on the cluster; None when the stack has no `workloads` section."""
    if cfg.workloads is None:
        return None
    wl = cfg.workloads
    inputs = inputs or inputs_from_platform(cfg, platform)
    cluster = platform.cluster
    prefix = platform.prefix
    opts = pulumi.ResourceOptions(providers=[platform.provider, cluster.k8s_provider])
    identity = ServiceAccountIdentity(oidc_provider_arn=cluster.oidc_provider_arn, oidc_issuer=cluster.oidc_issuer)
    tags = {"llm-platform/stack": pulumi.get_stack(), "llm-platform/tier": cfg.tier, **cfg.tags}

    image = inputs.image_rewrite or (lambda ref: ref)
    namespaces = Namespaces(f"{prefix}-namespaces", NamespacesArgs(
        vpc_cidr=platform.network.vpc_cidr, k8s_version=cfg.cluster.version,
        redis_cidrs=inputs.redis_cidrs, postgres_cidrs=inputs.postgres_cidrs,
        gateway=GATEWAY_NS, models=MODELS_NS, monitoring=MONITORING_NS,
    ), opts=opts)

    charts = {name: HelmChart(repo=wl.chart(name).repo, version=wl.chart(name).version) for name in DEFAULT_CHARTS}  # type: ignore[arg-type]
    addons = ClusterAddons(f"{prefix}-addons", ClusterAddonsArgs(
        cluster_name=cluster.cluster_name, region=platform.region, vpc_id=platform.network.vpc_id,
        k8s_version=cfg.cluster.version, identity=identity, charts=charts, monitoring_namespace=MONITORING_NS,
        target_group_arns=[inputs.target_group_arn] if inputs.target_group_arn is not None else [],
        gpu_share_ways=sorted({m.gpu_share for m in cfg.models if m.gpu_share > 1}),
        prometheus_retention_days=wl.prometheus_retention_days, prometheus_storage_gib=wl.prometheus_storage_gib,
        alert_receivers=alert_receivers(wl.alerting, platform), secret_kms_key_arns=inputs.secret_kms_key_arns,
        depends_on=[*namespaces.ready, *depends_on], tags=tags,
    ), opts=opts)
    ready = [*namespaces.ready, *addons.ready]

    models: ModelServers | None = None
    gateway: GatewayWorkload | None = None
    if cfg.models:
        hf = secret_of(wl.hf_token_secret, platform) if wl.hf_token_secret else None
        models = ModelServers(f"{prefix}-models", ModelServersArgs(
            namespace=MODELS_NS, image=image(wl.vllm_image.ref), models=model_specs(cfg, inputs.model_bucket_name), region=platform.region,
            identity=identity, prometheus_url=addons.prometheus_url,
            model_bucket_read_policy=inputs.model_bucket_read_policy, hf_token=hf,
            secret_kms_key_arns=inputs.secret_kms_key_arns, depends_on=ready, tags=tags,
        ), opts=opts)
        gw = wl.gateway
        gateway = GatewayWorkload(f"{prefix}-gateway", GatewayWorkloadArgs(
            namespace=GATEWAY_NS, image=image(gw.image.ref), models_yaml=models_yaml(cfg.models), region=platform.region,
            identity=identity, replicas_min=gw.replicas.min, replicas_max=gw.replicas.max,
            requests={"cpu": gw.requests.cpu, "memory": gw.requests.memory},
            limits={"cpu": gw.limits.cpu, "memory": gw.limits.memory},
            target_cpu_percent=gw.target_cpu_percent, drain_seconds=gw.drain_seconds,
            redis_url=inputs.redis_url, redis_cluster=inputs.redis_cluster, redis_auth=inputs.redis_auth,
            database=inputs.database, admin_token=inputs.admin_token, admin_token_kms_key_arn=inputs.admin_token_kms_key_arn,
            secret_kms_key_arns=inputs.secret_kms_key_arns,
            target_group_arn=inputs.target_group_arn, depends_on=ready, tags=tags,
            keep_alive_seconds=inputs.keep_alive_seconds, max_body_bytes=inputs.max_body_bytes,
        ), opts=opts)

    observability = Observability(f"{prefix}-observability", ObservabilityArgs(
        namespace=MONITORING_NS, gateway_namespace=GATEWAY_NS, models_namespace=MODELS_NS,
        runbook_base_url=wl.runbook_base_url,
        always_on_models=[m.name for m in cfg.models if m.replicas.min >= 1],
        # Time-sliced tenants of one GPU together reserve utilisation x share of it.
        gpu_memory_reserved=max((m.gpu_memory_utilization * m.gpu_share for m in cfg.models), default=0.9),
        gateway_cpu_limit_cores=_cores(wl.gateway.limits.cpu), depends_on=ready, tags=tags,
    ), opts=opts)
    return Workloads(namespaces=namespaces, addons=addons, models=models, gateway=gateway, observability=observability)


def export_workloads(workloads: Workloads, key: str = "") -> None:
    """Stack outputs a user needs next: where the gateway answers inside the cluster, how to reach Grafana."""
    if workloads.gateway is not None:
        pulumi.export(f"{key}gatewayServiceUrl", workloads.gateway.service_url)
        if workloads.gateway.admin_token_secret_arn is not None:
            pulumi.export(f"{key}adminTokenSecretArn", workloads.gateway.admin_token_secret_arn)
    if workloads.models is not None:
        pulumi.export(f"{key}modelBackends", workloads.models.backends)
    pulumi.export(f"{key}grafana", f"kubectl -n {MONITORING_NS} port-forward svc/kube-prometheus-stack-grafana 3000:80")
    pulumi.export(f"{key}helmReleases", {name: r.version for name, r in workloads.addons.releases.items()})
