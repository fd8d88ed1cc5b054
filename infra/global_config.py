"""Tier config of the global tier: `llm-platform:global` (one API hostname, failover, shared state, replication).

Only a stack with several regions may carry this section, and such a stack must carry it: the cross-region pieces
(Route53 routing, Global Datastore, ledger replicas, image/weight replication) are built by `infra/global_tier.py`
from it. Secure and available defaults live here; `stacks/Pulumi.global.yaml` states the hostname and zone.

Consistency, in one place (README "Global tier" has the long form):
- `shared_state: global_datastore` — limits and quotas are exact across regions: every region's gateway writes its
  counters to the Global Datastore primary (home region); the secondary regions hold read-only, replicated copies
  (sub-second lag) that take over on failover. Costs one cross-region round trip per limit check outside the home region.
- `shared_state: regional_split` — each region keeps its own Redis and enforces every limit and quota in full on
  its own: no cross-region hop and no dependency on the home region, but the declared split is "each region grants
  100%", so a tenant spread over N regions can use up to N times its limit (the gateway has no per-region share yet).
- `ledger: primary_with_replicas` — usage records from every region are written to one Postgres primary
  (`ledger_primary_region`, the home region unless failed over); every other region holds an encrypted cross-region
  read replica. While the primary is unreachable the gateways buffer records on disk and replay them afterwards.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from infra.config import PlatformConfig

DNS_NAME = r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
# Route53 geolocation continent codes (API_GeoLocation).
CONTINENTS = ("AF", "AN", "AS", "EU", "OC", "NA", "SA")
# Regions Route53 health checkers run from; a check needs at least three of them.
SNS_TOPIC_ARN = r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}$"
# Route53 publishes health-check metrics in us-east-1 only: the region-down alarms live there.
ROUTE53_METRICS_REGION = "us-east-1"
HEALTH_CHECKER_REGIONS = ("us-east-1", "us-west-1", "us-west-2", "eu-west-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "sa-east-1")


class _Strict(BaseModel):
    # python-re: the DNS-name pattern needs a look-ahead, which pydantic's default Rust engine lacks.
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


class HealthCheckConfig(_Strict):
    """`llm-platform:global.health_check`: how Route53 decides a region is down."""

    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_.-]*$")] = "/health/ready"
    request_interval_seconds: Literal[10, 30] = Field(10, description="10 (fast) or 30 (standard) seconds between checks per checker")
    failure_threshold: Annotated[int, Field(ge=1, le=10, description="consecutive failures before a region is unhealthy")] = 3
    search_string: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        None, description="also require this text in the first 5120 bytes of the body (HTTPS_STR_MATCH); unset = status 2xx/3xx"
    )
    checker_regions: list[Literal[HEALTH_CHECKER_REGIONS]] | None = Field(  # type: ignore[valid-type]
        None, description="Route53 checker regions (at least 3); unset = all eight"
    )

    @field_validator("checker_regions")
    @classmethod
    def _three_checkers(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) < 3:
            raise ValueError(f"got {value}; allowed: at least 3 distinct regions of {', '.join(HEALTH_CHECKER_REGIONS)}")
        return value


class ResidencyRule(_Strict):
    """`llm-platform:global.data_residency[i]`: clients in these countries/continents are answered by `region` only."""

    region: str = Field(description="one of the stack's regions")
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(default_factory=list, description="ISO 3166-1 alpha-2 codes, e.g. DE")
    continents: list[Literal[CONTINENTS]] = Field(default_factory=list)  # type: ignore[valid-type]
    on_region_failure: Literal["refuse", "fallback"] = Field(
        "refuse",
        description="refuse: keep answering with the pinned region even when it is down (residency over availability); "
                    "fallback: when it is down these clients join the latency-routed pool of all healthy regions",
    )

    @model_validator(mode="after")
    def _something_pinned(self) -> ResidencyRule:
        if not self.countries and not self.continents:
            raise ValueError(f"countries: got none and no continents for region {self.region}; allowed: at least one country or continent")
        return self


class GlobalConfig(_Strict):
    """`llm-platform:global`: the cross-region layer of a multi-region stack."""

    api_hostname: Annotated[str, Field(pattern=DNS_NAME, description="the one API hostname clients use, e.g. api.llm.example.com")]
    route53_zone: Annotated[str, Field(pattern=DNS_NAME, description="public Route53 zone (name) holding api_hostname")]
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)  # type: ignore[arg-type]
    data_residency: list[ResidencyRule] = Field(default_factory=list, description="geolocation pins; everyone else is latency-routed")
    shared_state: Literal["global_datastore", "regional_split"] = "global_datastore"
    redis_primary_region: str | None = Field(
        None, description="global_datastore: region whose member takes the counters' writes; unset = home region. Set it "
                          "after promoting a Global Datastore member (docs/runbooks/region-failover.md) so every gateway follows"
    )
    ledger: Literal["primary_with_replicas"] = "primary_with_replicas"
    ledger_primary_region: str | None = Field(
        None, description="region whose Postgres takes the usage ledger's writes; unset = home region. Setting it to a "
                          "replica's region promotes that replica on the next `pulumi up` (docs/runbooks/region-failover.md)"
    )
    ledger_replica_instance_class: Annotated[str, Field(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")] | None = Field(
        None, description="instance class of the cross-region replicas; unset = the primary's"
    )
    ledger_replica_multi_az: bool = Field(True, description="replicas run Multi-AZ so a promoted replica is as available as the primary")
    redis_secondary_replicas: Annotated[int, Field(ge=0, le=5)] = Field(
        1, description="replicas per secondary Global Datastore member (>= 1: Multi-AZ inside each region)"
    )
    ecr_repository_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/-]{0,63}$")] = Field(
        "llm-platform", description="ECR repositories (from bootstrap) whose images are replicated to every other region"
    )
    replicate_model_bucket: bool = Field(True, description="replicate the home region's model bucket into every other region's bucket")
    alarm_topic_arns: list[Annotated[str, Field(pattern=SNS_TOPIC_ARN)]] = Field(
        default_factory=list,
        description="SNS topics the tier's alarms notify; an alarm notifies the topics of its own region (CloudWatch alarm "
                    "actions are same-region): at least one in us-east-1 (Route53 health-check alarms) and one in every "
                    "non-home region (ledger ReplicaLag alarms)",
    )
    ledger_replica_generations: dict[str, Annotated[int, Field(ge=1, le=99)]] = Field(
        default_factory=dict,
        description="region -> generation of its ledger replica (default 1). Bumping it re-creates the replica under a new "
                    "name from the current source: the only way back to a replica once it was promoted (the provider "
                    "refuses to re-add replicate_source_db to a standalone instance)",
    )
    # Lookups a run can take from config instead of asking AWS, so a `pulumi up` works while a region is lost
    # (every invoke goes to the API of the region it names, and Route53's control plane lives in us-east-1).
    account_id: Annotated[str, Field(pattern=r"^\d{12}$")] | None = Field(
        None, description="the AWS account id (ECR registry id); unset = ask STS in the home region"
    )
    availability_zones: dict[str, list[Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")]]] = Field(
        default_factory=dict, description="region -> AZ names to use (as `aws ec2 describe-availability-zones` lists them); unset = ask EC2"
    )
    route53_zone_ids: dict[Annotated[str, Field(pattern=DNS_NAME)], Annotated[str, Field(pattern=r"^Z[A-Z0-9]{1,31}$")]] = Field(
        default_factory=dict, description="public hosted zone name -> id (route53_zone and edge.hosted_zone); unset = ask Route53"
    )
    peering: bool = Field(True, description="peer every secondary VPC with the home VPC so gateways reach the shared Redis and ledger privately")

    @model_validator(mode="after")
    def _hostname_in_zone(self) -> GlobalConfig:
        if not self.api_hostname.endswith("." + self.route53_zone):
            raise ValueError(f"api_hostname: got {self.api_hostname!r}; allowed: a name under route53_zone {self.route53_zone!r}")
        return self


def check_global_fits_regions(cfg: PlatformConfig) -> None:
    """Cross-section checks: the section exists exactly when there are several regions, and names only those regions."""
    section = cfg.global_
    names = [r.name for r in cfg.regions]
    if len(names) > 1 and section is None:
        raise ValueError(f"global: got nothing with {len(names)} regions; allowed: a global section (api_hostname, route53_zone, ...)")
    if section is None:
        return
    if len(names) == 1:
        raise ValueError(f"global: got a global section with one region ({names[0]}); allowed: only in a stack with 2 or more regions")
    for i, rule in enumerate(section.data_residency):
        if rule.region not in names:
            raise ValueError(f"global.data_residency[{i}].region: got {rule.region!r}; allowed: {', '.join(names)}")
    seen: dict[str, str] = {}
    for rule in section.data_residency:
        for place in [*rule.countries, *rule.continents]:
            if place in seen and seen[place] != rule.region:
                raise ValueError(f"global.data_residency: got {place} pinned to both {seen[place]} and {rule.region}; allowed: one region per place")
            seen[place] = rule.region
    if section.redis_primary_region is not None:
        if section.redis_primary_region not in names:
            raise ValueError(f"global.redis_primary_region: got {section.redis_primary_region!r}; allowed: {', '.join(names)}")
        if section.shared_state != "global_datastore":
            raise ValueError(f"global.redis_primary_region: got {section.redis_primary_region!r} with shared_state {section.shared_state}; "
                             "allowed only with global_datastore (regional_split has no shared primary)")
    if section.ledger_primary_region is not None and section.ledger_primary_region not in names:
        raise ValueError(f"global.ledger_primary_region: got {section.ledger_primary_region!r}; allowed: {', '.join(names)}")
    for region in section.ledger_replica_generations:
        if region not in names[1:]:
            raise ValueError(f"global.ledger_replica_generations: got region {region!r}; allowed: a region with a ledger replica ({', '.join(names[1:])})")
    topic_regions = {arn.split(":")[3] for arn in section.alarm_topic_arns}
    for region in [ROUTE53_METRICS_REGION, *names[1:]]:
        if region not in topic_regions:
            raise ValueError(f"global.alarm_topic_arns: got {section.alarm_topic_arns or 'none'} (regions {sorted(topic_regions) or 'none'}); "
                             f"allowed: at least one SNS topic in {region} (alarms there would notify no one)")
    for region, azs in section.availability_zones.items():
        if region not in names:
            raise ValueError(f"global.availability_zones: got region {region!r}; allowed: {', '.join(names)}")
        wanted = next(r.az_count for r in cfg.regions if r.name == region)
        if len(set(azs)) < wanted or any(not az.startswith(region) for az in azs):
            raise ValueError(f"global.availability_zones.{region}: got {azs}; allowed: at least az_count ({wanted}) distinct AZ names of {region}")
    if section.shared_state == "global_datastore":
        redis = cfg.data.redis
        if len(names) > 3:
            raise ValueError(f"global.shared_state: got global_datastore with {len(names)} regions; allowed: at most 3 regions (a primary and 2 secondaries), or regional_split")
        if not re.fullmatch(r"cache\.(m[5-9]|r[5-9])[a-z]*\.[a-z0-9]+", redis.node_type):
            raise ValueError(f"data.redis.node_type: got {redis.node_type!r} with global.shared_state global_datastore; allowed: m5/r5 or newer (e.g. cache.r7g.large)")
        if not redis.cluster_mode and redis.replicas < 1:
            raise ValueError("data.redis.replicas: got 0 with global.shared_state global_datastore; allowed: >= 1 (a Global Datastore primary needs replication)")
    edge = getattr(cfg, "edge", None)
    if edge is not None:
        regional_names = {edge.domain_name, *(f"{n}.{edge.domain_name}" for n in names)}
        if section.api_hostname in regional_names:
            raise ValueError(f"global.api_hostname: got {section.api_hostname!r}, which a regional ALB already serves; allowed: a name other than edge.domain_name and <region>.edge.domain_name")
    edge_zone = getattr(edge, "hosted_zone", None)
    if edge_zone is not None and edge_zone != section.route53_zone and not re.search(r"\." + re.escape(section.route53_zone) + "$", edge_zone):
        raise ValueError(f"global.route53_zone: got {section.route53_zone!r}; allowed: the edge's zone {edge_zone!r} or a parent of it")


def regional_redis_needed(cfg: PlatformConfig, region: str) -> bool:
    """Does `region` get its own RedisCache? Not a secondary region of a Global Datastore: its member of the Global
    Datastore (built by the global tier) is its Redis, and a second, regional one would sit idle."""
    g = cfg.global_
    return g is None or g.shared_state != "global_datastore" or region == cfg.regions[0].name
