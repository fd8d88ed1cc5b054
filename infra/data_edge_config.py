"""Tier config of the data and edge layer: `llm-platform:data` (redis, postgres), `llm-platform:edge`, `llm-platform:model_store`.

Secure defaults live here (Multi-AZ, deletion protection, 7-day backups, WAF blocking); a tier file only states
where it differs (dev: one Redis node, single-AZ Postgres, WAF count mode). `infra/data_edge.py` maps these to
component args.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from components.edge import BODY_RULES, COMMON_RULE_SET, KNOWN_BAD_INPUTS_RULE_SET, MANAGED_RULE_NAMES, TLS_POLICIES
from infra.configkit import Strict, check_log_retention
from infra.provider_limits import check_performance_insights_retention

if TYPE_CHECKING:
    from infra.config import PlatformConfig

# ElastiCache engine versions with TLS "required" mode and AUTH rotation (Redis OSS >= 7.0, Valkey >= 7.2).
CACHE_ENGINE_VERSIONS: dict[str, tuple[str, ...]] = {"redis": ("7.0", "7.1"), "valkey": ("7.2", "8.0", "8.1")}
MIN_BACKUP_RETENTION_DAYS = 7
DAILY_WINDOW = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"
WEEKLY_WINDOW = r"^(mon|tue|wed|thu|fri|sat|sun):([01]\d|2[0-3]):[0-5]\d-(mon|tue|wed|thu|fri|sat|sun):([01]\d|2[0-3]):[0-5]\d$"
DNS_NAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
CERTIFICATE_ARN = r"^arn:aws[a-z-]*:acm:([a-z]{2}(-gov)?-[a-z]+-\d):\d{12}:certificate/[0-9a-f-]{36}$"


class RedisConfig(Strict):
    """ElastiCache replication group (`llm-platform:data.redis`)."""

    engine: Literal["redis", "valkey"] = Field("valkey", description="Valkey (Redis OSS fork, ~20% cheaper nodes) or Redis OSS")
    engine_version: str = Field("8.0", description="redis: 7.0/7.1; valkey: 7.2/8.0/8.1")
    node_type: Annotated[str, Field(pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")] = "cache.t4g.small"
    replicas: Annotated[int, Field(ge=0, le=5, description="replicas per shard; >= 1 turns on failover and Multi-AZ")] = 1
    cluster_mode: bool = Field(False, description="Redis Cluster (sharded); the gateway then uses a cluster client")
    shards: Annotated[int, Field(ge=1, le=500)] = 1
    snapshot_retention_days: Annotated[int, Field(ge=1, le=35)] = 7
    snapshot_window: Annotated[str, Field(pattern=DAILY_WINDOW)] = "03:00-04:00"
    maintenance_window: Annotated[str, Field(pattern=WEEKLY_WINDOW)] = "sun:05:00-sun:06:00"
    final_snapshot: bool = Field(True, description="snapshot the data when the replication group is deleted")
    log_retention_days: int = Field(30, description="slow-log and engine-log retention in CloudWatch")
    maxmemory_policy: Literal["volatile-lru", "volatile-lfu", "volatile-ttl", "allkeys-lru", "allkeys-lfu", "noeviction"] = Field(
        "volatile-lru", description="volatile-*: only keys with a TTL (cache entries) are evicted, never quota counters"
    )

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, value: int) -> int:
        return check_log_retention(value)

    @model_validator(mode="after")
    def _consistent(self) -> RedisConfig:
        allowed = CACHE_ENGINE_VERSIONS[self.engine]
        if self.engine_version not in allowed:
            raise ValueError(f"engine_version: got {self.engine_version!r} for engine {self.engine}; allowed: {', '.join(allowed)}")
        if not self.cluster_mode and self.shards != 1:
            raise ValueError(f"shards: got {self.shards}; allowed: 1 unless cluster_mode is true")
        return self


class PostgresConfig(Strict):
    """RDS for PostgreSQL (`llm-platform:data.postgres`)."""

    engine_version: Annotated[str, Field(pattern=r"^(1[4-8])(\.\d+)?$", description="major (17) or major.minor (17.4)")] = "17"
    instance_class: Annotated[str, Field(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")] = "db.t4g.medium"
    allocated_storage_gib: Annotated[int, Field(ge=20, le=65536)] = 20
    max_allocated_storage_gib: Annotated[int, Field(ge=20, le=65536, description="storage autoscaling ceiling")] = 100
    multi_az: bool = True
    deletion_protection: bool = True
    final_snapshot: bool = True
    backup_retention_days: Annotated[int, Field(ge=1, le=35)] = MIN_BACKUP_RETENTION_DAYS
    allow_short_backup_retention: bool = Field(
        False, description=f"must be true to keep backups under {MIN_BACKUP_RETENTION_DAYS} days (a deliberate dev-only choice)"
    )
    backup_window: Annotated[str, Field(pattern=DAILY_WINDOW)] = "03:00-04:00"
    maintenance_window: Annotated[str, Field(pattern=WEEKLY_WINDOW)] = "sun:05:00-sun:06:00"
    performance_insights_retention_days: int = Field(7, description="7 (free), 31 x 1-23 months, or 731")
    monitoring_interval_seconds: Literal[1, 5, 10, 15, 30, 60] = 60
    log_retention_days: int = 30
    database_name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")] = "llmplatform"
    master_username: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")] = "llmadmin"

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, value: int) -> int:
        return check_log_retention(value)

    @field_validator("performance_insights_retention_days")
    @classmethod
    def _pi_retention(cls, value: int) -> int:
        return check_performance_insights_retention(value)

    @field_validator("master_username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in ("postgres", "rdsadmin", "admin", "root"):
            raise ValueError(f"got {value!r}; reserved by RDS or PostgreSQL, choose another name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PostgresConfig:
        if self.backup_retention_days < MIN_BACKUP_RETENTION_DAYS and not self.allow_short_backup_retention:
            raise ValueError(
                f"backup_retention_days: got {self.backup_retention_days}; allowed: >= {MIN_BACKUP_RETENTION_DAYS} "
                "(set allow_short_backup_retention: true to accept less, e.g. in dev)"
            )
        if self.max_allocated_storage_gib < self.allocated_storage_gib:
            raise ValueError(
                f"max_allocated_storage_gib: got {self.max_allocated_storage_gib}; allowed: >= allocated_storage_gib ({self.allocated_storage_gib})"
            )
        return self


class DataConfig(Strict):
    """`llm-platform:data`: the gateway's Redis and Postgres."""

    redis: RedisConfig = Field(default_factory=RedisConfig)  # type: ignore[arg-type]
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)  # type: ignore[arg-type]


