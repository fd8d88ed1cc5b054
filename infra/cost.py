"""Monthly cost estimate of a rendered stack, from the versioned price table.

Every priced AWS resource type has one rule here, keyed by its pulumi-aws type token, that turns the resource's
rendered inputs into cost lines. Each line has two figures: at the node groups' desired size (what an idle
platform costs) and with every node group at its max size (the ceiling the autoscaler can reach). Resources that
cost nothing (VPCs, subnets, IAM, security groups, Kubernetes objects...) are listed as free; any other type shows
up as unpriced, so a gap in coverage is visible instead of silently under-counting.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from infra.instances import INSTANCE_SPECS
from infra.pins import eks_support
from infra.pricelist import PriceError, PriceTable, RegionPrices, load_price_table
from infra.render import DEFAULT_REGION, RenderedResource, Rendering, unwrap_secrets


@dataclass(frozen=True)
class CostLine:
    component: str
    resource_type: str
    resource_name: str
    region: str
    monthly_desired: float
    monthly_max: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "type": self.resource_type,
            "name": self.resource_name,
            "region": self.region,
            "monthly_desired": round(self.monthly_desired, 2),
            "monthly_max": round(self.monthly_max, 2),
            "detail": self.detail,
        }


@dataclass
class CostEstimate:
    stack: str
    lines: list[CostLine]
    price_source: str
    price_retrieved: str
    price_version: str
    hours_per_month: float
    notes: list[str] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    region_bases: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    """The stack's regions, home first (the order the estimate is printed in)."""
    errors: list[str] = field(default_factory=list)
    """Resources that could not be priced (a price missing from the table): left out of the totals."""

    @property
    def total_desired(self) -> float:
        return round(sum(line.monthly_desired for line in self.lines), 2)

    @property
    def total_max(self) -> float:
        return round(sum(line.monthly_max for line in self.lines), 2)

    def by_component(self) -> list[tuple[str, float, float]]:
        return [(name, d, m) for _, name, d, m in self.by_region_component()]

    def by_region_component(self) -> list[tuple[str, str, float, float]]:
        """(region, component, desired, max), home region first, components in reading order within a region."""
        totals: dict[tuple[str, str], list[float]] = {}
        regions = list(self.regions)
        for line in self.lines:
            if line.region not in regions:
                regions.append(line.region)
            acc = totals.setdefault((line.region, line.component), [0.0, 0.0])
            acc[0] += line.monthly_desired
            acc[1] += line.monthly_max

        def order(key: tuple[str, str]) -> tuple[int, int, str]:
            region, component = key
            kind = component.split(" ", 1)[0]
            rank = COMPONENT_ORDER.index(kind) if kind in COMPONENT_ORDER else len(COMPONENT_ORDER)
            return regions.index(region), rank, component

        return [(region, name, round(d, 2), round(m, 2)) for (region, name), (d, m) in sorted(totals.items(), key=lambda kv: order(kv[0]))]

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": "USD",
            "period": "month",
            "hours_per_month": self.hours_per_month,
            "total_monthly_desired": self.total_desired,
            "total_monthly_max": self.total_max,
            "components": [
                {"region": region, "component": name, "monthly_desired": d, "monthly_max": m}
                for region, name, d, m in self.by_region_component()
            ],
            "lines": [line.to_json() for line in self.lines],
            "price_table": {"source": self.price_source, "retrieved": self.price_retrieved, "version": self.price_version},
            "region_bases": self.region_bases,
            "notes": self.notes,
            "unpriced": self.unpriced,
            "errors": self.errors,
        }


# Reading order of components in the printed estimate: traffic path first, then compute, data, the rest.
COMPONENT_ORDER = ["GlobalRouting", "Edge", "Network", "EksCluster", "NodeGroup", "GatewayWorkload", "RedisCache",
                   "GlobalDatastore", "PostgresDatabase", "PostgresReplica", "ModelBucket", "EncryptionKey"]

