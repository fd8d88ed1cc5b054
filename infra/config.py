"""Typed tier configuration: every key of a stack's `llm-platform:*` config, validated before any resource exists.

A stack file (`stacks/Pulumi.<tier>.yaml`) holds one Pulumi config key per top-level field of `PlatformConfig`
(`llm-platform:tier`, `llm-platform:regions`, `llm-platform:cluster`, ...). Unknown keys and invalid values stop the
program with one line naming the key, the value given and what is allowed (`ConfigError`).
Secure defaults live here, in one visible place; the tier files only say where a tier differs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from components.naming import region_short_code
from infra.configkit import REGION_PATTERN, Strict, check_log_retention, format_validation_error
from infra.fit import check_models_fit_gpu_memory
from infra.instances import GPU_FAMILIES, INSTANCE_SPECS, gpu_class_of
from infra.pins import DEFAULT_EKS_VERSION, EKS_VERSIONS
from infra.workload_config import ModelConfig, WorkloadsConfig, check_models_fit_node_groups
from infra.data_edge_config import DataConfig, EdgeConfig, ModelStoreConfig, check_edge_fits_regions
from infra.global_config import GlobalConfig, check_global_fits_regions
from infra.provider_limits import EKS_NODE_GROUP_NAME_MAX, EKS_NODE_GROUP_NAME_PREFIX_MAX, UNIQUE_ID_SUFFIX_LENGTH

PROJECT = "llm-platform"

# EKS versions this release is tested against: infra/pins.py EKS_VERSIONS (the AWS calendar), standard or
# extended support (extended is billed at the higher rate: infra/cost.py). The policy pack keeps the same list.
SUPPORTED_EKS_VERSIONS = tuple(EKS_VERSIONS)
REQUIRED_ADDONS = ("vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "eks-pod-identity-agent")
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "logs", "ec2", "elasticloadbalancing", "autoscaling", "ssm")
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$"


class ConfigError(Exception):
    """Invalid stack config: the message is one line naming the key, the value given and what is allowed."""


class RegionConfig(Strict):
    """One AWS region of the platform. The first region of the list is the home region."""

    name: Annotated[str, Field(pattern=REGION_PATTERN, description="AWS region, e.g. us-east-1")]
    az_count: Annotated[int, Field(ge=2, le=6, description="availability zones to spread subnets and nodes over")]
    vpc_cidr: Annotated[str, Field(description="VPC IPv4 CIDR, /16 to /20; split into public and private subnets")]

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"not an IPv4 network CIDR ({exc})") from None
        if not 16 <= net.prefixlen <= 20:
            raise ValueError("prefix length must be /16 to /20 so every AZ gets a /20-or-larger private subnet")
        if not net.is_private:
            raise ValueError("must be a private (RFC 1918) range")
        return str(net)


class NetworkConfig(Strict):
    """VPC layout options."""

    nat_gateways: Literal["single", "per_az"] = Field("per_az", description="one NAT for the VPC (cheap) or one per AZ (AZ-independent egress)")
    interface_endpoints: list[Literal[INTERFACE_ENDPOINTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["ecr.api", "ecr.dkr", "sts"],
        description="AWS PrivateLink endpoints so image pulls and IRSA token exchange stay off the NAT",
    )
    s3_gateway_endpoint: bool = True
    flow_logs_retention_days: int = 90

    @field_validator("flow_logs_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        return check_log_retention(value)


class ClusterConfig(Strict):
    """The EKS control plane."""

    version: str = Field(DEFAULT_EKS_VERSION, description=f"Kubernetes version, one of {', '.join(SUPPORTED_EKS_VERSIONS)}")
    public_access_cidrs: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach the public API endpoint; empty = public endpoint off (private only)",
    )
    admin_role_arns: list[Annotated[str, Field(pattern=ROLE_ARN_PATTERN)]] = Field(
        default_factory=list, description="IAM roles granted cluster-admin through EKS access entries"
    )
    preview_role_names: list[Annotated[str, Field(pattern=r"^[\w+=,.@-]{1,64}$")]] = Field(
        default_factory=list, description="IAM roles (in this account) granted read-only Kubernetes access: CI previews"
    )
    ci_runner_in_home_vpc: bool = Field(
        True, description="a self-hosted CI runner lives in the home region's VPC: every cluster admits that VPC on 443"
    )
    log_retention_days: int = 90
    addons: dict[str, str] = Field(description="managed add-on versions, e.g. vpc-cni: v1.20.4-eksbuild.1")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in SUPPORTED_EKS_VERSIONS:
            raise ValueError(f"allowed: {', '.join(SUPPORTED_EKS_VERSIONS)} (infra/pins.py; older versions are past EKS "
                             "support or in extended support without a tested upgrade path)")
        return value

    @field_validator("public_access_cidrs")
    @classmethod
    def _public_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                net = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR") from None
            if net.prefixlen == 0:
                raise ValueError(f"{cidr!r} opens the API to the internet; list your office/VPN CIDRs or leave empty")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        return check_log_retention(value)

    @field_validator("addons")
    @classmethod
    def _addons(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(REQUIRED_ADDONS))
        missing = [a for a in REQUIRED_ADDONS if a not in value]
        if unknown:
            raise ValueError(f"unknown add-on {unknown[0]!r}; allowed: {', '.join(REQUIRED_ADDONS)}")
        if missing:
            raise ValueError(f"missing version for {missing[0]!r}; required: {', '.join(REQUIRED_ADDONS)}")
        for name, version in value.items():
            if not re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", version):
                raise ValueError(f"{name}: version {version!r} is not of the form vX.Y.Z-eksbuild.N")
        return value


class NodeGroupConfig(Strict):
    """A managed node group: CPU (system, gateway) when `gpu` is unset, else a GPU class."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")]
    gpu: Literal["a10g", "a100"] | None = Field(None, description="GPU class; unset for a CPU group")
    instance_types: Annotated[list[str], Field(min_length=1)]
    capacity: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    min_size: Annotated[int, Field(ge=0)]
    desired_size: Annotated[int, Field(ge=0)]
    max_size: Annotated[int, Field(ge=1, le=100)]
    disk_gib: Annotated[int, Field(ge=20, le=16384)] = 100
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("instance_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        for t in value:
            if t not in INSTANCE_SPECS:
                raise ValueError(f"unknown instance type {t!r}; allowed: {', '.join(INSTANCE_SPECS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NodeGroupConfig:
        for t in self.instance_types:
            cls_of = gpu_class_of(t)
            if self.gpu is None and cls_of is not None:
                raise ValueError(f"instance_types: {t!r} is a GPU type ({cls_of}) in a CPU group; set gpu: {cls_of} or use a CPU type")
            if self.gpu is not None and cls_of != self.gpu:
                fams = "/".join(f + ".*" for f in GPU_FAMILIES[self.gpu])
                raise ValueError(f"instance_types: {t!r} does not match gpu class {self.gpu!r}; allowed: {fams}")
        if self.gpu is not None and len({INSTANCE_SPECS[t].gpus for t in self.instance_types}) > 1:
            raise ValueError("instance_types: all types of a GPU group need the same GPU count (the autoscaler sizes scale-from-zero from one template)")
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"sizes: got min_size={self.min_size}, desired_size={self.desired_size}, max_size={self.max_size}; "
                "allowed: min_size <= desired_size <= max_size"
            )
        return self

    @property
    def gpus_per_node(self) -> int:
        return INSTANCE_SPECS[self.instance_types[0]].gpus


class PlatformConfig(Strict):
    """The whole `llm-platform:*` config of one stack."""

    tier: Literal["dev", "small", "prod", "global"]
    regions: Annotated[list[RegionConfig], Field(min_length=1, max_length=5)]
    network: NetworkConfig = Field(default_factory=NetworkConfig)  # type: ignore[arg-type]
    cluster: ClusterConfig
    node_groups: Annotated[list[NodeGroupConfig], Field(min_length=1)]
    tags: dict[str, str] = Field(default_factory=dict)
    models: list[ModelConfig] = Field(default_factory=list, description="served model catalog (infra/workload_config.py)")
    workloads: WorkloadsConfig | None = Field(None, description="cluster workloads: images, charts, gateway sizing")
    data: DataConfig = Field(default_factory=DataConfig, description="Redis and Postgres (infra/data_edge_config.py)")
    edge: EdgeConfig = Field(description="API domain, TLS, ALB and WAF (infra/data_edge_config.py)")
    model_store: ModelStoreConfig = Field(default_factory=ModelStoreConfig, description="model-weights bucket")  # type: ignore[arg-type]
    global_: GlobalConfig | None = Field(
        None, alias="global", description="multi-region stacks only: API hostname, failover, shared state (infra/global_config.py)"
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> PlatformConfig:
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"regions: region listed twice in {names}")
        if self.tier == "global" and len(self.regions) < 2:
            raise ValueError(f"regions: tier 'global' needs at least 2 regions, got {len(self.regions)}")
        if self.tier != "global" and len(self.regions) != 1:
            raise ValueError(f"regions: tier {self.tier!r} is single-region, got {len(self.regions)}; use tier 'global'")
        nets = [(r.name, ipaddress.IPv4Network(r.vpc_cidr)) for r in self.regions]
        for i, (name_a, a) in enumerate(nets):
            for name_b, b in nets[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(f"regions: vpc_cidr {a} ({name_a}) overlaps {b} ({name_b}); allowed: disjoint CIDRs")
        group_names = [g.name for g in self.node_groups]
        if len(set(group_names)) != len(group_names):
            raise ValueError(f"node_groups: duplicate name in {group_names}")
        if not any(g.gpu is None and g.min_size >= 1 for g in self.node_groups):
            raise ValueError("node_groups: need a CPU group (no gpu) with min_size >= 1 for system pods and the gateway")
        return self

    @model_validator(mode="after")
    def _global_fits_regions(self) -> PlatformConfig:
        check_global_fits_regions(self)
        return self

    @model_validator(mode="after")
    def _edge_fits_regions(self) -> PlatformConfig:
        check_edge_fits_regions(self)
        return self

    @model_validator(mode="after")
    def _models_fit_node_groups(self) -> PlatformConfig:
        check_models_fit_node_groups(self)
        return self

    @model_validator(mode="after")
    def _models_fit_gpu_memory(self) -> PlatformConfig:
        check_models_fit_gpu_memory(self)
        return self

    @property
    def home_region(self) -> RegionConfig:
        return self.regions[0]


def node_group_name_prefix(stack: str, cfg: PlatformConfig, region: str, group: str) -> str:
    """The EKS node group's physical name prefix. Multi-region stacks name the region by its short code
    (`apne1`): the provider appends 26 characters and EKS allows 63, so the prefix has 37 (infra/provider_limits.py)."""
    where = f"llmp-{stack}" if len(cfg.regions) == 1 else f"llmp-{stack}-{region_short_code(region)}"
    return f"{where}-{group}-"


def check_node_group_names(cfg: PlatformConfig, stack: str, source: str = "stack config") -> None:
    """Every node group's physical name prefix fits EKS's limit once the provider has appended its suffix."""
    for i, group in enumerate(cfg.node_groups):
        for region in cfg.regions:
            prefix = node_group_name_prefix(stack, cfg, region.name, group.name)
            if len(prefix) > EKS_NODE_GROUP_NAME_PREFIX_MAX:
                room = EKS_NODE_GROUP_NAME_PREFIX_MAX - len(prefix) + len(group.name)
                raise ConfigError(
                    f"{source}: {PROJECT}:node_groups[{i}].name: got {group.name!r}, which makes the EKS node group name "
                    f"prefix {prefix!r} {len(prefix)} characters in stack {stack!r}; allowed: at most {max(room, 0)} characters "
                    f"(prefix at most {EKS_NODE_GROUP_NAME_PREFIX_MAX}: the provider appends {UNIQUE_ID_SUFFIX_LENGTH}, EKS allows "
                    f"{EKS_NODE_GROUP_NAME_MAX})")


def parse_platform_config(raw: dict[str, Any], source: str = "stack config", stack: str | None = None) -> PlatformConfig:
    """Validate a `{key: value}` map of project config (keys without the `llm-platform:` prefix). With `stack`, also
    the physical names that depend on the stack's name."""
    try:
        cfg = PlatformConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, PROJECT)) from None
    if stack is not None:
        check_node_group_names(cfg, stack, source)
    return cfg
