"""`GlobalRouting`: one API hostname in Route53 for every region, latency-routed, health-checked, optionally pinned.

Every region gets a Route53 health check that requests `https://<its ALB>/health/ready` from Route53's checkers
around the world; a region whose check fails `failure_threshold` times in a row drops out of DNS answers (and
comes back by itself once it passes again). Clients are sent to the lowest-latency healthy region.

Data residency (optional) uses geolocation records, because latency and geolocation records cannot share a name:
- `<api_hostname>` then holds geolocation records: one per pinned country/continent, aliased to its region's ALB,
  plus the default record (`*`, every location not pinned) aliased to `latency.<api_hostname>`;
- `latency.<api_hostname>` holds the latency records, one per region, each with its health check.
Route53 answers with the most specific match (country, then continent, then default). A pin with
`on_region_failure="refuse"` has no health check: its clients keep being sent to their region even while it is
down (they get errors, never another region: residency over availability). With `"fallback"` the pin carries the
region's health check, so while the region is down its clients fall through to the default record, i.e. the
latency-routed pool of all healthy regions. Without residency rules, `<api_hostname>` holds the latency records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Sequence

import pulumi
import pulumi_aws as aws

from components.certificate import dns_validated_certificates

CONTINENTS = ("AF", "AN", "AS", "EU", "OC", "NA", "SA")
LATENCY_LABEL = "latency"


@dataclass
class RegionalEndpoint:
    region: str
    """AWS region of the ALB (the latency record's region)."""
    alb_dns_name: pulumi.Input[str]
    alb_zone_id: pulumi.Input[str]
    """The ALB's canonical hosted zone (alias target zone)."""
    provider: aws.Provider | None = None
    """The region's explicit AWS provider (for its certificate); needed with `https_listener_arn`."""
    https_listener_arn: pulumi.Input[str] | None = None
    """The ALB's HTTPS listener: gets a certificate for the API hostname (SNI), so clients routed here by the
    global name get a matching certificate. None when the listener's certificate already covers it."""


@dataclass
class HealthCheckSettings:
    path: str = "/health/ready"
    """Path requested over HTTPS on port 443 (the gateway's readiness: not draining, a model backend healthy)."""
    request_interval_seconds: int = 10
    """10 (fast) or 30 seconds between requests of each checker."""
    failure_threshold: int = 3
    """Consecutive failed (or passed) checks that flip the status."""
    search_string: str | None = None
    """Also require this text in the body (HTTPS_STR_MATCH); None checks the status code (2xx/3xx) only."""
    checker_regions: Sequence[str] | None = None
    """Route53 checker regions (at least 3); None = all."""

    def __post_init__(self) -> None:
        if self.request_interval_seconds not in (10, 30):
            raise ValueError(f"request_interval_seconds: got {self.request_interval_seconds}; allowed: 10, 30")
        if not 1 <= self.failure_threshold <= 10:
            raise ValueError(f"failure_threshold: got {self.failure_threshold}; allowed: 1 to 10")
        if not self.path.startswith("/"):
            raise ValueError(f"path: got {self.path!r}; allowed: a path starting with /")
        if self.checker_regions is not None and len(set(self.checker_regions)) < 3:
            raise ValueError(f"checker_regions: got {list(self.checker_regions)}; allowed: at least 3 regions")


@dataclass
class ResidencyPin:
    region: str
    """Region that answers for these locations."""
    countries: Sequence[str] = ()
    """ISO 3166-1 alpha-2 country codes."""
    continents: Sequence[str] = ()
    """Route53 continent codes: AF, AN, AS, EU, OC, NA, SA."""
    on_region_failure: Literal["refuse", "fallback"] = "refuse"
    """refuse: stay pinned while the region is down; fallback: join the latency pool of healthy regions meanwhile."""


@dataclass
class GlobalRoutingArgs:
    zone_id: pulumi.Input[str]
    """Public Route53 hosted zone holding `api_hostname`."""
    api_hostname: str
    """The one API hostname clients use (every region's certificate must cover it)."""
    endpoints: Sequence[RegionalEndpoint]
    """One per region, home region first."""
    health_check: HealthCheckSettings = field(default_factory=HealthCheckSettings)
    residency: Sequence[ResidencyPin] = ()
    metrics_provider: aws.Provider | None = None
    """An AWS provider for us-east-1, where Route53 publishes health-check metrics: gets one alarm per region
    (`HealthCheckStatus` < 1 for a minute). None: no alarms."""
    alarm_actions: Sequence[str] = ()
    """SNS topic ARNs (in us-east-1) notified when a region goes down and again when it recovers."""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", self.api_hostname):
            raise ValueError(f"api_hostname: got {self.api_hostname!r}; allowed: a lowercase DNS name such as api.example.com")
        regions = [e.region for e in self.endpoints]
        if len(regions) < 2 or len(set(regions)) != len(regions):
            raise ValueError(f"endpoints: got regions {regions}; allowed: two or more distinct regions")
        for i, pin in enumerate(self.residency):
            if pin.region not in regions:
                raise ValueError(f"residency[{i}].region: got {pin.region!r}; allowed: {', '.join(regions)}")
            if not pin.countries and not pin.continents:
                raise ValueError(f"residency[{i}]: got no countries and no continents; allowed: at least one")
            for code in pin.countries:
                if not re.fullmatch(r"[A-Z]{2}", code):
                    raise ValueError(f"residency[{i}].countries: got {code!r}; allowed: ISO 3166-1 alpha-2 codes such as DE")
            for code in pin.continents:
                if code not in CONTINENTS:
                    raise ValueError(f"residency[{i}].continents: got {code!r}; allowed: {', '.join(CONTINENTS)}")
            if pin.on_region_failure not in ("refuse", "fallback"):
                raise ValueError(f"residency[{i}].on_region_failure: got {pin.on_region_failure!r}; allowed: refuse, fallback")


class GlobalRouting(pulumi.ComponentResource):
    """Route53 health checks and records for one API hostname over several regional ALBs."""

    health_check_ids: dict[str, pulumi.Output[str]]
    certificate_arns: dict[str, pulumi.Output[str]]
    """Per region: the API-hostname certificate added to its HTTPS listener."""
    latency_hostname: str
    """Name holding the latency records (the API hostname itself unless residency rules are set)."""
    api_url: str

    def __init__(self, name: str, args: GlobalRoutingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:GlobalRouting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        hc = args.health_check
        by_region = {e.region: e for e in args.endpoints}

        checks: dict[str, aws.route53.HealthCheck] = {}
        for endpoint in args.endpoints:
            checks[endpoint.region] = aws.route53.HealthCheck(
                f"{name}-{endpoint.region}",
                type="HTTPS_STR_MATCH" if hc.search_string else "HTTPS",
                fqdn=endpoint.alb_dns_name,
                port=443,
                resource_path=hc.path,
                search_string=hc.search_string,
                # SNI with the ALB's own name: the listener answers with its default certificate, which Route53
                # does not validate; the request still reaches the gateway's readiness handler.
                enable_sni=True,
                request_interval=hc.request_interval_seconds,
                failure_threshold=hc.failure_threshold,
                measure_latency=True,
                regions=list(hc.checker_regions) if hc.checker_regions else None,
                tags={**args.tags, "Name": f"{args.api_hostname} {endpoint.region}"},
                opts=child,
            )
        self.health_check_ids = {region: check.id for region, check in checks.items()}

        if args.metrics_provider is not None:
            for region, check in checks.items():
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{region}-down",
                    alarm_description=f"{args.api_hostname}: Route53 sees {region} as down ({hc.path} failing); it no longer "
                                      "receives traffic. Runbook: docs/runbooks/region-failover.md",
                    namespace="AWS/Route53",
                    metric_name="HealthCheckStatus",
                    dimensions={"HealthCheckId": check.id},
                    statistic="Minimum",
                    period=60,
                    evaluation_periods=1,
                    threshold=1,
                    comparison_operator="LessThanThreshold",
                    # No data from Route53 means no checker reached a verdict: treat it as down, not as fine.
                    treat_missing_data="breaching",
                    alarm_actions=list(args.alarm_actions),
                    ok_actions=list(args.alarm_actions),
                    tags=args.tags,
                    opts=pulumi.ResourceOptions(parent=self, provider=args.metrics_provider),
                )

        self.certificate_arns = self._listener_certificates(name, args, [e for e in args.endpoints if e.https_listener_arn is not None])

        self.latency_hostname = f"{LATENCY_LABEL}.{args.api_hostname}" if args.residency else args.api_hostname
        latency_records: list[aws.route53.Record] = []
        for endpoint in args.endpoints:
            latency_records.append(
                aws.route53.Record(
                    f"{name}-latency-{endpoint.region}",
                    zone_id=args.zone_id,
                    name=self.latency_hostname,
                    type="A",
                    set_identifier=endpoint.region,
                    latency_routing_policies=[{"region": endpoint.region}],
                    health_check_id=checks[endpoint.region].id,
                    # Also drops the region when its ALB has no healthy target, before the health check notices.
                    aliases=[{"name": endpoint.alb_dns_name, "zone_id": endpoint.alb_zone_id, "evaluate_target_health": True}],
                    opts=child,
                )
            )

        if args.residency:
            for pin in args.residency:
                endpoint = by_region[pin.region]
                fallback = pin.on_region_failure == "fallback"
                places: list[tuple[str, aws.route53.RecordGeolocationRoutingPolicyArgsDict]] = []
                places += [(f"country-{c}", {"country": c}) for c in pin.countries]
                places += [(f"continent-{c}", {"continent": c}) for c in pin.continents]
                for label, policy in places:
                    aws.route53.Record(
                        f"{name}-geo-{label.lower()}",
                        zone_id=args.zone_id,
                        name=args.api_hostname,
                        type="A",
                        set_identifier=f"{pin.region}-{label}",
                        geolocation_routing_policies=[policy],
                        health_check_id=checks[pin.region].id if fallback else None,
                        aliases=[{"name": endpoint.alb_dns_name, "zone_id": endpoint.alb_zone_id, "evaluate_target_health": fallback}],
                        opts=child,
                    )
            aws.route53.Record(
                f"{name}-geo-default",
                zone_id=args.zone_id,
                name=args.api_hostname,
                type="A",
                set_identifier="default-latency",
                geolocation_routing_policies=[{"country": "*"}],
                aliases=[{"name": self.latency_hostname, "zone_id": args.zone_id, "evaluate_target_health": True}],
                opts=pulumi.ResourceOptions(parent=self, depends_on=latency_records),
            )

        self.api_url = f"https://{args.api_hostname}"
        self.register_outputs({"api_url": self.api_url, "health_check_ids": self.health_check_ids})

    def _listener_certificates(self, name: str, args: GlobalRoutingArgs, endpoints: list[RegionalEndpoint]) -> dict[str, pulumi.Output[str]]:
        """An ACM certificate for the API hostname in each endpoint's region, added to its HTTPS listener (SNI); all of
        them DNS-validated through one record (ACM asks every region for the same CNAME)."""
        if not endpoints:
            return {}
        for endpoint in endpoints:
            if endpoint.provider is None:
                raise ValueError(f"endpoints[{endpoint.region}].provider: got None with an https_listener_arn; allowed: the region's aws.Provider")
        in_region = {e.region: pulumi.ResourceOptions(parent=self, provider=e.provider) for e in endpoints}
        certificate_arns = dns_validated_certificates(
            f"{name}-cert",
            f"{name}-cert-validation",
            domain_name=args.api_hostname,
            zone_id=args.zone_id,
            placements=in_region,
            tags=args.tags,
            record_opts=pulumi.ResourceOptions(parent=self),
        )
        for endpoint in endpoints:
            aws.lb.ListenerCertificate(
                f"{name}-cert-{endpoint.region}",
                listener_arn=endpoint.https_listener_arn,
                certificate_arn=certificate_arns[endpoint.region],
                opts=in_region[endpoint.region],
            )
        return certificate_arns