# Types that have no charge of their own (or whose charge is carried by another line, e.g. flow logs by the log group).
FREE_TYPE_PREFIXES = (
    "pulumi:", "kubernetes:", "random:", "tls:", "llm-platform:",
    "aws:iam/", "aws:eks/addon:", "aws:eks/accessEntry:", "aws:eks/accessPolicyAssociation:",
    "aws:eks/podIdentityAssociation:", "aws:ec2/vpc:", "aws:ec2/subnet:", "aws:ec2/routeTable", "aws:ec2/route:",
    "aws:ec2/internetGateway:", "aws:ec2/securityGroup", "aws:vpc/securityGroup", "aws:ec2/defaultSecurityGroup:",
    "aws:ec2/defaultNetworkAcl:", "aws:ec2/defaultRouteTable:", "aws:ec2/networkAcl", "aws:ec2/launchTemplate:",
    "aws:ec2/flowLog:", "aws:ec2/vpcEndpointRouteTableAssociation:", "aws:ec2/mainRouteTableAssociation:",
    "aws:kms/alias:", "aws:secretsmanager/secretVersion:", "aws:secretsmanager/secretPolicy:",
    "aws:s3/bucket", "aws:lb/listener", "aws:lb/targetGroup", "aws:acm/", "aws:route53/record:",
    "aws:wafv2/webAclAssociation:", "aws:wafv2/webAclLoggingConfiguration:", "aws:elasticache/subnetGroup:",
    "aws:elasticache/parameterGroup:", "aws:elasticache/user", "aws:rds/subnetGroup:", "aws:rds/parameterGroup:",
    "aws:rds/clusterParameterGroup:", "aws:ecr/lifecyclePolicy:", "aws:ecr/repositoryPolicy:",
    "aws:ecr/replicationConfiguration:", "aws:cloudwatch/logResourcePolicy:", "aws:servicequotas/",
    "aws:elasticache/globalReplicationGroup:", "aws:autoscaling/tag:", "aws:ec2/vpcPeeringConnection",
    "aws:ecr/repositoryCreationTemplate:", "aws:rds/globalCluster:",
)
# Resources that move data between regions: their traffic is billed as inter-region transfer (a note, by volume).
CROSS_REGION_TYPES = ("aws:elasticache/globalReplicationGroup:GlobalReplicationGroup", "aws:ec2/vpcPeeringConnection:VpcPeeringConnection",
                      "aws:s3/bucketReplicationConfig:BucketReplicationConfig", "aws:ecr/replicationConfiguration:ReplicationConfiguration")
# Bucket types carry a cost line; their sub-resources (policies, encryption, versioning...) are free.
BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")


@dataclass
class _Context:
    rendering: Rendering
    prices: PriceTable
    by_urn: dict[str, RenderedResource]
    notes: set[str]
    on: date = field(default_factory=date.today)
    """The day whose EKS support status prices the control plane (extended support costs 6x standard)."""

    @property
    def hours(self) -> float:
        return self.prices.hours_per_month

    def region_prices(self, resource: RenderedResource) -> RegionPrices:
        return self.prices.region(self.region_name(resource))

    def region_name(self, resource: RenderedResource) -> str:
        region = self.rendering.region_of(resource)
        if region:
            return region
        # Kubernetes objects reach AWS through a cluster, not an AWS provider: the region named in their
        # provider (e.g. `k8s-eu-west-1`), else the home region.
        regions = region_order(self.rendering)
        for name in regions:
            if resource.provider and name in resource.provider:
                return name
        return regions[0] if regions else DEFAULT_REGION

    def children_of(self, urn: str | None) -> list[RenderedResource]:
        return [r for r in self.rendering.resources if r.parent == urn]


Rule = Callable[[RenderedResource, _Context], Iterable[tuple[float, float, str]]]


