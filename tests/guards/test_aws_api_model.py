"""Guard: every rendered AWS input of every stack and of bootstrap is valid for AWS's API model (botocore, pinned).

What AWS enforces on a request (enum, pattern, length, range, required members) is read from the service models
botocore ships with the pinned boto3, through the table in infra/aws_api_model.py (Pulumi type + input -> service,
operation, member). A type a stack uses that the table does not map fails here, unless the table says why it has
no API member.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bootstrap.program import main as bootstrap_main
from infra import aws_api_model as api
from infra.render import RenderedResource, Rendering, known_stacks, render_function

STACKS = known_stacks()
BOOTSTRAP_CONFIG = {"llm-platform-bootstrap:github_repository": "acme-ai/llm-platform",
                    "llm-platform-bootstrap:region": "us-east-1"}


@pytest.fixture(scope="module")
def bootstrap() -> Rendering:
    return render_function(bootstrap_main, stack="bootstrap", config=BOOTSTRAP_CONFIG)


def _renderings(rendered: Callable[[str], Rendering], bootstrap: Rendering) -> list[Rendering]:
    return [*(rendered(s) for s in STACKS), bootstrap]


def test_the_table_names_only_operations_and_members_the_pinned_model_has() -> None:
    assert api.check_table() == []
    for token, entry in api.TABLE.items():
        if isinstance(entry, api.Api):
            assert entry.source.startswith("internal/service/") and entry.source.endswith(".go"), token
        else:
            assert len(entry.reason) > 20, token


def test_every_resource_type_a_stack_or_bootstrap_uses_is_mapped_or_explained(
        rendered: Callable[[str], Rendering], bootstrap: Rendering) -> None:
    report = api.Report()
    for rendering in _renderings(rendered, bootstrap):
        report.merge(api.check_rendering(rendering))
    print(report.summary())  # the coverage figures quoted in README "Before you deploy"
    assert not report.types_missing, f"unmapped resource types (add them to infra/aws_api_model.TABLE): {sorted(report.types_missing)}"
    assert report.types_used == report.types_mapped | report.types_unmappable
    assert len(report.types_mapped) >= 60 and report.checked > 5000  # the guard really walked the stacks
    assert not api.UNCOMPILABLE_PATTERNS - KNOWN_JAVA_ONLY_PATTERNS, api.UNCOMPILABLE_PATTERNS


# botocore's Secrets Manager SecretString pattern is a Java surrogate-pair range Python cannot compile; the value is a
# secret (skipped as unknown) in every stack anyway.
KNOWN_JAVA_ONLY_PATTERNS = {"[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\r\\n\\t]*"}


@pytest.mark.parametrize("stack", [*STACKS, "bootstrap"])
def test_every_rendered_aws_input_is_valid_for_the_aws_api_model(
        stack: str, rendered: Callable[[str], Rendering], bootstrap: Rendering) -> None:
    report = api.check_rendering(bootstrap if stack == "bootstrap" else rendered(stack))
    assert report.checked > 50
    assert not report.violations, "\n".join(map(str, report.violations))


@pytest.mark.parametrize("stack", STACKS)
def test_waf_description_matches_wafv2_entity_description(stack: str, rendered: Callable[[str], Rendering]) -> None:
    """Issue 13.1: CreateWebACL refused the description (parentheses are outside EntityDescription's pattern)."""
    shape = api.operation_model("wafv2", "CreateWebACL").input_shape.members["Description"]
    acls = rendered(stack).of_type("aws:wafv2/webAcl:WebAcl")
    assert acls
    for acl in acls:
        assert api._scalar_rules(shape, acl.inputs["description"]) == [], acl.inputs["description"]


# --- the checker itself: it finds what AWS would refuse ------------------------------------------------------

def _one(type_: str, inputs: dict[str, Any], name: str = "thing", deps: dict[str, list[str]] | None = None) -> Rendering:
    resource = RenderedResource(urn=f"urn:pulumi:t::p::{type_}::{name}", type=type_, name=name, parent=None, provider=None,
                                inputs=inputs, custom=True, property_dependencies=deps or {})
    return Rendering(stack="t", resources=[resource], outputs={})


WAF = "aws:wafv2/webAcl:WebAcl"
BASE_ACL = {"name": "acl", "scope": "REGIONAL", "defaultAction": {"allow": {}},
            "visibilityConfig": {"metricName": "m", "sampledRequestsEnabled": True, "cloudwatchMetricsEnabled": True}}


def test_a_valid_resource_passes() -> None:
    report = api.check_rendering(_one(WAF, {**BASE_ACL, "description": "baseline, rate limit", "tags": {"a": "b"}}))
    assert report.violations == [] and report.checked >= 6


@pytest.mark.parametrize("change, rule", [
    ({"description": "baseline (count mode)"}, "EntityDescription pattern"),
    ({"scope": "GLOBAL"}, "Scope enum"),
    ({"name": "x" * 129}, "max length 128"),
    ({"rules": [{"name": "r", "priority": -1.0, "statement": {"geoMatchStatement": {"countryCodes": ["US"]}},
                 "action": {"block": {}}, "visibilityConfig": BASE_ACL["visibilityConfig"]}]}, "RulePriority minimum 0"),
    ({"tags": {"k" * 129: "v"}}, "TagKey max length 128"),
    ({"defaultAction": None}, "required member DefaultAction"),
    ({"notAnInput": 1}, "no API member"),
])
def test_the_checker_reports_what_aws_would_refuse(change: dict[str, Any], rule: str) -> None:
    inputs = {k: v for k, v in {**BASE_ACL, **change}.items() if v is not None}
    violations = api.check_rendering(_one(WAF, inputs)).violations
    assert any(rule in v.rule for v in violations), [str(v) for v in violations]


def test_an_autonamed_resource_is_checked_with_the_name_pulumi_will_give_it() -> None:
    inputs = {k: v for k, v in BASE_ACL.items() if k != "name"}
    assert api.check_rendering(_one(WAF, inputs, name="edge-waf")).violations == []
    long = api.check_rendering(_one(WAF, inputs, name="w" * 125)).violations
    assert any("max length 128" in v.rule and v.input_path.startswith("<autoname") for v in long)


def test_a_type_missing_from_the_table_is_reported() -> None:
    report = api.check_rendering(_one("aws:sqs/queue:Queue", {"name": "q"}))
    assert report.types_missing == {"aws:sqs/queue:Queue"}


def test_values_from_other_resources_are_skipped_and_counted_not_checked() -> None:
    dep = RenderedResource(urn="urn:dep", type="aws:ec2/vpc:Vpc", name="vpc", parent=None, provider=None, inputs={},
                           custom=True, id="vpc-0123")
    sg = RenderedResource(urn="urn:sg", type="aws:ec2/securityGroup:SecurityGroup", name="sg", parent=None, provider=None,
                          inputs={"vpcId": "vpc-0123", "description": "ok"}, custom=True,
                          property_dependencies={"vpcId": ["urn:dep"]})
    report = api.check_rendering(Rendering(stack="t", resources=[dep, sg], outputs={}))
    assert "sg.vpcId" in report.unknown and not report.violations


def test_provider_default_tags_are_checked_with_each_resource_s_tags() -> None:
    provider = RenderedResource(urn="urn:provider", type="pulumi:providers:aws", name="aws", parent=None, provider=None,
                                inputs={"region": "us-east-1", "defaultTags": '{"tags": {"' + "k" * 129 + '": "v"}}'},
                                custom=True)
    acl = RenderedResource(urn="urn:acl", type=WAF, name="acl", parent=None, provider="urn:provider::aws-id",
                           inputs={**BASE_ACL, "tags": {"own": "tag"}}, custom=True)
    violations = api.check_rendering(Rendering(stack="t", resources=[provider, acl], outputs={})).violations
    assert any("TagKey max length 128" in v.rule for v in violations), [str(v) for v in violations]
