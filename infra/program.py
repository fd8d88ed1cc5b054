"""The Pulumi program: validated tier config in, one regional platform per configured region out.

`main()` is what `pulumi up` runs (through `infra/__main__.py`) and what the offline harness (`infra/render.py`)
runs under mocks. It maps config to component args; the components know nothing of tiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.eks_cluster import EksCluster, EksClusterArgs
from components.kms import EncryptionKey, EncryptionKeyArgs
from components.network import Network, NetworkArgs
from components.node_group import NodeGroup, NodeGroupArgs
from infra.config import PROJECT, ConfigError, PlatformConfig, RegionConfig, node_group_name_prefix, parse_platform_config
from infra.configkit import project_config_from_pulumi
from infra.data_edge import DataEdge, build_data_edge, export_data_edge
from infra.global_tier import build_global_tier, export_global_tier
from infra.instances import INSTANCE_SPECS
from infra.workloads import Workloads, build_workloads, export_workloads

AUTOSCALING_SLR = "aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"


@dataclass
class RegionalPlatform:
    """Everything one region of the platform is made of; later building blocks read what they need from here."""

    region: str
    prefix: str
    provider: aws.Provider
    network: Network
    cluster: EksCluster
    node_groups: dict[str, NodeGroup]
    data_edge: DataEdge | None = None
    workloads: Workloads | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def load_config() -> PlatformConfig:
    return parse_platform_config(project_config_from_pulumi(PROJECT), source=f"stacks/Pulumi.{pulumi.get_stack()}.yaml",
                                 stack=pulumi.get_stack())


def base_tags(cfg: PlatformConfig) -> dict[str, str]:
    return {"llm-platform/stack": pulumi.get_stack(), "llm-platform/tier": cfg.tier, "managed-by": "pulumi", **cfg.tags}


def build_region(cfg: PlatformConfig, region: RegionConfig) -> RegionalPlatform:
    stack = pulumi.get_stack()
    # Names carry the region only where a stack spans several, so single-region names stay short.
    prefix = f"llmp-{stack}" if len(cfg.regions) == 1 else f"llmp-{stack}-{region.name}"
    cluster_name = prefix
    tags = base_tags(cfg)
    provider = aws.Provider(f"aws-{region.name}", region=region.name, default_tags=aws.ProviderDefaultTagsArgs(tags=tags))
    in_region = pulumi.ResourceOptions(provider=provider)

    # From config when given (global.availability_zones): a run during a region outage must not ask that region's EC2.
    configured_azs = cfg.global_.availability_zones.get(region.name) if cfg.global_ is not None else None
    azs_available = configured_azs or aws.get_availability_zones(state="available", opts=pulumi.InvokeOptions(provider=provider)).names
    if region.az_count > len(azs_available):
        raise ConfigError(
            f"stacks/Pulumi.{stack}.yaml: llm-platform:regions[{cfg.regions.index(region)}].az_count: got {region.az_count}; "
            f"{region.name} has {len(azs_available)} available AZs ({', '.join(azs_available)})"
        )
    azs = list(azs_available[: region.az_count])
    invoke = pulumi.InvokeOutputOptions(provider=provider)
    account, partition = aws.get_caller_identity_output(opts=invoke).account_id, aws.get_partition_output(opts=invoke).partition

    network = Network(
        prefix,
        NetworkArgs(
            cidr=region.vpc_cidr,
            azs=azs,
            cluster_name=cluster_name,
            nat_gateways=cfg.network.nat_gateways,
            interface_endpoints=list(cfg.network.interface_endpoints),
            s3_gateway_endpoint=cfg.network.s3_gateway_endpoint,
            flow_logs_retention_days=cfg.network.flow_logs_retention_days,
            tags=tags,
        ),
        opts=in_region,
    )
    cluster = EksCluster(
        prefix,
        EksClusterArgs(
            cluster_name=cluster_name,
            version=cfg.cluster.version,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            addon_versions=cfg.cluster.addons,
            public_access_cidrs=cfg.cluster.public_access_cidrs,
            admin_role_arns=cfg.cluster.admin_role_arns,
            view_role_arns=[pulumi.Output.concat("arn:", partition, ":iam::", account, ":role/", n) for n in cfg.cluster.preview_role_names],
            # The CI runner's VPC (README "Deploying for real"); other regions reach it over the global tier's peering.
            api_access_cidrs=[cfg.regions[0].vpc_cidr] if cfg.cluster.ci_runner_in_home_vpc else [],
            log_retention_days=cfg.cluster.log_retention_days,
            tags=tags,
        ),
        opts=in_region,
    )
    ebs_key = EncryptionKey(
        f"{prefix}-ebs",
        EncryptionKeyArgs(description=f"{cluster_name} node root volumes", service_linked_roles=[AUTOSCALING_SLR], tags=tags),
        opts=in_region,
    )
    node_groups: dict[str, NodeGroup] = {}
    for group in cfg.node_groups:
        spec = INSTANCE_SPECS[group.instance_types[0]]
        node_groups[group.name] = NodeGroup(
            f"{prefix}-{group.name}",
            NodeGroupArgs(
                cluster_name=cluster.cluster_name,
                name_prefix=node_group_name_prefix(stack, cfg, region.name, group.name),
                subnet_ids=network.private_subnet_ids,
                instance_types=group.instance_types,
                min_size=group.min_size,
                desired_size=group.desired_size,
                max_size=group.max_size,
                capacity_type=group.capacity,
                disk_gib=group.disk_gib,
                ebs_kms_key_arn=ebs_key.arn,
                security_group_ids=[cluster.cluster_security_group_id],
                gpu_class=group.gpu,
                gpus_per_node=spec.gpus,
                vcpus_per_node=min(INSTANCE_SPECS[t].vcpus for t in group.instance_types),
                memory_mib_per_node=min(INSTANCE_SPECS[t].memory_gib for t in group.instance_types) * 1024,
                labels={"llm-platform/node-group": group.name, **group.labels},
                tags=tags,
            ),
            opts=pulumi.ResourceOptions(provider=provider, depends_on=cluster.network_addons),
        )
    cluster.install_compute_addons([ng.node_group for ng in node_groups.values()])

    platform = RegionalPlatform(region=region.name, prefix=prefix, provider=provider, network=network, cluster=cluster, node_groups=node_groups)
    platform.data_edge = build_data_edge(cfg, region, platform)
    if len(cfg.regions) == 1:
        # Multi-region stacks attach workloads in main(), once the global tier says where shared state lives.
        platform.workloads = build_workloads(cfg, platform, depends_on=[ng.node_group for ng in node_groups.values()])
    return platform


def export_region(cfg: PlatformConfig, platform: RegionalPlatform, home: bool) -> None:
    key = "" if home else f"{platform.region}:"
    pulumi.export(f"{key}region", platform.region)
    pulumi.export(f"{key}vpcId", platform.network.vpc_id)
    pulumi.export(f"{key}clusterName", platform.cluster.cluster_name)
    pulumi.export(f"{key}kubeconfig", platform.cluster.kubeconfig)
    pulumi.export(
        f"{key}nodeGroups",
        {name: {"instanceTypes": g.instance_types, "gpu": g.gpu, "min": g.min_size, "max": g.max_size, "capacity": g.capacity}
         for name, g in ((g.name, g) for g in cfg.node_groups)},
    )
    if platform.data_edge is not None:
        export_data_edge(platform.data_edge, key)
    if platform.workloads is not None:
        export_workloads(platform.workloads, key)


def main() -> None:
    try:
        cfg = load_config()
        # One full regional platform per configured region (the global tier has several), home region first.
        regions = [build_region(cfg, region) for region in cfg.regions]
        # The cross-region layer (one hostname, failover, shared state, replication) needs every region first.
        global_tier = build_global_tier(cfg, regions) if len(cfg.regions) > 1 else None
        if global_tier is not None:
            for platform in regions:
                platform.workloads = build_workloads(cfg, platform, inputs=global_tier.workload_inputs[platform.region],
                                                     depends_on=[ng.node_group for ng in platform.node_groups.values()])
    except ConfigError as err:
        # RunError ends the program with just this line: no traceback for a config mistake.
        raise pulumi.RunError(str(err)) from None
    for i, platform in enumerate(regions):
        export_region(cfg, platform, home=i == 0)
    if global_tier is not None:
        export_global_tier(cfg, global_tier)
