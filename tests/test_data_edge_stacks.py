"""Data and edge in every stack, rendered through the real program: per-tier shape, outputs, and no clear-text secrets."""

from __future__ import annotations

import copy
import io
import json
import re
from contextlib import redirect_stdout
from typing import Any, Callable

import pytest

from infra import cli
from infra.config import ConfigError, parse_platform_config
from infra.render import Rendering, is_secret, read_stack_config

RG = "aws:elasticache/replicationGroup:ReplicationGroup"
DB = "aws:rds/instance:Instance"
LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
ACL = "aws:wafv2/webAcl:WebAcl"
ASSOC = "aws:wafv2/webAclAssociation:WebAclAssociation"

Render = Callable[[str], Rendering]


def _listeners(r: Rendering) -> dict[int, dict[str, Any]]:
    return {int(x.inputs["port"]): x.inputs for x in r.of_type(LISTENER)}


def _acl_actions(r: Rendering) -> set[str]:
    """Every action the WebACL's rules take: 'count'/'block' for own rules, 'count'/'none' for managed groups."""
    (acl,) = r.of_type(ACL)
    return {next(iter(rule.get("action") or rule.get("overrideAction"))) for rule in acl.inputs["rules"]}


def test_dev_is_minimal_and_counts(rendered: Render) -> None:
    r = rendered("dev")
    rg = r.one(RG).inputs
    assert rg["numCacheClusters"] == 1 and rg["automaticFailoverEnabled"] is False and rg["multiAzEnabled"] is False
    assert rg["nodeType"] == "cache.t4g.micro"
    db = r.one(DB).inputs
    assert db["multiAz"] is False and db["deletionProtection"] is False and db["skipFinalSnapshot"] is True
    assert db["backupRetentionPeriod"] == 1  # only because the dev stack says allow_short_backup_retention
    assert _acl_actions(r) == {"count"}
    assert r.one(LB).inputs["enableDeletionProtection"] is False


def test_small_has_a_replica_and_blocks(rendered: Render) -> None:
    r = rendered("small")
    rg = r.one(RG).inputs
    assert rg["numCacheClusters"] == 2 and rg["automaticFailoverEnabled"] is True and rg["multiAzEnabled"] is True
    db = r.one(DB).inputs
    assert db["multiAz"] is False and db["backupRetentionPeriod"] >= 7 and db["deletionProtection"] is True
    assert _acl_actions(r) == {"block", "none"}


def test_prod_plan_shows_the_done_when_resources(rendered: Render) -> None:
    r = rendered("prod")
    rg = r.one(RG).inputs
    assert rg["numCacheClusters"] == 3 and rg["clusterMode"] == "disabled"
    assert rg["transitEncryptionEnabled"] is True and rg["transitEncryptionMode"] == "required"
    assert rg["atRestEncryptionEnabled"] is True and rg["kmsKeyId"].startswith("arn:aws:kms:us-east-1:")
    assert rg["automaticFailoverEnabled"] is True and rg["multiAzEnabled"] is True
    db = r.one(DB).inputs
    assert db["multiAz"] is True and db["storageEncrypted"] is True and db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is False and db["backupRetentionPeriod"] == 14
    assert db["kmsKeyId"] == rg["kmsKeyId"]
    lb = r.one(LB)
    assoc = r.one(ASSOC).inputs
    assert assoc["webAclArn"].startswith("arn:aws:wafv2:us-east-1:")
    assert f":loadbalancer/app/{lb.name}/" in assoc["resourceArn"], "the WebACL guards this ALB"
    listeners = _listeners(r)
    assert listeners[443]["sslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-")
    assert listeners[80]["defaultActions"][0]["redirect"]["protocol"] == "HTTPS"
    assert _acl_actions(r) == {"block", "none"}
    assert lb.inputs["enableDeletionProtection"] is True


def test_prod_data_is_reachable_only_from_the_cluster(rendered: Render) -> None:
    r = rendered("prod")
    rules = [x.inputs for x in r.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if int(x.inputs.get("fromPort", 0)) in (6379, 5432)]
    assert len(rules) == 2
    cluster_sg = {x["referencedSecurityGroupId"] for x in rules}
    assert len(cluster_sg) == 1 and next(iter(cluster_sg)).startswith("sg-")
    assert all("cidrIpv4" not in x and x["description"] for x in rules)