def _rules_of(group: str, names: list[str]) -> list[str]:
    """WAF ignores an override naming no rule of the group (the rule keeps blocking): refuse unknown names."""
    for name in names:
        if name not in MANAGED_RULE_NAMES[group]:
            raise ValueError(f"got {name!r}; allowed: rules of {group}: {', '.join(MANAGED_RULE_NAMES[group])}")
    return names


class WafConfig(Strict):
    """`llm-platform:edge.waf`: the WebACL in front of the ALB."""

    mode: Literal["count", "block"] = Field("block", description="count: record only (tuning); block: enforce")
    rate_limit_per_key: Annotated[int, Field(ge=10, le=2_000_000_000, description="requests per API key per window (flood backstop; the gateway enforces quotas)")] = 30_000
    rate_limit_per_ip: Annotated[int, Field(ge=10, le=2_000_000_000, description="requests per source IP per window (many clients share one NAT address)")] = 150_000
    rate_limit_window_seconds: Literal[60, 120, 300, 600] = 300
    anonymous_ip_list: bool = Field(False, description="also block VPN/Tor/hosting-provider source IPs")
    common_rules_to_count: list[str] = Field(
        default_factory=lambda: list(BODY_RULES[COMMON_RULE_SET]),
        description="AWSManagedRulesCommonRuleSet rules set to count: body rules that fire on ordinary prompts",
    )
    known_bad_inputs_rules_to_count: list[str] = Field(
        default_factory=lambda: list(BODY_RULES[KNOWN_BAD_INPUTS_RULE_SET]),
        description="AWSManagedRulesKnownBadInputsRuleSet rules set to count: body rules that fire on prompts quoting exploits",
    )
    log_retention_days: int = 90
    log_allowed_requests: bool = Field(False, description="log every request, not only blocked/counted ones (costly at scale)")

    @field_validator("common_rules_to_count")
    @classmethod
    def _size_rule_counted(cls, value: list[str]) -> list[str]:
        if "SizeRestrictions_BODY" not in value:
            raise ValueError(f"got {value}; must include SizeRestrictions_BODY (its 8 KB limit blocks ordinary prompts; edge.max_body_bytes is the limit)")
        return _rules_of(COMMON_RULE_SET, value)

    @field_validator("known_bad_inputs_rules_to_count")
    @classmethod
    def _known_bad_inputs_rules(cls, value: list[str]) -> list[str]:
        return _rules_of(KNOWN_BAD_INPUTS_RULE_SET, value)

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, value: int) -> int:
        return check_log_retention(value)


