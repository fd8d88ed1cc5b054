"""`GlobalDatastore`: ElastiCache Global Datastore over the home region's Redis, one read-only member per other region.

Limits and quotas stay exact across regions because there is one writable copy: the home region's replication
group (the primary). Every other region gets a secondary replication group joined to the Global Datastore
(asynchronous replication, typically under a second behind), encrypted at rest with a key of its own region, in its
own private subnets, reachable only from its cluster's security group. A secondary is what a region failover
promotes (`aws elasticache failover-global-replication-group`, see docs/runbooks/region-failover.md).

The AUTH token is the primary's (secondaries inherit it): it is kept in one Secrets Manager secret in the home region,
replicated by Secrets Manager into every other region and encrypted there with that region's key, so each region's
gateway reads it locally even when the home region is down.

Constraints AWS imposes (validated by the caller's config): at most two secondary regions; the same node type,
engine version and shard count in every member; node types m5/r5 or newer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws

from components.naming import AUTONAME_SUFFIX, short_name
from components.security_groups import data_store_security_group

REDIS_PORT = 6379
MAX_SECONDARIES = 2
# Node families Global Datastore runs on ("not supported on instances older than m5 or r5").
GLOBAL_DATASTORE_NODE_FAMILY = r"^cache\.(m[5-9]|r[5-9])[a-z]*\.[a-z0-9]+$"


@dataclass
class SecondaryMember:
    region: str
    """AWS region of this member."""
    provider: aws.Provider
    """That region's explicit AWS provider."""
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets of the region's VPC."""
    allowed_security_group_ids: Sequence[pulumi.Input[str]]
    """Security groups that may connect (the region's EKS cluster security group)."""
    kms_key_arn: pulumi.Input[str]
    """Customer-managed KMS key of this region: the member's data at rest and the secret's replica."""
    allowed_cidrs: Sequence[str] = ()
    """Other regions' VPC CIDRs (over inter-region peering): their gateways write here once this member is promoted."""


@dataclass
class GlobalDatastoreArgs:
    suffix: str
    """Global Datastore name suffix (AWS prepends a region-specific prefix)."""
    primary_replication_group_id: pulumi.Input[str]
    """The home region's replication group: becomes the primary, the only writable member."""
    primary_endpoint: pulumi.Input[str]
    """Its primary endpoint address: where every region writes counters."""
    auth_token: pulumi.Input[str]
    """The primary's AUTH token (a Pulumi secret); the secondaries inherit it."""
    home_kms_key_arn: pulumi.Input[str]
    """Home-region KMS key of the shared secret."""
    node_type: str
    """Node type of the primary (every member must use the same one)."""
    secondaries: Sequence[SecondaryMember]
    replicas_per_secondary: int = 1
    """Read replicas in each secondary member; >= 1 gives Multi-AZ failover inside the region."""
    cluster_mode: bool = False
    """Must match the primary; in cluster mode the shard count is inherited from the primary."""
    snapshot_retention_days: int = 7
    """Snapshots of each secondary (kept so a promoted secondary already has backups)."""
    secret_recovery_window_days: int = 7
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", self.suffix):
            raise ValueError(f"suffix: got {self.suffix!r}; allowed: 1-40 lowercase letters, digits and hyphens, starting with a letter")
        if not 1 <= len(self.secondaries) <= MAX_SECONDARIES:
            raise ValueError(f"secondaries: got {len(self.secondaries)}; allowed: 1 to {MAX_SECONDARIES} (an AWS Global Datastore limit)")
        if not re.fullmatch(GLOBAL_DATASTORE_NODE_FAMILY, self.node_type):
            raise ValueError(f"node_type: got {self.node_type!r}; allowed: m5/r5 or newer families (e.g. cache.r7g.large), which Global Datastore requires")
        if not 0 <= self.replicas_per_secondary <= 5:
            raise ValueError(f"replicas_per_secondary: got {self.replicas_per_secondary}; allowed: 0 to 5")
        if not 1 <= self.snapshot_retention_days <= 35:
            raise ValueError(f"snapshot_retention_days: got {self.snapshot_retention_days}; allowed: 1 to 35")
        if not 7 <= self.secret_recovery_window_days <= 30:
            raise ValueError(f"secret_recovery_window_days: got {self.secret_recovery_window_days}; allowed: 7 to 30")


