"""Guards over every stack for the data-and-edge defects of issue 13 (items 10-14, 16-18): each checks the class of
the defect, against the AWS API model (botocore) or the relation AWS requires, on the rendered program."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

import botocore.session
import pytest
from botocore.validate import ParamValidator

from components.edge import MANAGED_RULE_NAMES
from components.gateway_workload import GRACE_MARGIN_SECONDS, ALB_DEREGISTRATION_SECONDS
from infra.render import Rendering, known_stacks, read_stack_config

STACKS = known_stacks()
Render = Callable[[str], Rendering]


def _env(r: Rendering) -> dict[str, Any]:
    deployment = next(m for m in _manifests(r) if m["kind"] == "Deployment" and m["metadata"]["name"] == "gateway")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def _manifests(r: Rendering) -> list[dict[str, Any]]:
    return [res.inputs for res in r.resources if res.type.startswith("kubernetes:") and "kind" in res.inputs]


def _home(r: Rendering, type_token: str) -> list[Any]:
    found = r.of_type(type_token)
    assert found, type_token
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_keep_alive_outlives_the_alb_idle_timeout(rendered: Render, stack: str) -> None:
    """13.11: an ALB reusing a connection the gateway already closed answers 502."""
    r = rendered(stack)
    idle = {lb.inputs["idleTimeout"] for lb in _home(r, "aws:lb/loadBalancer:LoadBalancer")}
    keep_alive = int(_env(r)["GATEWAY_KEEP_ALIVE_S"])
    assert all(keep_alive > t for t in idle), (keep_alive, idle)
    assert idle == {read_stack_config(stack).get("llm-platform:edge", {}).get("idle_timeout_seconds", 300)}


@pytest.mark.parametrize("stack", STACKS)
def test_alb_stops_draining_a_pod_when_the_pod_stops_serving(rendered: Render, stack: str) -> None:
    """13.17: deregistration delay = how long the pod serves after deregistration starts (preStop + drain), within
    its grace period; a longer delay keeps the ALB waiting on a pod that has exited."""
    r = rendered(stack)
    deployment = next(m for m in _manifests(r) if m["kind"] == "Deployment" and m["metadata"]["name"] == "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    serving = container["lifecycle"]["preStop"]["sleep"]["seconds"] + int(_env(r)["GATEWAY_DRAIN_TIMEOUT_S"])
    assert serving == ALB_DEREGISTRATION_SECONDS + int(_env(r)["GATEWAY_DRAIN_TIMEOUT_S"])
    for tg in _home(r, "aws:lb/targetGroup:TargetGroup"):
        assert tg.inputs["deregistrationDelay"] == serving
        assert tg.inputs["deregistrationDelay"] + GRACE_MARGIN_SECONDS == pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("stack", STACKS)
def test_body_limit_is_the_gateways_not_a_waf_rule_it_cannot_see(rendered: Render, stack: str) -> None:
    """13.12: an ALB forwards WAF at most 64 KB of a body; the configured limit reaches the gateway (413 above)."""
    r = rendered(stack)
    wanted = read_stack_config(stack).get("llm-platform:edge", {}).get("max_body_bytes", 1_048_576)
    assert int(_env(r)["GATEWAY_MAX_BODY_BYTES"]) == wanted
    for acl in _home(r, "aws:wafv2/webAcl:WebAcl"):
        assert "sizeConstraintStatement" not in json.dumps(acl.inputs["rules"])


def _to_api(value: Any, shape: Any) -> Any:
    """Rendered (camelCase) input -> the AWS request member it becomes, matching member names case-insensitively."""
    if shape.type_name == "structure":
        members = {m.lower(): m for m in shape.members}
        out = {}
        for key, item in value.items():
            member = members.get(key.lower())
            assert member is not None, f"{key} is not a member of {shape.name}: {sorted(shape.members)}"
            out[member] = _to_api(item, shape.members[member])
        return out
    if shape.type_name == "list":
        return [_to_api(item, shape.member) for item in value]
    if shape.type_name in ("integer", "long"):
        return int(value)
    return value


@pytest.mark.parametrize("stack", STACKS)
def test_web_acl_rules_are_valid_create_web_acl_requests(rendered: Render, stack: str) -> None:
    """13.13 guard: every rule as CreateWebACL receives it, validated against botocore's wafv2 model (shapes, enums,
    ranges, required members, CustomKeys <= 5); and every override names a rule its managed group has."""
    model = botocore.session.get_session().get_service_model("wafv2")
    operation = model.operation_model("CreateWebACL")
    rules_shape = operation.input_shape.members["Rules"]
    for acl in _home(rendered(stack), "aws:wafv2/webAcl:WebAcl"):
        rules = _to_api(acl.inputs["rules"], rules_shape)
        request = {"Name": "x", "Scope": "REGIONAL", "DefaultAction": {"Allow": {}}, "Rules": rules,
                   "VisibilityConfig": {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "x"}}
        report = ParamValidator().validate(request, operation.input_shape)
        assert not report.has_errors(), report.generate_report()
        by_name = {rule["Name"]: rule for rule in rules}
        for rule in rules:
            group = rule["Statement"].get("ManagedRuleGroupStatement")
            if group:
                names = [o["Name"] for o in group.get("RuleActionOverrides", [])]
                assert set(names) <= set(MANAGED_RULE_NAMES.get(group["Name"], names)), (group["Name"], names)
        per_key = by_name["rate-limit-per-key"]["Statement"]["RateBasedStatement"]
        assert per_key["CustomKeys"][0]["Header"]["Name"] == "authorization"


def _record_key(r: Rendering, record: Any) -> tuple[str, str, str, str]:
    inputs = record.inputs
    return (str(inputs["zoneId"]), str(inputs["name"]).rstrip(".").lower(), str(inputs["type"]), str(inputs.get("setIdentifier") or ""))


@pytest.mark.parametrize("stack", STACKS)
def test_no_two_resources_own_one_dns_record(rendered: Render, stack: str) -> None:
    """13.14 guard: deleting one of two Records that write the same name deletes it for the other (a shared ACM
    validation CNAME: every regional certificate renews with it)."""
    r = rendered(stack)
    counts = Counter(_record_key(r, rec) for rec in r.of_type("aws:route53/record:Record"))
    assert [k for k, n in counts.items() if n > 1] == []


def test_no_two_stacks_claim_one_hostname() -> None:
    """13.14: the stacks share the example zone; the API names each one serves must not overlap."""
    claims: dict[str, str] = {}
    for stack in STACKS:
        config = read_stack_config(stack)
        edge = config.get("llm-platform:edge", {})
        regions = [reg["name"] for reg in config.get("llm-platform:regions", [])]
        names = {edge["domain_name"], *(f"{reg}.{edge['domain_name']}" for reg in regions[1:])}
        if "llm-platform:global" in config:
            names.add(config["llm-platform:global"]["api_hostname"])
        for host in names:
            assert host not in claims, f"{host}: claimed by {claims[host]} and {stack}"
            claims[host] = stack


# Resource type -> the input that is its physical name: a replacement that keeps the name would have to create a
# second resource of the same name first (AWS refuses). Types whose only replacing input is the name itself (Route53
# records, KMS aliases, log resource policies) cannot collide and are not listed.
FIXED_NAME_INPUTS = {
    "aws:rds/instance:Instance": "identifier",
    "aws:cloudwatch/logGroup:LogGroup": "name",
    "aws:eks/cluster:Cluster": "name",
    "aws:elasticache/replicationGroup:ReplicationGroup": "replicationGroupId",
    "aws:elasticache/globalReplicationGroup:GlobalReplicationGroup": "globalReplicationGroupIdSuffix",
    "aws:rds/parameterGroup:ParameterGroup": "name",
    "aws:rds/subnetGroup:SubnetGroup": "name",
    "aws:s3/bucket:Bucket": "bucket",
}


@pytest.mark.parametrize("stack", STACKS)
def test_fixed_physical_names_are_deleted_before_replacement(rendered: Render, stack: str) -> None:
    """13.16 guard: a resource whose physical name we fix has delete_before_replace, or replacing it fails."""
    r = rendered(stack)
    offenders = [
        f"{res.type} {res.name} ({key}={res.inputs[key]})"
        for res in r.resources
        if (key := FIXED_NAME_INPUTS.get(res.type)) and res.inputs.get(key) and not res.delete_before_replace
    ]
    assert offenders == []
    assert all(db.delete_before_replace for db in _home(r, "aws:rds/instance:Instance"))


@pytest.mark.parametrize("stack", STACKS)
def test_weights_reads_and_slow_queries_are_audited(rendered: Render, stack: str) -> None:
    """13.18: S3 server access logs on every model bucket; Postgres logs slow statements and DDL."""
    r = rendered(stack)
    model_buckets = [b for b in r.of_type("aws:s3/bucket:Bucket") if b.name.endswith("-models")]
    logged = {rec.inputs["bucket"] for rec in r.of_type("aws:s3/bucketLogging:BucketLogging")}
    assert model_buckets and {b.id for b in model_buckets} <= logged
    for group in _home(r, "aws:rds/parameterGroup:ParameterGroup"):
        params = {p["name"]: p["value"] for p in group.inputs["parameters"]}
        assert params["log_min_duration_statement"] == "500" and params["log_statement"] == "ddl"


# global: the gateways reach the shared ledger through the global tier's wiring (infra/global_tier.py), not yet IAM.
@pytest.mark.parametrize("stack", [s for s in STACKS if s != "global"])
def test_gateway_connects_as_its_own_role_with_iam_tokens(rendered: Render, stack: str) -> None:
    """13.10: the gateway's pod role may `rds-db:connect` as `llm_gateway` on the home instance, nothing else; the
    master secret remains only for migrations."""
    r = rendered(stack)
    env = _env(r)
    assert env["GATEWAY_DATABASE_IAM_USER"] == "llm_gateway" and env["GATEWAY_DATABASE_IAM_REGION"]
    (account,) = [m for m in _manifests(r) if m["kind"] == "ServiceAccount" and m["metadata"]["name"] == "gateway"
                  and m["metadata"].get("namespace") == "gateway"][:1]
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    role = next(x for x in r.of_type("aws:iam/role:Role") if x.name.endswith("-gateway-db"))
    assert role_arn.endswith("/" + str(role.inputs.get("name", role.name))) or role.name in role_arn
    (policy,) = [p for p in r.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role.name}-policy"]
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    assert statement["Action"] == "rds-db:connect"
    (db,) = [d for d in r.of_type("aws:rds/instance:Instance") if d.inputs.get("iamDatabaseAuthenticationEnabled") and not d.inputs.get("replicateSourceDb")]
    assert statement["Resource"].endswith(f":dbuser:db-") is False and statement["Resource"].endswith("/llm_gateway")
    assert f":{r.region_of(db) or 'us-east-1'}:" in statement["Resource"]
