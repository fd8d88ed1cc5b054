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
from infra.preconditions import AUTOSCALING, EC2_SPOT, ServiceLinkedRole
from infra.workloads import Workloads, build_workloads, export_workloads
from infra.zones import EKS_UNSUPPORTED_ZONE_IDS, NO_OPT_IN, Zone, choose_zones, usable_zones, zones_offering

# Tag on a service-linked role this program created, so later runs keep managing it (and only that stack does).
SLR_OWNER_TAG = "llm-platform/created-by-stack"


@dataclass
class AccountRoles:
    """Service-linked roles (account-wide, so ensured once per stack, with the home region's provider)."""

    autoscaling_arn: pulumi.Output[str]
    spot_ready: list[pulumi.Resource]
    """What SPOT node groups wait for: the Spot role, when this stack creates it."""


@dataclass
class RegionalPlatform:
    """Everything one region of the platform is made of; later building blocks read what they need from here."""

    region: str
    prefix: str
    provider: aws.Provider
    network: Network
    cluster: EksCluster
    node_groups: dict[str, NodeGroup]
    account: AccountRoles
    ready_for_workloads: list[pulumi.Resource] = field(default_factory=list)
    """What Helm releases and Kubernetes objects wait for: the CPU node groups and the add-ons running on them
    (coredns, EBS CSI). Never a GPU group."""
    data_edge: DataEdge | None = None
    workloads: Workloads | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def load_config() -> PlatformConfig:
    return parse_platform_config(project_config_from_pulumi(PROJECT), source=f"stacks/Pulumi.{pulumi.get_stack()}.yaml",
                                 stack=pulumi.get_stack())


def base_tags(cfg: PlatformConfig) -> dict[str, str]:
    return {"llm-platform/stack": pulumi.get_stack(), "llm-platform/tier": cfg.tier, "managed-by": "pulumi", **cfg.tags}


def ensure_service_linked_role(role: ServiceLinkedRole, provider: aws.Provider) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
    """The role's ARN, and what to wait for: the role, created where the account lacks it (infra/preconditions.py
    says which roles must exist before first use).

    Account-wide and shared: a role that exists is only read, whoever created it (this stack included). Declaring it
    again would fail: after `pulumi destroy` or `stack rm` the retained role is still there, and the provider's create
    does not adopt an existing role (IAM: "has been taken in this account"). The run after the one that created it
    drops it from state; `retain_on_delete`, recorded in state, leaves the role in the account, where other stacks and
    AWS services rely on it. The tag only says who created it.
    """
    invoke = pulumi.InvokeOptions(provider=provider)
    owner = f"{PROJECT}/{pulumi.get_stack()}"
    found = aws.iam.get_roles(path_prefix=f"/aws-service-role/{role.service}/", name_regex=f"^{role.name}$", opts=invoke)
    if found.arns:
        return pulumi.Output.from_input(str(found.arns[0])), []
    created = aws.iam.ServiceLinkedRole(
        f"slr-{role.service}",
        aws_service_name=role.service,
        description=f"{role.name}: created by {owner} because the account had none (kept when the stack goes)",
        tags={SLR_OWNER_TAG: owner},
        opts=pulumi.ResourceOptions(provider=provider, retain_on_delete=True),
    )
    return created.arn, [created]


def deployer_principal_arn(provider: aws.Provider) -> str:
    """The IAM ARN of whoever runs `pulumi up`: for an assumed role (CI, SSO) the role itself, not the STS session.

    EKS access entries take IAM role/user ARNs (a role ARN may carry a path); `get_session_context` maps
    `arn:aws:sts::<acct>:assumed-role/<role>/<session>` to `arn:aws:iam::<acct>:role/<path><role>`.
    """
    invoke = pulumi.InvokeOptions(provider=provider)
    caller = aws.get_caller_identity(opts=invoke)
    return str(aws.iam.get_session_context(arn=caller.arn, opts=invoke).issuer_arn)


def choose_region_zones(cfg: PlatformConfig, region: RegionConfig, provider: aws.Provider) -> list[str]:
    """The region's AZs for the VPC and cluster (rule in infra/zones.py): no opt-in zones, none that EKS refuses."""
    found = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=[NO_OPT_IN])],
        exclude_zone_ids=list(EKS_UNSUPPORTED_ZONE_IDS),
        opts=pulumi.InvokeOptions(provider=provider),
    )
    zones = [Zone(name, zone_id) for name, zone_id in zip(found.names, found.zone_ids)]
    chosen = choose_zones(zones, region.az_count)
    if chosen is None:
        usable = [z.name for z in usable_zones(zones)]
        raise ConfigError(
            f"stacks/Pulumi.{pulumi.get_stack()}.yaml: llm-platform:regions[{cfg.regions.index(region)}].az_count: got {region.az_count}; "
            f"allowed: at most {len(usable)}, the AZs of {region.name} that need no opt-in and that EKS supports ({', '.join(usable)})"
        )
    return chosen


def instance_type_offerings(cfg: PlatformConfig, azs: list[str], provider: aws.Provider) -> dict[str, set[str]]:
    """Instance type -> the chosen AZs that offer it, as EC2 reports it to this account (read at every preview)."""
    types = sorted({t for g in cfg.node_groups for t in g.instance_types})
    found = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=types),
                 aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="location", values=azs)],
        opts=pulumi.InvokeOptions(provider=provider),
    )
    offered: dict[str, set[str]] = {}
    for itype, location in zip(found.instance_types, found.locations):
        offered.setdefault(itype, set()).add(location)
    return offered