class EdgeConfig(Strict):
    """`llm-platform:edge`: API host name, TLS, ALB and WAF."""

    domain_name: Annotated[str, Field(pattern=DNS_NAME, max_length=253, description="API host name, e.g. api.llm.example.com")]
    hosted_zone: Annotated[str, Field(pattern=DNS_NAME, max_length=253)] | None = Field(
        None, description="public Route53 zone (name) holding domain_name: certificate validation + alias record"
    )
    certificate_arn: Annotated[str, Field(pattern=CERTIFICATE_ARN)] | None = Field(
        None, description="existing ACM certificate in the home region; else one is requested and DNS-validated"
    )
    ssl_policy: str = TLS_POLICIES[0]
    idle_timeout_seconds: Annotated[int, Field(ge=60, le=3600, description="long enough for pauses in streamed completions; the gateway's keep-alive is set above it")] = 300
    max_body_bytes: Annotated[int, Field(ge=1024, le=67_108_864, description="largest request body the gateway accepts (413 above); it buffers each body in memory")] = 1_048_576
    deletion_protection: bool = True
    desync_mitigation_mode: Literal["defensive", "strictest"] = "defensive"
    ingress_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], description="IPv4 CIDRs that may reach the ALB on 80/443")
    access_log_retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    waf: WafConfig = Field(default_factory=WafConfig)  # type: ignore[arg-type]

    @field_validator("ssl_policy")
    @classmethod
    def _tls_policy(cls, value: str) -> str:
        if value not in TLS_POLICIES:
            raise ValueError(f"got {value!r}; allowed (TLS 1.2+ only): {', '.join(TLS_POLICIES)}")
        return value

    @field_validator("ingress_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("got []; allowed: at least one IPv4 CIDR (0.0.0.0/0 for a public API)")
        for cidr in value:
            try:
                ipaddress.IPv4Network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"got {cidr!r}; allowed: IPv4 CIDRs such as 203.0.113.0/24") from None
        return value

    @model_validator(mode="after")
    def _tls_source(self) -> EdgeConfig:
        if self.hosted_zone is None and self.certificate_arn is None:
            raise ValueError("hosted_zone: got none and no certificate_arn; allowed: a Route53 zone name, a certificate ARN, or both")
        if self.hosted_zone is not None and not (self.domain_name == self.hosted_zone or self.domain_name.endswith("." + self.hosted_zone)):
            raise ValueError(f"domain_name: got {self.domain_name!r}; allowed: a name inside hosted_zone {self.hosted_zone!r}")
        return self


class ModelStoreConfig(Strict):
    """`llm-platform:model_store`: the S3 bucket model weights are staged in."""

    noncurrent_version_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    force_destroy: bool = Field(False, description="let `pulumi destroy` delete a bucket that still holds weights")


def check_edge_fits_regions(cfg: PlatformConfig) -> None:
    """Cross-section checks: an existing certificate only serves its own region; extra regions need the zone."""
    edge = cfg.edge
    if edge is None or edge.certificate_arn is None:
        return
    match = re.match(CERTIFICATE_ARN, edge.certificate_arn)
    cert_region = match.group(1) if match else None
    if cert_region != cfg.home_region.name:
        raise ValueError(
            f"edge.certificate_arn: got a certificate in {cert_region}; allowed: one in the home region {cfg.home_region.name} "
            "(an ALB can only use certificates of its own region)"
        )
    if len(cfg.regions) > 1 and edge.hosted_zone is None:
        raise ValueError(
            f"edge.hosted_zone: got none with {len(cfg.regions)} regions; allowed: a Route53 zone, so every region's ALB gets a certificate"
        )