def test_global_builds_every_region_with_postgres_at_home(rendered: Render) -> None:
    r = rendered("global")
    cfg = cli.stack_platform_config("global")
    regions = [reg.name for reg in cfg.regions]
    # Only what RedisCache/PostgresDatabase build (the cross-region layer adds Global Datastore members and replicas).
    ours = {x.urn for x in [*r.of_type("llm-platform:data:RedisCache"), *r.of_type("llm-platform:data:PostgresDatabase")]}
    caches = [x for x in r.of_type(RG) if x.parent in ours]
    # global_datastore: a secondary region's Redis is its Global Datastore member, not a RedisCache of its own.
    assert sorted(filter(None, (r.region_of(x) for x in caches))) == [regions[0]]
    members = [x for x in r.of_type(RG) if x.inputs.get("globalReplicationGroupId")]
    assert sorted(filter(None, (r.region_of(x) for x in members))) == sorted(regions[1:])
    assert all(x.inputs["clusterMode"] == "enabled" and x.inputs["numNodeGroups"] == 2 for x in caches)
    (db,) = [x for x in r.of_type(DB) if x.parent in ours]
    assert r.region_of(db) == regions[0] and db.inputs["multiAz"] is True
    assert sorted(filter(None, (r.region_of(x) for x in r.of_type(LB)))) == sorted(regions)
    assert len(r.of_type(ASSOC)) == len(regions)
    edges = {x.urn for x in r.of_type("llm-platform:edge:Edge")}
    names = {x.inputs["domainName"] for x in r.of_type("aws:acm/certificate:Certificate") if x.parent in edges}
    assert names == {cfg.edge.domain_name} | {f"{reg}.{cfg.edge.domain_name}" for reg in regions[1:]}
    for reg in regions[1:]:
        assert r.outputs[f"{reg}:apiUrl"] == f"https://{reg}.{cfg.edge.domain_name}"


@pytest.mark.parametrize("stack", ["dev", "small", "prod", "global"])
def test_outputs(rendered: Render, stack: str) -> None:
    r = rendered(stack)
    out = r.outputs
    cfg = cli.stack_platform_config(stack)
    assert out["redisEndpoint"].startswith(("master.", "clustercfg.")) and out["redisPort"] == 6379
    assert out["redisAuthSecretArn"].startswith("arn:aws:secretsmanager:")
    assert out["databaseEndpoint"].endswith(".rds.amazonaws.com") and out["databasePort"] == 5432
    assert out["databaseSecretArn"].startswith("arn:aws:secretsmanager:")
    assert out["albDnsName"].endswith(".elb.amazonaws.com")
    assert out["targetGroupArn"].startswith("arn:aws:elasticloadbalancing:") and ":targetgroup/" in out["targetGroupArn"]
    assert out["apiUrl"] == f"https://{cfg.edge.domain_name}"
    assert out["modelBucketName"] and out["modelBucketReadPolicyArn"].startswith("arn:aws:iam::")
    data_edge_outputs = {k for k in out if k.split(":")[-1] in {
        "redisEndpoint", "redisPort", "redisAuthSecretArn", "databaseEndpoint", "databasePort", "databaseSecretArn",
        "albDnsName", "targetGroupArn", "apiUrl", "modelBucketName", "modelBucketReadPolicyArn"}}
    assert not data_edge_outputs & r.secret_outputs, "these are addresses and ARNs, never secret values"


def _plan_json(stack: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Rendering]:
    """`python -m infra.cli plan <stack> --json` in-process, keeping the rendering whose secrets were generated."""
    seen: list[Rendering] = []
    real = cli.render_stack

    def capture(name: str) -> Rendering:
        seen.append(real(name))
        return seen[-1]

    monkeypatch.setattr(cli, "render_stack", capture)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = cli.main(["plan", stack, "--json"])
    assert code in (0, 3), buffer.getvalue()[-500:]
    return buffer.getvalue(), seen[0]


PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