class GlobalDatastore(pulumi.ComponentResource):
    """Global replication group + a secondary replication group per other region + the replicated AUTH secret."""

    global_replication_group: aws.elasticache.GlobalReplicationGroup
    global_replication_group_id: pulumi.Output[str]
    secondary_groups: dict[str, aws.elasticache.ReplicationGroup]
    reader_endpoints: dict[str, pulumi.Output[str]]
    """Per secondary region: its member's endpoint (read-only until promoted)."""
    write_endpoint: pulumi.Output[str]
    secret_arn: pulumi.Output[str]
    """The shared secret in the home region; replicas carry the same name in every other region."""
    secret_name: pulumi.Output[str]

    def __init__(self, name: str, args: GlobalDatastoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:GlobalDatastore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags

        self.global_replication_group = aws.elasticache.GlobalReplicationGroup(
            f"{name}-global",
            global_replication_group_id_suffix=args.suffix,
            global_replication_group_description=f"{name}: limits, quotas and caches shared by every region",
            primary_replication_group_id=args.primary_replication_group_id,
            # A failover (run by an operator or AWS) changes which member is primary; without this the next
            # `pulumi up` would see a new primary id and replace the whole Global Datastore.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["primaryReplicationGroupId"], delete_before_replace=True),  # fixed id
        )
        self.global_replication_group_id = self.global_replication_group.global_replication_group_id

        self.secondary_groups = {}
        self.reader_endpoints = {}
        for member in args.secondaries:
            in_region = pulumi.ResourceOptions(parent=self, provider=member.provider)
            member_name = f"{name}-{member.region}"
            security_group = data_store_security_group(
                member_name,
                vpc_id=member.vpc_id,
                port=REDIS_PORT,
                description=f"Global Datastore member {member_name}: Redis TLS port from the EKS cluster only",
                name_tag=f"{member_name}-redis",
                allowed_security_group_ids=member.allowed_security_group_ids,
                cluster_rule_description="Redis (TLS, AUTH) from the EKS cluster nodes and pods of this region",
                peer_protocol="Redis (TLS, AUTH)",
                allowed_cidrs=member.allowed_cidrs,
                tags=tags,
                opts=in_region,
            )
            subnet_group = aws.elasticache.SubnetGroup(
                f"{member_name}-subnets",
                description=f"{member_name}: private subnets",
                subnet_ids=list(member.subnet_ids),
                tags=tags,
                opts=in_region,
            )
            # Engine, version, node type, parameter group, TLS and AUTH come from the Global Datastore; setting
            # them here would fight it. What stays regional: placement, key, replicas, snapshots.
            group = aws.elasticache.ReplicationGroup(
                short_name(f"{member_name}-rg", 40 - AUTONAME_SUFFIX),  # the auto-named replication group id: at most 40 characters
                description=f"{member_name}: read-only Global Datastore member (promotable)",
                global_replication_group_id=self.global_replication_group_id,
                subnet_group_name=subnet_group.name,
                security_group_ids=[security_group.id],
                kms_key_id=member.kms_key_arn,
                num_cache_clusters=None if args.cluster_mode else 1 + args.replicas_per_secondary,
                replicas_per_node_group=args.replicas_per_secondary if args.cluster_mode else None,
                automatic_failover_enabled=args.replicas_per_secondary > 0 or args.cluster_mode,
                multi_az_enabled=args.replicas_per_secondary > 0,
                snapshot_retention_limit=args.snapshot_retention_days,
                auto_minor_version_upgrade=True,
                tags=tags,
                opts=in_region,
            )
            self.secondary_groups[member.region] = group
            self.reader_endpoints[member.region] = (
                group.configuration_endpoint_address if args.cluster_mode else group.primary_endpoint_address
            ).apply(str)

        self.write_endpoint = pulumi.Output.from_input(args.primary_endpoint).apply(str)

        secret = aws.secretsmanager.Secret(
            f"{name}-auth",
            description=f"AUTH token and endpoints of Global Datastore {name} (replicated to every region)",
            kms_key_id=args.home_kms_key_arn,
            replicas=[{"region": m.region, "kms_key_id": m.kms_key_arn} for m in args.secondaries],
            recovery_window_in_days=args.secret_recovery_window_days,
            tags=tags,
            opts=child,
        )

        def document(values: list[object]) -> str:
            token, write, readers = values
            return json.dumps(
                {"auth_token": token, "write_endpoint": write, "reader_endpoints": readers, "port": REDIS_PORT, "tls": True,
                 "cluster_mode": args.cluster_mode}
            )

        readers = pulumi.Output.all(**self.reader_endpoints)
        secret_document: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.auth_token, self.write_endpoint, readers).apply(document)
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-auth-value",
            secret_id=secret.id,
            secret_string=secret_document,
            opts=child,
        )
        self.secret_arn = secret.arn
        self.secret_name = secret.name

        self.register_outputs(
            {
                "global_replication_group_id": self.global_replication_group_id,
                "write_endpoint": self.write_endpoint,
                "reader_endpoints": self.reader_endpoints,
                "secret_arn": self.secret_arn,
            }
        )
