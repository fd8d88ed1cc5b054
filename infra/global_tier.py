"""Config -> args for the cross-region layer of a multi-region stack (`llm-platform:global`).

Called from `infra.program.main()` once every region's platform exists (home region first), only when the stack has
several regions. Reads what it needs from each `RegionalPlatform` (network, cluster security group, data keys,
Redis, Postgres, ALB, model bucket) and adds:
- `GlobalRouting`: the one API hostname (latency records + health checks, optional geolocation residency) and an
  ACM certificate for it on every region's HTTPS listener;
- `RegionPeering` for every pair of regions (full mesh: any region can take over the writers) and data-port rules
  for the other regions' CIDRs on the home Redis and Postgres (the writer-capable stores in other regions get theirs
  from their own components);
- `GlobalDatastore` (shared_state: global_datastore) over the home region's Redis;
- `PostgresReplica` of the ledger in every other region (one of them promoted by `ledger_primary_region`), and
  `InternalDns`: the private `ledger.<stack>.internal` CNAME every gateway writes usage through;
- `ArtifactReplication`: ECR replication (replicated repositories encrypted with a key it creates in each region)
  and model-bucket cross-region replication re-encrypting with each destination bucket's key.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from components.gateway_workload import DatabaseSource
from components.secrets_sync import SecretSource
from components.global_datastore import GlobalDatastore, GlobalDatastoreArgs, SecondaryMember
from components.internal_dns import AssociatedVpc, InternalDns, InternalDnsArgs
from components.global_routing import GlobalRouting, GlobalRoutingArgs, HealthCheckSettings, RegionalEndpoint, ResidencyPin
from components.postgres_replica import PostgresReplica, PostgresReplicaArgs
from components.region_peering import PeeredVpc, RegionPeering, RegionPeeringArgs
from components.replicated_secret import ReplicatedSecret, ReplicatedSecretArgs, SecretReplica, regional_arn
from components.replication import ArtifactReplication, ArtifactReplicationArgs, ReplicaRegion, replica_image_ref
from infra.config import ConfigError, PlatformConfig
from infra.global_config import ROUTE53_METRICS_REGION, GlobalConfig
from infra.workloads import WorkloadInputs, inputs_from_platform

if TYPE_CHECKING:
    from infra.data_edge import DataEdge
    from infra.program import RegionalPlatform

REDIS_PORT = 6379
POSTGRES_PORT = 5432


@dataclass
class GlobalTier:
    routing: GlobalRouting
    peerings: dict[str, RegionPeering]
    datastore: GlobalDatastore | None
    ledger_replicas: dict[str, PostgresReplica]
    replication: ArtifactReplication
    ledger_write_region: str
    ledger_write_host: pulumi.Output[str] | None
    """The writer's instance address (the CNAME's target)."""
    ledger_hostname: str | None
    """What gateways connect to: `ledger.<internal zone>`."""
    ledger_secret_arn: pulumi.Output[str] | None
    """Ledger credentials (`username`, `password`) in the home region; a replica with the same name in every other."""
    redis_write_region: str
    redis_write_endpoint: pulumi.Output[str] | None
    workload_inputs: dict[str, WorkloadInputs]
    """Per region: what its gateway connects to (shared Redis writer, the ledger's writer, region-local secrets)."""


def metrics_provider(cfg: PlatformConfig, platforms: list[RegionalPlatform]) -> aws.Provider:
    """Route53 health-check metrics exist only in us-east-1: that region's provider, or one made for the alarms."""
    from infra.program import base_tags  # imported late: program imports this module

    for p in platforms:
        if p.region == ROUTE53_METRICS_REGION:
            return p.provider
    return aws.Provider(f"aws-{ROUTE53_METRICS_REGION}-route53-metrics", region=ROUTE53_METRICS_REGION,
                        default_tags=aws.ProviderDefaultTagsArgs(tags=base_tags(cfg)))


def topics_in(g: GlobalConfig, region: str) -> list[str]:
    """The configured SNS topics an alarm in `region` can notify (CloudWatch alarm actions are same-region)."""
    return [arn for arn in g.alarm_topic_arns if arn.split(":")[3] == region]


def hosted_zone_id(cfg: PlatformConfig, zone_name: str, provider: aws.Provider) -> pulumi.Input[str]:
    """A public hosted zone's id: from `global.route53_zone_ids` when given (no Route53 control-plane call, which
    lives in us-east-1 and may be impaired with it), else looked up by name."""
    g = cfg.global_
    if g is not None and zone_name in g.route53_zone_ids:
        return g.route53_zone_ids[zone_name]
    return aws.route53.get_zone_output(name=zone_name, private_zone=False, opts=pulumi.InvokeOutputOptions(provider=provider)).zone_id


def _data_edge(cfg: PlatformConfig, platform: RegionalPlatform) -> DataEdge:
    if platform.data_edge is None:
        raise ConfigError(
            f"stacks/Pulumi.{pulumi.get_stack()}.yaml: llm-platform:global: region {platform.region} has no data/edge layer; "
            "allowed: a global section only with edge and data configured"
        )
    return platform.data_edge


def build_global_tier(cfg: PlatformConfig, platforms: list[RegionalPlatform]) -> GlobalTier:
    g: GlobalConfig | None = cfg.global_
    if g is None or len(platforms) < 2:
        raise ConfigError(f"stacks/Pulumi.{pulumi.get_stack()}.yaml: llm-platform:global: got nothing; allowed: a global section with 2+ regions")
    home, others = platforms[0], platforms[1:]
    home_de = _data_edge(cfg, home)
    others_de = {p.region: _data_edge(cfg, p) for p in others}
    home_redis = home_de.redis
    assert home_redis is not None, "the home region always builds its Redis (regional_redis_needed)"
    # Regional names are llmp-<stack>-<region>-*; cross-region ones drop the region.
    prefix = f"llmp-{pulumi.get_stack()}"
    tags = {"llm-platform/layer": "global"}
    at_home = pulumi.ResourceOptions(provider=home.provider)

    hc = g.health_check
    routing = GlobalRouting(
        f"{prefix}-dns",
        GlobalRoutingArgs(
            zone_id=hosted_zone_id(cfg, g.route53_zone, home.provider),
            api_hostname=g.api_hostname,
            endpoints=[
                RegionalEndpoint(
                    region=p.region,
                    alb_dns_name=de.edge.alb_dns_name,
                    alb_zone_id=de.edge.alb_zone_id,
                    provider=p.provider,
                    https_listener_arn=de.edge.https_listener.arn,
                )
                for p, de in [(home, home_de), *((p, others_de[p.region]) for p in others)]
            ],
            health_check=HealthCheckSettings(
                path=hc.path,
                request_interval_seconds=hc.request_interval_seconds,
                failure_threshold=hc.failure_threshold,
                search_string=hc.search_string,
                checker_regions=list(hc.checker_regions) if hc.checker_regions else None,
            ),
            residency=[
                ResidencyPin(region=r.region, countries=list(r.countries), continents=list(r.continents), on_region_failure=r.on_region_failure)
                for r in g.data_residency
            ],
            metrics_provider=metrics_provider(cfg, platforms),
            alarm_actions=topics_in(g, ROUTE53_METRICS_REGION),
            tags=tags,
        ),
        opts=at_home,
    )

    # Full mesh: after a failover any region may hold the writers, and every other region must reach them.
    peerings: dict[str, RegionPeering] = {}
    vpcs = {p.region: PeeredVpc(p.region, p.provider, p.network.vpc_id, p.network.vpc_cidr, p.network.private_route_table_ids)
            for p in platforms}
    if g.peering:
        for i, a in enumerate(platforms):
            for b in platforms[i + 1:]:
                key = f"{a.region}-{b.region}"
                peerings[key] = RegionPeering(
                    f"{prefix}-peer-{key}",
                    RegionPeeringArgs(home=vpcs[a.region], peer=vpcs[b.region], tags=tags),
                    opts=pulumi.ResourceOptions(provider=a.provider),
                )
    other_cidrs = {p.region: [o.network.vpc_cidr for o in platforms if o is not p] for p in platforms}
    # The home writers (Redis primary, ledger primary) admit the other regions' VPCs over the peering.
    # With regional_split every region uses its own Redis: the home one admits no other VPC.
    shared_redis = g.shared_state == "global_datastore"
    for what, port, sg in (("redis", REDIS_PORT, home_redis.security_group_id if shared_redis else None),
                           ("postgres", POSTGRES_PORT, home_de.postgres.security_group_id if home_de.postgres else None)):
        if sg is None or not g.peering:
            continue
        for p in others:
            aws.vpc.SecurityGroupIngressRule(
                f"{home.prefix}-{what}-from-{p.region}",
                security_group_id=sg,
                description=f"{what} (TLS) from the {p.region} VPC over the inter-region peering",
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=p.network.vpc_cidr,
                tags=tags,
                opts=pulumi.ResourceOptions(provider=home.provider, parent=peerings[f"{home.region}-{p.region}"]),
            )

    datastore: GlobalDatastore | None = None
    if g.shared_state == "global_datastore":
        r = cfg.data.redis
        datastore = GlobalDatastore(
            f"{prefix}-shared-redis",
            GlobalDatastoreArgs(
                suffix=f"llmp-{pulumi.get_stack()}",
                primary_replication_group_id=home_redis.replication_group.id,
                primary_endpoint=home_redis.endpoint,
                auth_token=home_redis.auth_token,
                home_kms_key_arn=home_de.data_key.arn,
                node_type=r.node_type,
                secondaries=[
                    SecondaryMember(
                        region=p.region,
                        provider=p.provider,
                        vpc_id=p.network.vpc_id,
                        subnet_ids=p.network.private_subnet_ids,
                        allowed_security_group_ids=[p.cluster.cluster_security_group_id],
                        allowed_cidrs=other_cidrs[p.region] if g.peering else [],
                        kms_key_arn=others_de[p.region].data_key.arn,
                    )
                    for p in others
                ],
                replicas_per_secondary=g.redis_secondary_replicas,
                cluster_mode=r.cluster_mode,
                snapshot_retention_days=r.snapshot_retention_days,
                tags=tags,
            ),
            opts=at_home,
        )

    ledger_write_region = g.ledger_primary_region or home.region
    ledger_replicas: dict[str, PostgresReplica] = {}
    ledger_secret_arn: pulumi.Output[str] | None = None
    if home_de.postgres is not None and home_de.postgres_master_password is not None:
        # The master credentials travel with the data to every replica; this secret carries them to every region's
        # gateway (read from its own region, even with the home region down), encrypted there with that region's key.
        ledger_secret = ReplicatedSecret(
            f"{prefix}-ledger-credentials",
            ReplicatedSecretArgs(
                description="Usage-ledger credentials for every region's gateway (replicated to each region)",
                kms_key_arn=home_de.data_key.arn,
                value=pulumi.Output.all(cfg.data.postgres.master_username, home_de.postgres_master_password).apply(
                    lambda v: json.dumps({"username": v[0], "password": v[1]})
                ),
                replicas=[SecretReplica(region=p.region, kms_key_arn=others_de[p.region].data_key.arn) for p in others],
                tags=tags,
            ),
            opts=at_home,
        )
        ledger_secret_arn = ledger_secret.arn
    if home_de.postgres is not None:
        pg = cfg.data.postgres
        # A promotion (ledger_primary_region) touches only the promoted replica: the others keep their source, so a
        # failover never replaces a database mid-incident (re-seeding them is a planned step of the runbook).
        for p in others:
            promote = p.region == ledger_write_region
            # A new generation is a new resource (name and identifier): re-seeding a promoted replica must create one,
            # because the provider refuses to add replicate_source_db back to it ("cannot elect new source database").
            generation = g.ledger_replica_generations.get(p.region, 1)
            suffix = "" if generation == 1 else f"-g{generation}"
            replica = PostgresReplica(
                f"{p.prefix}-pg-replica{suffix}",
                PostgresReplicaArgs(
                    identifier=f"{p.prefix}-pg{suffix}",
                    source_db_arn=home_de.postgres.instance.arn,
                    engine_version=pg.engine_version,
                    vpc_id=p.network.vpc_id,
                    subnet_ids=p.network.private_subnet_ids,
                    allowed_security_group_ids=[p.cluster.cluster_security_group_id],
                    allowed_cidrs=other_cidrs[p.region] if g.peering else [],
                    kms_key_arn=others_de[p.region].data_key.arn,
                    log_kms_key_arn=p.cluster.logs_key_arn,
                    instance_class=g.ledger_replica_instance_class or pg.instance_class,
                    max_allocated_storage_gib=pg.max_allocated_storage_gib,
                    multi_az=g.ledger_replica_multi_az,
                    deletion_protection=pg.deletion_protection,
                    backup_retention_days=pg.backup_retention_days,
                    backup_window=pg.backup_window,
                    maintenance_window=pg.maintenance_window,
                    performance_insights_retention_days=pg.performance_insights_retention_days,
                    monitoring_interval_seconds=pg.monitoring_interval_seconds,
                    log_retention_days=pg.log_retention_days,
                    final_snapshot=pg.final_snapshot,
                    promote=promote,
                    alarm_actions=topics_in(g, p.region),
                    tags=tags,
                ),
                opts=pulumi.ResourceOptions(provider=p.provider),
            )
            ledger_replicas[p.region] = replica

    replication = ArtifactReplication(
        f"{prefix}-artifacts",
        ArtifactReplicationArgs(
            home_region=home.region,
            destinations=[
                ReplicaRegion(
                    region=p.region,
                    provider=p.provider,
                    bucket_arn=others_de[p.region].model_bucket.bucket_arn if g.replicate_model_bucket else None,
                    bucket_kms_key_arn=others_de[p.region].model_key.arn,
                )
                for p in others
            ],
            ecr_repository_prefix=g.ecr_repository_prefix,
            source_bucket_id=home_de.model_bucket.bucket.id if g.replicate_model_bucket else None,
            source_bucket_arn=home_de.model_bucket.bucket_arn if g.replicate_model_bucket else None,
            source_kms_key_arn=home_de.model_key.arn if g.replicate_model_bucket else None,
            source_dependencies=[home_de.model_bucket, *(others_de[p.region].model_bucket for p in others)],
            account_id=g.account_id,
            tags=tags,
        ),
        opts=at_home,
    )

    ledger_write_host: pulumi.Output[str] | None = None
    ledger_hostname: str | None = None
    if home_de.postgres is not None:
        ledger_write_host = (ledger_replicas[ledger_write_region].address if ledger_write_region in ledger_replicas
                             else home_de.postgres.address)
        internal = InternalDns(
            f"{prefix}-internal",
            InternalDnsArgs(
                zone_name=f"{prefix}.internal",
                vpcs=[AssociatedVpc(vpc_id=p.network.vpc_id, region=p.region) for p in platforms],
                cnames={"ledger": ledger_write_host},
                tags=tags,
            ),
            opts=at_home,
        )
        ledger_hostname = internal.hostnames["ledger"]

    redis_write: pulumi.Output[str] | None = None
    redis_write_region = g.redis_primary_region or home.region
    if datastore is not None:
        redis_write = (datastore.reader_endpoints[redis_write_region] if redis_write_region in datastore.reader_endpoints
                       else datastore.write_endpoint)
    shared = SharedState(
        redis_write_endpoint=redis_write,
        redis_moved=redis_write_region != home.region,
        redis_secret_arn=datastore.secret_arn if datastore is not None else None,
        ledger_hostname=ledger_hostname,
        ledger_secret_arn=ledger_secret_arn,
    )
    # Where each region's gateway may find its data stores: the writers and whatever a failover can promote (every
    # region holds a Global Datastore member and a ledger copy), all reached over the full-mesh peering.
    all_cidrs = [p.network.vpc_cidr for p in platforms]
    workload_inputs = {
        p.region: dataclasses.replace(
            shared_state_inputs(cfg, p, home_de, shared, home=p is home),
            redis_cidrs=all_cidrs if datastore is not None and g.peering else [p.network.vpc_cidr],
            postgres_cidrs=all_cidrs if g.peering else [p.network.vpc_cidr],
            image_rewrite=functools.partial(replica_image_ref, region=p.region, prefix=g.ecr_repository_prefix),
        )
        for p in platforms
    }
    return GlobalTier(
        routing=routing,
        peerings=peerings,
        datastore=datastore,
        ledger_replicas=ledger_replicas,
        replication=replication,
        ledger_write_region=ledger_write_region,
        ledger_write_host=ledger_write_host,
        ledger_hostname=ledger_hostname,
        ledger_secret_arn=ledger_secret_arn,
        redis_write_region=redis_write_region,
        redis_write_endpoint=redis_write,
        workload_inputs=workload_inputs,
    )


@dataclass
class SharedState:
    """Where the gateways of every region find the shared writers."""

    redis_write_endpoint: pulumi.Output[str] | None
    """The Global Datastore member taking writes (None: regional_split, each region uses its own Redis)."""
    redis_moved: bool
    """The writer is no longer the home Redis (after a Global Datastore failover)."""
    redis_secret_arn: pulumi.Output[str] | None
    ledger_hostname: str | None
    """Private CNAME of the ledger's writer (follows a promotion without touching the gateways)."""
    ledger_secret_arn: pulumi.Output[str] | None


def shared_state_inputs(cfg: PlatformConfig, platform: RegionalPlatform, home_de: DataEdge, shared: SharedState,
                        home: bool) -> WorkloadInputs:
    """The region's own workload inputs, pointed at the shared writers:
    - global_datastore: counters go to the Global Datastore member taking writes (the home Redis unless failed
      over), with the AUTH token read from this region's replica of the shared secret; regional_split: unchanged,
      the region's own Redis.
    - ledger: usage goes to `ledger.<internal zone>`, the CNAME of the ledger's writer, with credentials from this
      region's replica of the ledger secret."""
    base = inputs_from_platform(cfg, platform)
    changes: dict[str, object] = {}
    if shared.redis_write_endpoint is not None and shared.redis_secret_arn is not None and (not home or shared.redis_moved):
        changes["redis_url"] = pulumi.Output.all(shared.redis_write_endpoint, REDIS_PORT).apply(
            lambda v: f"rediss://{v[0]}:{int(v[1])}/0"
        )
        changes["redis_auth"] = SecretSource(arn=regional_arn(shared.redis_secret_arn, platform.region), property="auth_token")
    if shared.ledger_hostname is not None and shared.ledger_secret_arn is not None and home_de.postgres is not None:
        changes["database"] = DatabaseSource(secret=SecretSource(arn=regional_arn(shared.ledger_secret_arn, platform.region)),
                                             host=shared.ledger_hostname, port=home_de.postgres.port,
                                             database=home_de.postgres.database_name)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def export_global_tier(cfg: PlatformConfig, tier: GlobalTier) -> None:
    """Stack outputs under `global:` (no secret values: the AUTH token stays in the replicated secret)."""
    g = cfg.global_
    assert g is not None
    pulumi.export("global:apiUrl", tier.routing.api_url)
    pulumi.export("global:healthCheckIds", tier.routing.health_check_ids)
    pulumi.export("global:sharedState", g.shared_state)
    # Where a tenant's limits are counted: once for all regions, or in full by each region on its own.
    pulumi.export("global:limitScope", "global" if g.shared_state == "global_datastore" else "per-region")
    if tier.datastore is not None:
        pulumi.export("global:redisGlobalDatastoreId", tier.datastore.global_replication_group_id)
        pulumi.export("global:redisWriteRegion", tier.redis_write_region)
        pulumi.export("global:redisWriteEndpoint", tier.redis_write_endpoint)
        pulumi.export("global:redisReaderEndpoints", tier.datastore.reader_endpoints)
        pulumi.export("global:redisAuthSecretArn", tier.datastore.secret_arn)
    pulumi.export("global:ledgerWriteRegion", tier.ledger_write_region)
    if tier.ledger_write_host is not None:
        pulumi.export("global:ledgerWriteEndpoint", tier.ledger_write_host)
        pulumi.export("global:ledgerHostname", tier.ledger_hostname)
    if tier.ledger_secret_arn is not None:
        pulumi.export("global:ledgerSecretArn", tier.ledger_secret_arn)
    pulumi.export("global:ledgerReplicaEndpoints", {region: r.address for region, r in tier.ledger_replicas.items()})