@pytest.mark.parametrize("stack", ["dev", "prod", "global"])
def test_no_secret_in_clear_text_anywhere(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plan_text, rendering = _plan_json(stack, monkeypatch)
    assert rendering.generated_secrets, "the Redis AUTH token is generated by pulumi_random"
    resources_text = json.dumps([r.to_json() for r in rendering.resources], default=str)
    outputs_text = json.dumps(rendering.public_outputs(), default=str)
    for secret in rendering.generated_secrets:
        assert secret not in plan_text, "a generated secret leaked into plan --json"
        assert secret not in resources_text, "a generated secret leaked into the resources' inputs"
        assert secret not in outputs_text, "a generated secret leaked into the stack outputs"
    for text in (plan_text, resources_text, outputs_text):
        assert not PRIVATE_KEY.search(text)
    json.loads(plan_text)
    # Each generated value does reach the resources that need it, always wrapped as a secret.
    for secret in rendering.generated_secrets:
        holders = [r for r in rendering.resources if secret in json.dumps(r.inputs, default=str)]
        assert holders
        for r in holders:
            assert all(is_secret(v) for v in r.inputs.values() if secret in json.dumps(v, default=str)), r.name
    caches = rendering.of_type(RG)
    assert all(is_secret(c.inputs["authToken"]) for c in caches if "authToken" in c.inputs)
    # Single-region stacks: no password reaches RDS at all, RDS generates and rotates it in Secrets Manager.
    if stack != "global":
        assert all("password" not in r.inputs and r.inputs["manageMasterUserPassword"] is True for r in rendering.of_type(DB))


def _raw(stack: str) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in copy.deepcopy(read_stack_config(stack)).items() if k.startswith("llm-platform:")}


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_platform_config(raw, source="stacks/Pulumi.test.yaml")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_config_errors_name_key_value_and_allowed() -> None:
    raw = _raw("dev")
    raw["data"]["postgres"]["allow_short_backup_retention"] = False
    msg = _error(raw)
    assert "llm-platform:data.postgres" in msg and "backup_retention_days: got 1" in msg and "allow_short_backup_retention" in msg

    raw = _raw("prod")
    raw["data"]["redis"]["engine_version"] = "6.2"
    msg = _error(raw)
    assert "llm-platform:data.redis" in msg and "'6.2'" in msg and "8.0" in msg

    raw = _raw("prod")
    raw["edge"]["ssl_policy"] = "ELBSecurityPolicy-2016-08"
    msg = _error(raw)
    assert "llm-platform:edge.ssl_policy" in msg and "ELBSecurityPolicy-TLS13-1-2-2021-06" in msg

    raw = _raw("prod")
    raw["edge"]["waf"]["mode"] = "off"
    msg = _error(raw)
    assert "llm-platform:edge.waf.mode" in msg and '"off"' in msg and "'block'" in msg

    raw = _raw("prod")
    raw["edge"]["domain_name"] = "api.other.org"
    assert "domain_name: got 'api.other.org'" in _error(raw)

    raw = _raw("prod")
    del raw["edge"]["hosted_zone"]
    assert "llm-platform:edge" in _error(raw) and "certificate_arn" in _error(raw)

    raw = _raw("prod")
    raw["edge"]["certificate_arn"] = "arn:aws:acm:eu-west-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
    msg = _error(raw)
    assert "edge.certificate_arn: got a certificate in eu-west-1" in msg and "us-east-1" in msg

    raw = _raw("prod")
    raw["data"]["redis"]["shards"] = 3
    assert "shards: got 3" in _error(raw)

    raw = _raw("prod")
    raw["edge"]["waf"]["common_rules_to_count"] = []
    assert "SizeRestrictions_BODY" in _error(raw)


def test_existing_certificate_instead_of_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.render import render

    raw = copy.deepcopy(read_stack_config("small"))
    cert = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
    raw["llm-platform:edge"] = {"domain_name": "api.small.llm.example.com", "certificate_arn": cert}
    r = render("small", config=raw)
    assert not r.of_type("aws:acm/certificate:Certificate") and not r.of_type("aws:route53/record:Record")
    assert _listeners(r)[443]["certificateArn"] == cert