def _num(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# --- rules ---------------------------------------------------------------------------------------------------

def _node_group(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    scaling = r.inputs.get("scalingConfig") or {}
    desired, maximum = _num(scaling.get("desiredSize")), _num(scaling.get("maxSize"))
    launch_templates = [c for c in ctx.children_of(r.parent) if c.type == "aws:ec2/launchTemplate:LaunchTemplate"]
    types = list(r.inputs.get("instanceTypes") or [])
    if not types:
        types = [lt.inputs["instanceType"] for lt in launch_templates if lt.inputs.get("instanceType")]
    if not types:
        raise PriceError(f"{r.type} {r.name}: no instance type in its inputs or launch template")
    itype = str(types[0])
    prices = ctx.region_prices(r)
    hourly = prices.rate("ec2_hour", itype)
    spot = str(r.inputs.get("capacityType", "ON_DEMAND")).upper() == "SPOT"
    capacity = "on-demand"
    if spot:
        discount = ctx.prices.spot_discount(itype)
        hourly *= 1 - discount
        capacity = f"spot (on-demand less {discount:.0%})"
        ctx.notes.add("Spot node prices are on-demand less the table's typical Spot discount; real Spot prices vary by hour and AZ.")
    if len(types) > 1:
        ctx.notes.add("A node group with several instance types is priced at its first (preferred) type.")
    gpus = INSTANCE_SPECS[itype].gpus if itype in INSTANCE_SPECS else 0
    gpu_text = f", {gpus} GPU each" if gpus else ""
    yield (desired * hourly * ctx.hours, maximum * hourly * ctx.hours,
           f"{itype} {capacity} @ ${hourly:.4f}/h{gpu_text}; desired {desired:g}, max {maximum:g} nodes")
    disk_gib = _root_volume_gib(launch_templates) if launch_templates else _num(r.inputs.get("diskSize"), 20.0)
    volume_type = _root_volume_type(launch_templates)
    per_node = disk_gib * prices.rate("ebs_gb_month", volume_type)
    yield (desired * per_node, maximum * per_node, f"root volumes: {disk_gib:g} GiB {volume_type} per node @ ${per_node:.2f}/month")


def _root_volume_gib(launch_templates: list[RenderedResource]) -> float:
    for lt in launch_templates:
        for mapping in lt.inputs.get("blockDeviceMappings") or []:
            size = (mapping.get("ebs") or {}).get("volumeSize")
            if size is not None:
                return _num(size)
    return 20.0  # the EKS managed node group default


def _root_volume_type(launch_templates: list[RenderedResource]) -> str:
    for lt in launch_templates:
        for mapping in lt.inputs.get("blockDeviceMappings") or []:
            vtype = (mapping.get("ebs") or {}).get("volumeType")
            if vtype:
                return str(vtype)
    return "gp3"


def _flat(monthly: float, detail: str) -> Iterable[tuple[float, float, str]]:
    yield monthly, monthly, detail


def _eks_cluster(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    version = str(r.inputs.get("version") or "")
    support = eks_support(version, ctx.on)
    if support in ("extended", "ended"):
        # Past standard support EKS bills the extended rate (infra/pins.py EKS_VERSIONS, the AWS calendar).
        rate = ctx.region_prices(r).rate("eks_extended_support_cluster_hour")
        ctx.notes.add(f"Kubernetes {version} is past EKS standard support on {ctx.on.isoformat()}: the control plane is "
                      "billed at the extended-support rate; upgrade cluster.version to a standard-support version.")
        return _flat(rate * ctx.hours, f"control plane {version} @ ${rate:.2f}/h (extended support)")
    rate = ctx.region_prices(r).rate("eks_cluster_hour")
    return _flat(rate * ctx.hours, f"control plane {version} @ ${rate:.2f}/h ({support} support)".replace("(unknown support)", "(standard support assumed)"))


def _nat_gateway(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    prices = ctx.region_prices(r)
    rate = prices.rate("nat_gateway_hour")
    ctx.notes.add(f"NAT gateways also charge ${prices.rate('nat_gateway_gb'):.3f}/GB processed (image pulls and model "
                  "downloads go through them unless served by VPC endpoints).")
    return _flat(rate * ctx.hours, f"NAT gateway @ ${rate:.3f}/h")


def _eip(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    rate = ctx.region_prices(r).rate("public_ipv4_hour")
    return _flat(rate * ctx.hours, f"public IPv4 address @ ${rate:.3f}/h")


def _vpc_endpoint(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    if str(r.inputs.get("vpcEndpointType", "Gateway")) != "Interface":
        return _flat(0.0, "gateway endpoint (no charge)")
    azs = max(1, len(r.inputs.get("subnetIds") or []))
    rate = ctx.region_prices(r).rate("vpc_interface_endpoint_az_hour")
    region = ctx.region_name(r)
    service = str(r.inputs.get("serviceName") or r.name).removeprefix(f"com.amazonaws.{region}.")
    return _flat(azs * rate * ctx.hours, f"interface endpoint {service} in {azs} AZ(s) @ ${rate:.3f}/h each")


def _load_balancer(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    kind = str(r.inputs.get("loadBalancerType", "application"))
    prices = ctx.region_prices(r)
    if kind == "network":
        rate = prices.rate("nlb_hour")
        return _flat(rate * ctx.hours, f"network load balancer @ ${rate:.4f}/h (+ NLCUs by traffic)")
    rate = prices.rate("alb_hour")
    ctx.notes.add(f"ALBs also charge ${prices.rate('alb_lcu_hour'):.3f} per LCU-hour, by traffic (new connections, "
                  "active connections, bytes, rule evaluations).")
    return _flat(rate * ctx.hours, f"application load balancer @ ${rate:.4f}/h (+ LCUs by traffic)")


def _web_acl(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    prices = ctx.region_prices(r)
    rules = len(r.inputs.get("rules") or [])
    monthly = prices.rate("waf_web_acl_month") + rules * prices.rate("waf_rule_month")
    ctx.notes.add(f"WAF also charges ${prices.rate('waf_million_requests'):.2f} per million requests inspected.")
    return _flat(monthly, f"web ACL ${prices.rate('waf_web_acl_month'):.2f} + {rules} rule(s) × ${prices.rate('waf_rule_month'):.2f}")


def _replication_group(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    node_type = r.inputs.get("nodeType")
    engine = str(r.inputs.get("engine") or "redis").lower()
    if not node_type and r.inputs.get("globalReplicationGroupId"):
        # A secondary of a Global Datastore inherits the primary's node type and engine.
        primaries = [p for p in ctx.rendering.of_type(r.type) if p.inputs.get("nodeType") and p is not r]
        if primaries:
            node_type = primaries[0].inputs["nodeType"]
            engine = str(primaries[0].inputs.get("engine") or "redis").lower()
    if not node_type:
        raise PriceError(f"{r.type} {r.name}: no nodeType in its inputs")
    if r.inputs.get("numNodeGroups") is not None or r.inputs.get("replicasPerNodeGroup") is not None:
        shards = _num(r.inputs.get("numNodeGroups"), 1.0)
        nodes = shards * (1 + _num(r.inputs.get("replicasPerNodeGroup"), 0.0))
        layout = f"{shards:g} shard(s) × {nodes / shards:g} node(s)"
    else:
        nodes = _num(r.inputs.get("numCacheClusters"), 1.0)
        layout = f"{nodes:g} node(s)"
    rate = ctx.region_prices(r).rate("elasticache_hour", engine, str(node_type))
    return _flat(nodes * rate * ctx.hours, f"{engine} {node_type} @ ${rate:.4f}/h, {layout}")


def _rds_instance(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    prices = ctx.region_prices(r)
    engine = str(r.inputs.get("engine") or "postgres")
    source = r.inputs.get("replicateSourceDb")
    inputs = dict(r.inputs)
    if source and not inputs.get("allocatedStorage"):
        # A read replica inherits its storage size from the source instance.
        sources = [s for s in ctx.rendering.of_type(r.type) if not s.inputs.get("replicateSourceDb")]
        if sources:
            inputs.setdefault("allocatedStorage", sources[0].inputs.get("allocatedStorage"))
            inputs.setdefault("storageType", sources[0].inputs.get("storageType"))
    if engine not in ("postgres", "postgresql"):
        raise PriceError(f"{r.type} {r.name}: engine {engine!r} is not in the price table (PostgreSQL only)")
    db_class = str(inputs.get("instanceClass"))
    multi_az = _truthy(inputs.get("multiAz"))
    factor = prices.rate("rds_multi_az_factor") if multi_az else 1.0
    hourly = prices.rate("rds_postgres_single_az_hour", db_class) * factor
    storage_gb = _num(inputs.get("allocatedStorage"), 20.0)
    storage_type = str(inputs.get("storageType") or "gp3")
    storage = storage_gb * prices.rate("rds_storage_gb_month", storage_type) * factor
    role = "read replica" if source else "primary"
    az = "Multi-AZ" if multi_az else "Single-AZ"
    yield (hourly * ctx.hours, hourly * ctx.hours, f"PostgreSQL {role} {db_class} {az} @ ${hourly:.4f}/h")
    yield (storage, storage, f"{storage_gb:g} GB {storage_type}{' × 2 (Multi-AZ)' if multi_az else ''}")
    ctx.notes.add("RDS backup storage up to the database size is included; more, and gp3 IOPS/throughput above the "
                  "baseline, cost extra.")


def _log_group(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    prices = ctx.region_prices(r)
    volumes: dict[str, float] = ctx.prices.assumptions.get("cloudwatch_logs_gb_month", {})
    name = str(r.inputs.get("name") or r.name)
    ingest_gb = float(next((gb for key, gb in volumes.items() if key != "default" and key in name), volumes.get("default", 1.0)))
    retention_days = _num(r.inputs.get("retentionInDays"), 0.0)
    # Steady state: retention_days worth of logs are stored (never-expiring groups are shown at one year).
    stored_gb = ingest_gb * (retention_days / 30.0 if retention_days else 12.0)
    monthly = ingest_gb * prices.rate("cloudwatch_logs_ingest_gb") + stored_gb * prices.rate("cloudwatch_logs_storage_gb_month")
    ctx.notes.add("Log and bucket volumes are assumptions from the price table ('assumptions'), not measurements.")
    return _flat(monthly, f"assumed {ingest_gb:g} GB/month ingested, {stored_gb:g} GB stored ({retention_days:g}-day retention)")


def _bucket(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    sizes: dict[str, float] = ctx.prices.assumptions.get("s3_gb", {})
    name = str(r.inputs.get("bucket") or r.inputs.get("bucketPrefix") or r.name)
    gb = float(next((v for key, v in sizes.items() if key != "default" and key in name), sizes.get("default", 10.0)))
    rate = ctx.region_prices(r).rate("s3_standard_gb_month")
    ctx.notes.add("Log and bucket volumes are assumptions from the price table ('assumptions'), not measurements.")
    return _flat(gb * rate, f"assumed {gb:g} GB S3 Standard @ ${rate:.3f}/GB-month")


def _ecr_repository(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    gb = float(ctx.prices.assumptions.get("ecr_gb_per_repository", 10.0))
    rate = ctx.region_prices(r).rate("ecr_gb_month")
    return _flat(gb * rate, f"assumed {gb:g} GB of images @ ${rate:.2f}/GB-month")


_QUANTITY_GIB = {"Ki": 1 / 1024**2, "Mi": 1 / 1024, "Gi": 1.0, "Ti": 1024.0, "K": 1e3 / 1024**3, "M": 1e6 / 1024**3,
                 "G": 1e9 / 1024**3, "T": 1e12 / 1024**3}


def _gib(quantity: Any) -> float:
    text = str(quantity)
    for suffix in sorted(_QUANTITY_GIB, key=len, reverse=True):
        if text.endswith(suffix):
            return _num(text[: -len(suffix)]) * _QUANTITY_GIB[suffix]
    return _num(text) / 1024**3


def _persistent_volume_claim(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
    spec = r.inputs.get("spec") or {}
    gib = _gib(((spec.get("resources") or {}).get("requests") or {}).get("storage", "0"))
    rate = ctx.region_prices(r).rate("ebs_gb_month", "gp3")
    return _flat(gib * rate, f"{gib:g} GiB EBS volume (gp3) @ ${rate:.3f}/GB-month")


def _per_month(key: str, what: str) -> Rule:
    def rule(r: RenderedResource, ctx: _Context) -> Iterable[tuple[float, float, str]]:
        rate = ctx.region_prices(r).rate(key)
        return _flat(rate, f"{what} @ ${rate:.2f}/month")

    return rule


RULES: dict[str, Rule] = {
    "aws:eks/nodeGroup:NodeGroup": _node_group,
    "aws:eks/cluster:Cluster": _eks_cluster,
    "aws:ec2/natGateway:NatGateway": _nat_gateway,
    "aws:ec2/eip:Eip": _eip,
    "aws:ec2/vpcEndpoint:VpcEndpoint": _vpc_endpoint,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:alb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:wafv2/webAcl:WebAcl": _web_acl,
    "aws:elasticache/replicationGroup:ReplicationGroup": _replication_group,
    "aws:rds/instance:Instance": _rds_instance,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:s3/bucketV2:BucketV2": _bucket,
    "aws:ecr/repository:Repository": _ecr_repository,
    "aws:kms/key:Key": _per_month("kms_key_month", "KMS key"),
    "aws:secretsmanager/secret:Secret": _per_month("secrets_manager_secret_month", "secret"),
    "aws:route53/zone:Zone": _per_month("route53_zone_month", "hosted zone"),
    "aws:route53/healthCheck:HealthCheck": _per_month("route53_health_check_month", "health check"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _per_month("cloudwatch_alarm_month", "alarm"),
    "kubernetes:core/v1:PersistentVolumeClaim": _persistent_volume_claim,
}


def region_order(rendering: Rendering) -> list[str]:
    """The stack's regions, home first: from the program's `region` / `<region>:region` outputs, else its providers.

    Registration order under the engine is not deterministic, so the outputs (exported in config order) decide.
    """
    regions: list[str] = []
    home = rendering.outputs.get("region")
    if isinstance(home, str):
        regions.append(home)
    for key, value in rendering.outputs.items():
        if key.endswith(":region") and isinstance(value, str) and value not in regions:
            regions.append(value)
    providers = sorted({str(r.inputs["region"]) for r in rendering.resources
                        if r.type == "pulumi:providers:aws" and r.inputs.get("region")})
    return regions + [name for name in providers if name not in regions]


def _component_of(resource: RenderedResource, by_urn: dict[str, RenderedResource]) -> str:
    """The nearest enclosing platform component (`llm-platform:*`), as `Type name`."""
    parent = resource.parent
    while parent and parent in by_urn:
        owner = by_urn[parent]
        if owner.type.startswith("llm-platform:"):
            return f"{owner.type.rsplit(':', 1)[-1]} {owner.name}"
        parent = owner.parent
    return "stack"


def estimate(rendering: Rendering, prices: PriceTable | None = None, on: date | None = None) -> CostEstimate:
    """Monthly estimate of every priced resource of a rendered stack on day `on` (default today); a missing price is
    listed in `errors`."""
    table = prices or load_price_table()
    by_urn = {r.urn: r for r in rendering.resources}
    plain = Rendering(rendering.stack, [_unwrapped(r) for r in rendering.resources], rendering.outputs)
    ctx = _Context(plain, table, by_urn, set(), on or date.today())
    lines: list[CostLine] = []
    unpriced: list[str] = []
    errors: list[str] = []
    regions: set[str] = set()
    if any(r.type in CROSS_REGION_TYPES for r in plain.resources):
        try:
            rate = f"about ${table.region(DEFAULT_REGION).rate('inter_region_transfer_gb'):.2f}/GB from US and EU regions"
        except PriceError:
            rate = "by volume"
        ctx.notes.add("Cross-region replication (Global Datastore, database replicas, bucket replication, peering) is "
                      f"billed as inter-region data transfer, {rate}.")
    for r in plain.resources:
        rule = RULES.get(r.type)
        if rule is None:
            if r.custom and not r.type.startswith(FREE_TYPE_PREFIXES) and r.type not in unpriced:
                unpriced.append(r.type)
            continue
        region = ctx.region_name(r)
        component = _component_of(r, by_urn)
        try:
            priced = list(rule(r, ctx))
        except PriceError as err:
            # One missing price must not hide the rest of the estimate (or stop `plan`): it is listed instead.
            if str(err) not in errors:
                errors.append(str(err))
            continue
        regions.add(region)
        for desired, maximum, detail in priced:
            lines.append(CostLine(component, r.type, r.name, region, desired, maximum, detail))
    return CostEstimate(
        stack=rendering.stack,
        lines=lines,
        price_source=table.source,
        price_retrieved=table.retrieved,
        price_version=table.version,
        hours_per_month=table.hours_per_month,
        notes=sorted(ctx.notes) + table.notes,
        unpriced=sorted(unpriced),
        region_bases=[table.region(name).basis for name in sorted(regions)],
        errors=errors,
        regions=region_order(rendering),
    )


def _unwrapped(r: RenderedResource) -> RenderedResource:
    return dataclasses.replace(r, inputs=unwrap_secrets(r.inputs))


def format_estimate(est: CostEstimate, detail: bool = False) -> str:
    """The estimate as a text table: per component at desired and at max size, region subtotals, the totals."""
    rows = est.by_region_component()
    regions = list(dict.fromkeys(region for region, _, _, _ in rows))
    indent = "    " if len(regions) > 1 else "  "
    width = max([len(name) + len(indent) - 2 for _, name, _, _ in rows] + [len("TOTAL (USD/month)")])
    out = [f"Estimated monthly cost ({est.hours_per_month:g} h/month, USD)",
           f"  {'component':<{width}}  {'desired':>11}  {'all at max':>11}"]
    for region in regions:
        in_region = [row for row in rows if row[0] == region]
        if len(regions) > 1:
            desired = sum(d for _, _, d, _ in in_region)
            maximum = sum(m for _, _, _, m in in_region)
            out.append(f"  {'region ' + region:<{width}}  {desired:>11,.2f}  {maximum:>11,.2f}")
        for _, name, desired, maximum in in_region:
            out.append(f"{indent}{name:<{width - len(indent) + 2}}  {desired:>11,.2f}  {maximum:>11,.2f}")
            if detail:
                for line in (ln for ln in est.lines if ln.component == name and ln.region == region):
                    out.append(f"{indent}    - {line.resource_name}: {line.detail}  [{line.monthly_desired:,.2f} / {line.monthly_max:,.2f}]")
    out.append(f"  {'TOTAL (USD/month)':<{width}}  {est.total_desired:>11,.2f}  {est.total_max:>11,.2f}")
    out.append(f"  prices: table {est.price_version} ({est.price_retrieved}); {'; '.join(est.region_bases)}")
    if est.unpriced:
        out.append(f"  not priced (no rule yet): {', '.join(est.unpriced)}")
    for error in est.errors:
        out.append(f"  NOT IN THE TOTALS: {error}")
    for note in est.notes:
        out.append(f"  note: {note}")
    return "\n".join(out)


def estimate_json(est: CostEstimate) -> str:
    return json.dumps(est.to_json(), indent=2)


def format_markdown(est: CostEstimate) -> str:
    """The estimate as a Markdown table, for a pull-request comment."""
    rows = est.by_region_component()
    multi = len({region for region, _, _, _ in rows}) > 1
    out = [f"#### Estimated monthly cost: stack `{est.stack}`", "",
           f"| {'region | ' if multi else ''}component | desired (idle) | all node groups at max |",
           f"| {'--- | ' if multi else ''}--- | ---: | ---: |"]
    for region, name, desired, maximum in rows:
        out.append(f"| {region + ' | ' if multi else ''}{name} | ${desired:,.2f} | ${maximum:,.2f} |")
    out.append(f"| {'| ' if multi else ''}**total** | **${est.total_desired:,.2f}** | **${est.total_max:,.2f}** |")
    out += ["", f"USD per {est.hours_per_month:g}-hour month at list on-demand prices; price table {est.price_version} "
                f"({est.price_retrieved}). Traffic-driven charges (NAT/endpoint GB, ALB LCUs, WAF requests, data transfer) "
                "are not included."]
    if est.unpriced:
        out.append(f"Not priced: {', '.join(est.unpriced)}.")
    for error in est.errors:
        out.append(f"**Not in the totals:** {error}")
    return "\n".join(out)


def cmd_cost(args: Any) -> int:
    from infra.cli import render_stack

    est = estimate(render_stack(args.stack))
    if args.format == "json":
        print(estimate_json(est))
    elif args.format == "markdown":
        print(format_markdown(est))
    else:
        print(format_estimate(est, detail=True))
    return 1 if est.errors else 0


def register(sub: Any) -> None:
    """Add `cost <stack>` to the CLI's subcommands."""
    parser = sub.add_parser("cost", help="the stack's estimated monthly cost, every priced resource (text, json or markdown)")
    parser.add_argument("stack", help="stack name")
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                        help="markdown is ready to paste into a pull-request comment")
    parser.set_defaults(func=cmd_cost)