def build_region(cfg: PlatformConfig, region: RegionConfig, account: AccountRoles | None = None) -> RegionalPlatform:
    stack = pulumi.get_stack()
    # Names carry the region only where a stack spans several, so single-region names stay short.
    prefix = f"llmp-{stack}" if len(cfg.regions) == 1 else f"llmp-{stack}-{region.name}"
    cluster_name = prefix
    tags = base_tags(cfg)
    provider = aws.Provider(f"aws-{region.name}", region=region.name, default_tags=aws.ProviderDefaultTagsArgs(tags=tags))
    in_region = pulumi.ResourceOptions(provider=provider)
    if account is None:
        autoscaling_arn, _ = ensure_service_linked_role(AUTOSCALING, provider)
        spot_ready = ensure_service_linked_role(EC2_SPOT, provider)[1] if any(g.capacity == "SPOT" for g in cfg.node_groups) else []
        account = AccountRoles(autoscaling_arn=autoscaling_arn, spot_ready=spot_ready)

    # From config when given (global.availability_zones): a run during a region outage must not ask that region's EC2.
    configured_azs = cfg.global_.availability_zones.get(region.name) if cfg.global_ is not None else None
    if configured_azs:
        if region.az_count > len(configured_azs):
            raise ConfigError(
                f"stacks/Pulumi.{stack}.yaml: llm-platform:regions[{cfg.regions.index(region)}].az_count: got {region.az_count}; "
                f"allowed: at most {len(configured_azs)}, the AZs listed in llm-platform:global.availability_zones.{region.name}"
            )
        azs = list(configured_azs[: region.az_count])
    else:
        azs = choose_region_zones(cfg, region, provider)
    offered = instance_type_offerings(cfg, azs, provider)
    invoke = pulumi.InvokeOutputOptions(provider=provider)
    account_id, partition = aws.get_caller_identity_output(opts=invoke).account_id, aws.get_partition_output(opts=invoke).partition

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
            view_role_arns=[pulumi.Output.concat("arn:", partition, ":iam::", account_id, ":role/", n) for n in cfg.cluster.preview_role_names],
            # The CI runner's VPC (README "Deploying for real"); other regions reach it over the global tier's peering.
            api_access_cidrs=[cfg.regions[0].vpc_cidr] if cfg.cluster.ci_runner_in_home_vpc else [],
            deployer_principal_arn=deployer_principal_arn(provider),
            log_retention_days=cfg.cluster.log_retention_days,
            tags=tags,
        ),
        opts=in_region,
    )
    ebs_key = EncryptionKey(
        f"{prefix}-ebs",
        # The Auto Scaling role launches the nodes and must use this key: the policy names it, so it must exist.
        EncryptionKeyArgs(description=f"{cluster_name} node root volumes", service_linked_role_arns=[account.autoscaling_arn], tags=tags),
        opts=in_region,
    )
    subnet_of_az = dict(zip(azs, network.private_subnet_ids))
    node_groups: dict[str, NodeGroup] = {}
    for index, group in enumerate(cfg.node_groups):
        spec = INSTANCE_SPECS[group.instance_types[0]]
        group_azs = zones_offering(azs, group.instance_types, offered)
        if not group_azs:
            where = "; ".join(f"{t} in {', '.join(sorted(offered.get(t, set()))) or 'none of them'}" for t in group.instance_types)
            raise ConfigError(
                f"stacks/Pulumi.{stack}.yaml: llm-platform:node_groups[{index}].instance_types: got {group.instance_types}; "
                f"no AZ the platform uses in {region.name} ({', '.join(azs)}) offers all of them ({where}); "
                "allowed: types offered together in at least one of these AZs (`python -m infra.cli preflight` lists them)"
            )
        node_groups[group.name] = NodeGroup(
            f"{prefix}-{group.name}",
            NodeGroupArgs(
                cluster_name=cluster.cluster_name,
                name_prefix=node_group_name_prefix(stack, cfg, region.name, group.name),
                # Only the zones that offer the group's types: elsewhere its instances could never launch.
                subnet_ids=[subnet_of_az[az] for az in group_azs],
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
                depends_on=[*cluster.network_addons, *(account.spot_ready if group.capacity == "SPOT" else [])],
            ),
            opts=in_region,
        )
    # Critical path: coredns and the EBS CSI driver need nodes to run on, so they wait for the CPU (system) groups
    # only. GPU groups come up in parallel: a p4d group without capacity or quota must not hold up the platform.
    cpu_groups = [ng.node_group for g, ng in zip(cfg.node_groups, node_groups.values()) if g.gpu is None]
    compute_addons = cluster.install_compute_addons(cpu_groups)

    platform = RegionalPlatform(region=region.name, prefix=prefix, provider=provider, network=network, cluster=cluster,
                                node_groups=node_groups, account=account, ready_for_workloads=[*cpu_groups, *compute_addons])
    platform.data_edge = build_data_edge(cfg, region, platform)
    if len(cfg.regions) == 1:
        # Multi-region stacks attach workloads in main(), once the global tier says where shared state lives.
        platform.workloads = build_workloads(cfg, platform, depends_on=platform.ready_for_workloads)
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
        regions: list[RegionalPlatform] = []
        for region in cfg.regions:
            regions.append(build_region(cfg, region, regions[0].account if regions else None))
        # The cross-region layer (one hostname, failover, shared state, replication) needs every region first.
        global_tier = build_global_tier(cfg, regions) if len(cfg.regions) > 1 else None
        if global_tier is not None:
            for platform in regions:
                platform.workloads = build_workloads(cfg, platform, inputs=global_tier.workload_inputs[platform.region],
                                                     depends_on=platform.ready_for_workloads)
    except ConfigError as err:
        # RunError ends the program with just this line: no traceback for a config mistake.
        raise pulumi.RunError(str(err)) from None
    for i, platform in enumerate(regions):
        export_region(cfg, platform, home=i == 0)
    if global_tier is not None:
        export_global_tier(cfg, global_tier)