# Known, documented departures (README "Data and edge"): ELB log delivery only writes to SSE-S3 buckets, and the
# ElastiCache AUTH token rotates through Pulumi (ROTATE strategy), not a Secrets Manager rotation Lambda.
ACCEPTED = {("s3-sse-kms", "-access-logs"), ("secrets-rotation", "-redis-auth"),
            # global tier only: a stack-generated master password, because RDS refuses replicas of managed ones
            ("secrets-rotation", "-postgres-master")}
DATA_EDGE_TYPES = ("llm-platform:data:RedisCache", "llm-platform:data:PostgresDatabase", "llm-platform:edge:Edge",
                   "llm-platform:data:ModelBucket")


@pytest.mark.parametrize("stack", ["dev", "small", "prod", "global"])
def test_data_edge_resources_pass_the_policy_pack(rendered: Render, stack: str) -> None:
    from policies import commands as policy_commands

    r = rendered(stack)
    ours = {x.urn for t in DATA_EDGE_TYPES for x in r.of_type(t)}
    children = {x.urn for x in r.resources if x.parent in ours}
    violations = policy_commands.plan_violations(r, stack, cli.stack_platform_config(stack).tier)
    mine = [v for v in violations if v.urn in children | ours]
    unexpected = [str(v) for v in mine if not any(v.rule == rule and v.resource_name.endswith(suffix) for rule, suffix in ACCEPTED)]
    assert not unexpected


@pytest.mark.parametrize("stack", ["dev", "global"])
def test_auto_named_physical_names_fit_aws_limits(rendered: Render, stack: str) -> None:
    r = rendered(stack)
    ours = {x.urn for t in DATA_EDGE_TYPES for x in r.of_type(t)}
    suffix = 8  # Pulumi auto-naming appends "-" and 7 characters
    limits = {RG: ("replicationGroupId", 40), LB: ("name", 32), "aws:lb/targetGroup:TargetGroup": ("name", 32),
              "aws:s3/bucket:Bucket": ("bucket", 63), "aws:iam/role:Role": ("name", 64)}
    for typ, (field, limit) in limits.items():
        for x in r.of_type(typ):
            if x.parent in ours:
                assert len(x.inputs[field]) <= limit if field in x.inputs else len(x.name) + suffix <= limit, x.name
    for x in r.of_type(DB):
        if x.parent in ours:
            assert len(x.inputs["identifier"]) <= 63


def test_plan_prod_json_shows_the_done_when_items(monkeypatch: pytest.MonkeyPatch) -> None:
    plan_text, _ = _plan_json("prod", monkeypatch)
    doc = json.loads(plan_text)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for res in doc["resources"]:
        by_type.setdefault(res["type"], []).append(res["inputs"])
    (rg,) = by_type[RG]
    assert rg["transitEncryptionEnabled"] and rg["atRestEncryptionEnabled"] and rg["automaticFailoverEnabled"]
    assert rg["authToken"] == "[secret]"
    (db,) = by_type[DB]
    assert db["multiAz"] and db["storageEncrypted"] and db["deletionProtection"]
    (acl,) = by_type[ACL]
    (assoc,) = by_type[ASSOC]
    assert acl["scope"] == "REGIONAL" and assoc["webAclArn"].startswith("arn:aws:wafv2:")
    listeners = {int(x["port"]): x for x in by_type[LISTENER]}
    assert listeners[443]["protocol"] == "HTTPS" and listeners[443]["sslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-")
    assert listeners[80]["defaultActions"][0] == {"type": "redirect", "redirect": {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"}}


def test_model_defaults_are_the_secure_ones() -> None:
    from infra.data_edge_config import EdgeConfig, PostgresConfig, RedisConfig, WafConfig

    pg = PostgresConfig()
    assert pg.multi_az and pg.deletion_protection and pg.final_snapshot and pg.backup_retention_days >= 7
    redis = RedisConfig()
    assert redis.replicas >= 1 and redis.snapshot_retention_days >= 1 and redis.final_snapshot
    assert WafConfig().mode == "block"
    edge = EdgeConfig(domain_name="api.example.com", hosted_zone="example.com")
    assert edge.deletion_protection and edge.ssl_policy == "ELBSecurityPolicy-TLS13-1-2-2021-06" and edge.idle_timeout_seconds >= 300
