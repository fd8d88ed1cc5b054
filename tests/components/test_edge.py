"""Edge under Pulumi mocks: ALB hardening, TLS listeners, target group, certificate/DNS, WAF rules and logging."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.edge import BODY_RULES, ELB_LOG_ACCOUNTS, TLS_POLICIES, Edge, EdgeArgs, WafArgs
from components.naming import short_name
from infra.render import Rendering, render_function

CLUSTER_SG = "sg-0cluster0000000001"
LOGS_KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/99999999-2222-4333-8444-555555555555"
ZONE_ID = "Z0123456789ABC"
EXISTING_CERT = "arn:aws:acm:us-east-1:123456789012:certificate/abcd-1234"


def _render(waf: dict[str, Any] | None = None, **overrides: Any) -> Rendering:
    def program() -> None:
        args = EdgeArgs(
            vpc_id="vpc-0123",
            public_subnet_ids=["subnet-pa", "subnet-pb"],
            target_security_group_id=CLUSTER_SG,
            domain_name="api.llm.example.com",
            waf=WafArgs(log_kms_key_arn=LOGS_KMS_ARN, **(waf or {})),
            **({"hosted_zone_id": ZONE_ID} | overrides),
        )
        edge = Edge("llmp-unit", args)
        pulumi.export("dns", edge.alb_dns_name)
        pulumi.export("tg", edge.target_group_arn)
        pulumi.export("url", edge.api_url)
        pulumi.export("cert", edge.certificate_arn)
        pulumi.export("bucket", edge.access_log_bucket)

    return render_function(program)


@pytest.fixture(scope="module")
def blocking() -> Rendering:
    return _render()


@pytest.fixture(scope="module")
def counting() -> Rendering:
    return _render(waf={"mode": "count", "anonymous_ip_list": True, "rate_limit_per_ip": 500}, deletion_protection=False)


def _rules(r: Rendering) -> dict[str, dict[str, Any]]:
    return {rule["name"]: rule for rule in r.one("aws:wafv2/webAcl:WebAcl").inputs["rules"]}


def test_alb_is_hardened(blocking: Rendering) -> None:
    lb = blocking.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert lb["internal"] is False and lb["loadBalancerType"] == "application"
    assert lb["subnets"] == ["subnet-pa", "subnet-pb"]
    assert lb["dropInvalidHeaderFields"] is True
    assert lb["desyncMitigationMode"] in ("defensive", "strictest")
    assert lb["enableDeletionProtection"] is True
    assert lb["idleTimeout"] >= 300
    assert lb["accessLogs"] == {"bucket": blocking.outputs["bucket"], "prefix": "alb", "enabled": True}


def test_listeners_tls_and_redirect(blocking: Rendering) -> None:
    listeners = {int(r.inputs["port"]): r.inputs for r in blocking.of_type("aws:lb/listener:Listener")}
    assert set(listeners) == {80, 443}
    https = listeners[443]
    assert https["protocol"] == "HTTPS" and https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["certificateArn"] == blocking.outputs["cert"]
    assert https["defaultActions"] == [{"type": "forward", "targetGroupArn": blocking.outputs["tg"]}]
    http = listeners[80]
    assert http["protocol"] == "HTTP"
    assert http["defaultActions"] == [{"type": "redirect", "redirect": {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"}}]


def test_target_group_for_gateway_pods(blocking: Rendering) -> None:
    tg = blocking.one("aws:lb/targetGroup:TargetGroup").inputs
    assert tg["targetType"] == "ip" and tg["port"] == 8080 and tg["protocol"] == "HTTP"
    assert tg["healthCheck"]["path"] == "/health/ready" and tg["healthCheck"]["matcher"] == "200"
    assert tg["vpcId"] == "vpc-0123"
    assert blocking.outputs["tg"].startswith("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/")


def test_certificate_is_dns_validated_in_the_zone_and_aliased(blocking: Rendering) -> None:
    cert = blocking.one("aws:acm/certificate:Certificate").inputs
    assert cert["domainName"] == "api.llm.example.com" and cert["validationMethod"] == "DNS"
    records = {r.name: r.inputs for r in blocking.of_type("aws:route53/record:Record")}
    validation = records["llmp-unit-api-validation"]
    assert validation["zoneId"] == ZONE_ID and validation["type"] == "CNAME"
    assert validation["name"].endswith(".api.llm.example.com.") and validation["records"][0].endswith(".acm-validations.aws.")
    alias = records["llmp-unit-api"]
    assert alias["type"] == "A" and alias["name"] == "api.llm.example.com" and alias["zoneId"] == ZONE_ID
    assert alias["aliases"][0]["name"] == blocking.outputs["dns"] and alias["aliases"][0]["evaluateTargetHealth"] is True
    validated = blocking.one("aws:acm/certificateValidation:CertificateValidation").inputs
    assert validated["certificateArn"] == blocking.outputs["cert"]
    assert blocking.outputs["url"] == "https://api.llm.example.com"


def test_existing_certificate_without_zone() -> None:
    r = _render(hosted_zone_id=None, certificate_arn=EXISTING_CERT)
    assert not r.of_type("aws:acm/certificate:Certificate")
    assert not r.of_type("aws:route53/record:Record")
    https = next(l.inputs for l in r.of_type("aws:lb/listener:Listener") if l.inputs["port"] == 443)
    assert https["certificateArn"] == EXISTING_CERT


def test_security_groups_public_only_on_80_443_and_pods_only_from_alb(blocking: Rendering) -> None:
    (alb_sg,) = blocking.of_type("aws:ec2/securityGroup:SecurityGroup")
    assert alb_sg.inputs["description"] and "ingress" not in alb_sg.inputs and "egress" not in alb_sg.inputs
    ingress = [r.inputs for r in blocking.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]
    public = [r for r in ingress if "cidrIpv4" in r]
    assert sorted(int(r["fromPort"]) for r in public) == [80, 443]
    assert all(r["fromPort"] == r["toPort"] and r["description"] for r in ingress)
    (to_pods,) = [r for r in ingress if r["securityGroupId"] == CLUSTER_SG]
    assert to_pods["fromPort"] == 8080 and "referencedSecurityGroupId" in to_pods
    (egress,) = [r.inputs for r in blocking.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")]
    assert egress["referencedSecurityGroupId"] == CLUSTER_SG and egress["fromPort"] == 8080 and egress["description"]


def test_access_log_bucket(blocking: Rendering) -> None:
    bucket = blocking.outputs["bucket"]
    pab = blocking.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    (sse,) = blocking.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs["rules"]
    assert sse["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"  # ELB log delivery supports only SSE-S3
    (rule,) = blocking.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert rule["expiration"]["days"] == 90 and rule["status"] == "Enabled"
    policy = json.loads(blocking.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    objects = f"arn:aws:s3:::{bucket}/alb/AWSLogs/123456789012/*"
    assert by_sid["ElbLogDelivery"]["Principal"] == {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
    assert by_sid["ElbLogDelivery"]["Resource"] == objects and by_sid["ElbLogDelivery"]["Action"] == "s3:PutObject"
    assert by_sid["ElbLogDeliveryLegacyRegion"]["Principal"] == {"AWS": f"arn:aws:iam::{ELB_LOG_ACCOUNTS['us-east-1']}:root"}
    assert by_sid["DenyInsecureTransport"]["Effect"] == "Deny"


def test_waf_blocking_rules(blocking: Rendering) -> None:
    rules = _rules(blocking)
    assert list(rules) == ["rate-limit-per-key", "rate-limit-per-ip", "AWSManagedRulesAmazonIpReputationList",
                           "AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"]
    assert [r["priority"] for r in rules.values()] == list(range(5))
    for name, rule in rules.items():
        vis = rule["visibilityConfig"]
        assert vis["cloudwatchMetricsEnabled"] is True and vis["sampledRequestsEnabled"] is True and vis["metricName"]
        if name.startswith("AWSManaged"):
            assert rule["overrideAction"] == {"none": {}} and "action" not in rule
        else:
            assert rule["action"] == {"block": {}}
    common = rules["AWSManagedRulesCommonRuleSet"]["statement"]["managedRuleGroupStatement"]
    overrides = {o["name"]: o["actionToUse"] for o in common["ruleActionOverrides"]}
    assert overrides["SizeRestrictions_BODY"] == {"count": {}}
    rate = rules["rate-limit-per-ip"]["statement"]["rateBasedStatement"]
    assert rate == {"limit": 150_000, "evaluationWindowSec": 300, "aggregateKeyType": "IP"}
    acl = blocking.one("aws:wafv2/webAcl:WebAcl").inputs
    assert acl["scope"] == "REGIONAL" and acl["defaultAction"] == {"allow": {}}
    assert acl["visibilityConfig"]["cloudwatchMetricsEnabled"] is True


def test_no_body_size_rule_the_alb_cannot_show_waf(blocking: Rendering) -> None:
    """An ALB forwards WAF at most 8 KB of a body (64 KB with AssociationConfig): a 1 MiB size rule never matches."""
    def statements(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [*value, *(k for v in value.values() for k in statements(v))]
        if isinstance(value, list):
            return [k for v in value for k in statements(v)]
        return []
    keys = statements(blocking.one("aws:wafv2/webAcl:WebAcl").inputs["rules"])
    assert "sizeConstraintStatement" not in keys and "body" not in keys


def test_every_body_rule_of_the_managed_groups_counts_in_block_mode(blocking: Rendering) -> None:
    rules = _rules(blocking)
    for group, expected in BODY_RULES.items():
        statement = rules[group]["statement"]["managedRuleGroupStatement"]
        overrides = {o["name"]: o["actionToUse"] for o in statement["ruleActionOverrides"]}
        assert set(expected) <= set(overrides) and all(a == {"count": {}} for a in overrides.values())
    assert {"GenericLFI_BODY", "GenericRFI_BODY", "EC2MetaDataSSRF_BODY", "CrossSiteScripting_BODY", "SizeRestrictions_BODY"} <= set(
        BODY_RULES["AWSManagedRulesCommonRuleSet"])
    assert {"Log4JRCE_BODY", "JavaDeserializationRCE_BODY"} <= set(BODY_RULES["AWSManagedRulesKnownBadInputsRuleSet"])


def test_rate_limit_is_keyed_on_the_api_key_with_an_ip_backstop(blocking: Rendering) -> None:
    rules = _rules(blocking)
    per_key = rules["rate-limit-per-key"]["statement"]["rateBasedStatement"]
    assert per_key["aggregateKeyType"] == "CUSTOM_KEYS"
    assert per_key["customKeys"] == [{"header": {"name": "authorization", "textTransformations": [{"priority": 0, "type": "NONE"}]}}]
    per_ip = rules["rate-limit-per-ip"]["statement"]["rateBasedStatement"]
    # One NAT address fronts a whole customer backend: the IP limit sits well above what one key may send.
    assert per_ip["limit"] >= 5 * per_key["limit"]


def test_waf_count_mode_counts_everything(counting: Rendering) -> None:
    rules = _rules(counting)
    assert "AWSManagedRulesAnonymousIpList" in rules
    for name, rule in rules.items():
        if name.startswith("AWSManaged"):
            assert rule["overrideAction"] == {"count": {}}
        else:
            assert rule["action"] == {"count": {}}
    assert rules["rate-limit-per-ip"]["statement"]["rateBasedStatement"]["limit"] == 500
    assert counting.one("aws:lb/loadBalancer:LoadBalancer").inputs["enableDeletionProtection"] is False


def test_waf_associated_and_logging_redacts_keys(blocking: Rendering) -> None:
    acl = blocking.one("aws:wafv2/webAcl:WebAcl")
    assoc = blocking.one("aws:wafv2/webAclAssociation:WebAclAssociation").inputs
    lb_arn = assoc["resourceArn"]
    assert lb_arn.startswith("arn:aws:elasticloadbalancing:") and ":loadbalancer/app/" in lb_arn
    assert assoc["webAclArn"].startswith("arn:aws:wafv2:us-east-1:123456789012:regional/webacl/")
    group = blocking.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group["name"].startswith("aws-waf-logs-") and group["kmsKeyId"] == LOGS_KMS_ARN and group["retentionInDays"] == 90
    logging = blocking.one("aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration").inputs
    assert logging["resourceArn"] == assoc["webAclArn"]
    assert logging["logDestinationConfigs"] == [f"arn:aws:logs:us-east-1:123456789012:log-group:{group['name']}"]
    assert {"singleHeader": {"name": "authorization"}} in logging["redactedFields"]
    assert logging["loggingFilter"]["defaultBehavior"] == "DROP"
    delivery = json.loads(blocking.one("aws:cloudwatch/logResourcePolicy:LogResourcePolicy").inputs["policyDocument"])
    assert delivery["Statement"][0]["Principal"] == {"Service": "delivery.logs.amazonaws.com"}
    assert acl.parent == blocking.one("llm-platform:edge:Edge").urn


def test_log_all_requests_drops_the_filter() -> None:
    r = _render(waf={"log_allowed_requests": True})
    assert "loggingFilter" not in r.one("aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration").inputs


def test_names_fit_aws_limits() -> None:
    long = "llmp-global-ap-southeast-1-gw"
    assert len(short_name(long, 24)) == 24 and short_name(long, 24) == short_name(long, 24)
    assert short_name("llmp-dev", 24) == "llmp-dev"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"domain_name": "API.Example"}, "^domain_name: got"),
        ({"hosted_zone_id": None}, "^certificate_arn: got None"),
        ({"ssl_policy": "ELBSecurityPolicy-2016-08"}, "^ssl_policy: got"),
        ({"idle_timeout_seconds": 0}, "^idle_timeout_seconds: got"),
    ],
)
def test_bad_edge_args_name_the_field(overrides: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"vpc_id": "v", "public_subnet_ids": [], "target_security_group_id": "sg", "domain_name": "api.example.com",
                            "waf": WafArgs(log_kms_key_arn="k"), "hosted_zone_id": "Z1"}
    with pytest.raises(ValueError, match=message):
        EdgeArgs(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "off"}, "^waf.mode: got"),
        ({"rate_limit_per_ip": 5}, "^waf.rate_limit_per_ip: got 5"),
        ({"rate_limit_window_seconds": 30}, "^waf.rate_limit_window_seconds: got 30"),
        ({"rate_limit_per_key": 2_000_000_001}, "^waf.rate_limit_per_key: got 2000000001"),
        ({"common_rules_to_count": ["CrossSiteScripting_BODY"]}, "^waf.common_rules_to_count: got"),
        ({"common_rules_to_count": ["SizeRestrictions_BODY", "GenericLFI_Body"]}, "^waf.common_rules_to_count: got \\['GenericLFI_Body'\\]"),
        ({"known_bad_inputs_rules_to_count": ["Log4J_BODY"]}, "^waf.known_bad_inputs_rules_to_count: got"),
    ],
)
def test_bad_waf_args_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WafArgs(log_kms_key_arn="k", **overrides)


def test_tls_policies_are_tls12_or_newer() -> None:
    assert all(p.startswith("ELBSecurityPolicy-TLS13-1-2") or p.startswith("ELBSecurityPolicy-TLS13-1-3") for p in TLS_POLICIES)
