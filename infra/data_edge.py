"""Config -> args for the data and edge layer of one region: KMS keys, Redis, Postgres, ALB + WAF, model bucket.

Called from `build_region` in `infra/program.py`. Every region gets its own Redis (limits and cache are regional),
edge (ALB + WAF, its own certificate) and model bucket (weights next to the GPUs). Postgres lives in the home region
only: it is the system of record, and the other regions of the global tier reach it (cross-region read replicas are
the multi-region build's job). A non-home region serves `<region>.<domain_name>`; the global name's latency routing
across regions is also the multi-region build's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.edge import Edge, EdgeArgs, WafArgs
from components.gateway_workload import ALB_DEREGISTRATION_SECONDS
from components.kms import EncryptionKey, EncryptionKeyArgs
from components.model_bucket import ModelBucket, ModelBucketArgs
from components.postgres_database import PostgresDatabase, PostgresDatabaseArgs
from components.redis_cache import RedisCache, RedisCacheArgs
from infra.config import PlatformConfig, RegionConfig
from infra.global_config import regional_redis_needed
from infra.global_tier import hosted_zone_id

if TYPE_CHECKING:
    from infra.program import RegionalPlatform


@dataclass
class DataEdge:
    """The data and edge resources of one region."""

    data_key: EncryptionKey
    model_key: EncryptionKey
    redis: RedisCache | None
    """None in a Global Datastore secondary region (its member of the Global Datastore is its Redis)."""
    postgres: PostgresDatabase | None
    edge: Edge
    model_bucket: ModelBucket
    postgres_master_password: pulumi.Output[str] | None = None
    """Multi-region stacks only: the stack-generated master password (a Pulumi secret) the global tier replicates."""


# uvicorn must keep an idle connection open longer than the ALB does, or the ALB reuses a connection the gateway has
# just closed and answers 502 (AWS: "configure the idle timeout of your application to be larger than the idle
# timeout configured for the load balancer").
KEEP_ALIVE_MARGIN_SECONDS = 5


def gateway_keep_alive_seconds(cfg: PlatformConfig) -> int:
    """The gateway's HTTP keep-alive: derived from `edge.idle_timeout_seconds`, the ALB's idle timeout."""
    return cfg.edge.idle_timeout_seconds + KEEP_ALIVE_MARGIN_SECONDS


def deregistration_delay_seconds(cfg: PlatformConfig) -> int:
    """How long the ALB lets a deregistered gateway pod finish its requests: as long as the pod keeps serving after
    deregistration starts (its preStop sleep, then `workloads.gateway.drain_seconds`), and no longer, so the ALB
    never waits on a pod that has already exited (the pod's grace period adds a margin on top of the same value)."""
    from infra.workload_config import GatewayWorkloadConfig

    drain = cfg.workloads.gateway.drain_seconds if cfg.workloads is not None else GatewayWorkloadConfig.model_fields["drain_seconds"].default
    return ALB_DEREGISTRATION_SECONDS + int(drain)


def api_domain(cfg: PlatformConfig, region: RegionConfig) -> str:
    """The home region serves the configured name; another region serves `<region>.<name>` until global routing exists."""
    if region.name == cfg.home_region.name:
        return cfg.edge.domain_name
    return f"{region.name}.{cfg.edge.domain_name}"


def build_data_edge(cfg: PlatformConfig, region: RegionConfig, platform: RegionalPlatform) -> DataEdge:
    prefix = platform.prefix
    home = region.name == cfg.home_region.name
    in_region = pulumi.ResourceOptions(provider=platform.provider)
    network, cluster = platform.network, platform.cluster
    cluster_sg = [cluster.cluster_security_group_id]
    tags = {"llm-platform/layer": "data-edge"}

    data_key = EncryptionKey(
        f"{prefix}-data",
        EncryptionKeyArgs(description=f"{prefix}: Redis and Postgres at rest, their snapshots, secrets and Performance Insights", tags=tags),
        opts=in_region,
    )
    model_key = EncryptionKey(f"{prefix}-models", EncryptionKeyArgs(description=f"{prefix}: model weights bucket", tags=tags), opts=in_region)

    r = cfg.data.redis
    redis = None if not regional_redis_needed(cfg, region.name) else RedisCache(
        f"{prefix}-redis",
        RedisCacheArgs(
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            allowed_security_group_ids=cluster_sg,
            kms_key_arn=data_key.arn,
            engine=r.engine,
            engine_version=r.engine_version,
            node_type=r.node_type,
            replicas=r.replicas,
            cluster_mode=r.cluster_mode,
            shards=r.shards,
            snapshot_retention_days=r.snapshot_retention_days,
            snapshot_window=r.snapshot_window,
            maintenance_window=r.maintenance_window,
            maxmemory_policy=r.maxmemory_policy,
            final_snapshot=r.final_snapshot,
            log_kms_key_arn=cluster.logs_key_arn,
            log_retention_days=r.log_retention_days,
            tags=tags,
        ),
        opts=in_region,
    )

    postgres: PostgresDatabase | None = None
    master_password: pulumi.Output[str] | None = None
    if home:
        p = cfg.data.postgres
        if len(cfg.regions) > 1:
            # RDS refuses read replicas of a source whose password it manages; the global tier's ledger replicas
            # need a stack-generated one (rotated by replacing this resource).
            master_password = pulumi.Output.secret(
                random.RandomPassword(f"{prefix}-pg-master", length=40, special=False, opts=in_region).result
            )
        postgres = PostgresDatabase(
            f"{prefix}-postgres",
            PostgresDatabaseArgs(
                identifier=f"{prefix}-pg",
                vpc_id=network.vpc_id,
                subnet_ids=network.private_subnet_ids,
                allowed_security_group_ids=cluster_sg,
                kms_key_arn=data_key.arn,
                log_kms_key_arn=cluster.logs_key_arn,
                engine_version=p.engine_version,
                instance_class=p.instance_class,
                allocated_storage_gib=p.allocated_storage_gib,
                max_allocated_storage_gib=p.max_allocated_storage_gib,
                database_name=p.database_name,
                master_username=p.master_username,
                multi_az=p.multi_az,
                deletion_protection=p.deletion_protection,
                backup_retention_days=p.backup_retention_days,
                backup_window=p.backup_window,
                maintenance_window=p.maintenance_window,
                final_snapshot=p.final_snapshot,
                performance_insights_retention_days=p.performance_insights_retention_days,
                monitoring_interval_seconds=p.monitoring_interval_seconds,
                log_retention_days=p.log_retention_days,
                master_password=master_password,
                tags=tags,
            ),
            opts=in_region,
        )

    e = cfg.edge
    zone_id: pulumi.Input[str] | None = None
    if e.hosted_zone is not None:
        zone_id = hosted_zone_id(cfg, e.hosted_zone, platform.provider)
    edge = Edge(
        prefix,
        EdgeArgs(
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            target_security_group_id=cluster.cluster_security_group_id,
            domain_name=api_domain(cfg, region),
            hosted_zone_id=zone_id,
            # check_edge_fits_regions: an existing certificate is the home region's; other regions get their own.
            certificate_arn=e.certificate_arn if home else None,
            ssl_policy=e.ssl_policy,
            idle_timeout_seconds=e.idle_timeout_seconds,
            deregistration_delay_seconds=deregistration_delay_seconds(cfg),
            deletion_protection=e.deletion_protection,
            desync_mitigation_mode=e.desync_mitigation_mode,
            ingress_cidrs=e.ingress_cidrs,
            access_log_retention_days=e.access_log_retention_days,
            waf=WafArgs(
                log_kms_key_arn=cluster.logs_key_arn,
                mode=e.waf.mode,
                rate_limit_per_key=e.waf.rate_limit_per_key,
                rate_limit_per_ip=e.waf.rate_limit_per_ip,
                rate_limit_window_seconds=e.waf.rate_limit_window_seconds,
                anonymous_ip_list=e.waf.anonymous_ip_list,
                common_rules_to_count=e.waf.common_rules_to_count,
                known_bad_inputs_rules_to_count=e.waf.known_bad_inputs_rules_to_count,
                log_retention_days=e.waf.log_retention_days,
                log_allowed_requests=e.waf.log_allowed_requests,
            ),
            tags=tags,
        ),
        opts=in_region,
    )

    m = cfg.model_store
    model_bucket = ModelBucket(
        f"{prefix}-models",
        ModelBucketArgs(
            kms_key_arn=model_key.arn,
            noncurrent_version_retention_days=m.noncurrent_version_retention_days,
            force_destroy=m.force_destroy,
            tags=tags,
        ),
        opts=in_region,
    )
    return DataEdge(data_key=data_key, model_key=model_key, redis=redis, postgres=postgres, edge=edge, model_bucket=model_bucket,
                    postgres_master_password=master_password)


def export_data_edge(data_edge: DataEdge, key: str) -> None:
    """Stack outputs of one region (`key` is "" for the home region, "<region>:" otherwise). No secret values."""
    if data_edge.redis is not None:
        pulumi.export(f"{key}redisEndpoint", data_edge.redis.endpoint)
        pulumi.export(f"{key}redisPort", data_edge.redis.port)
        pulumi.export(f"{key}redisAuthSecretArn", data_edge.redis.auth_secret_arn)
    if data_edge.postgres is not None:
        pulumi.export(f"{key}databaseEndpoint", data_edge.postgres.address)
        pulumi.export(f"{key}databasePort", data_edge.postgres.port)
        pulumi.export(f"{key}databaseSecretArn", data_edge.postgres.secret_arn)
    pulumi.export(f"{key}albDnsName", data_edge.edge.alb_dns_name)
    pulumi.export(f"{key}targetGroupArn", data_edge.edge.target_group_arn)
    pulumi.export(f"{key}apiUrl", data_edge.edge.api_url)
    pulumi.export(f"{key}modelBucketName", data_edge.model_bucket.bucket_name)
    pulumi.export(f"{key}modelBucketReadPolicyArn", data_edge.model_bucket.read_policy_arn)
    pulumi.export(f"{key}modelAccessLogBucketName", data_edge.model_bucket.access_log_bucket_name)
