"""Values that are unknown during a real `pulumi preview`.

The engine sends unknown inputs as the SDK's sentinel strings and wraps props in `unknown_checking_proxy`, which
raises `UnknownValueError` on access. Expected behaviour (policies/core.py docstring): every check that can run
runs and reports at the rule's level; the checks that touched an unknown are skipped and the policy ends with one
`UnknownValueError` naming them, which the engine reports as an advisory "can't run policy ... during preview".
These tests drive the SDK's own analyzer servicer (the code behind the gRPC server) with engine-shaped requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel, PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import (
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
    unknown_checking_proxy,
)

from infra.render import RenderedResource, Rendering, unwrap_secrets
from policies.offline import evaluate_resources, load_config, mandatory, resolve_settings
from policies.registry import PACK_NAME, POLICIES, RULES, RULES_BY_ID
from tests.policies.policy_support import find, run_rule

CLUSTER = "aws:eks/cluster:Cluster"
OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])



def servicer() -> _PolicyAnalyzerServicer:
    """The SDK's analyzer, configured as `--policy-pack-config policies/config/prod.json` would configure it."""
    analyzer = _PolicyAnalyzerServicer(PACK_NAME, "0.1.0", POLICIES, EnforcementLevel.MANDATORY)
    request = proto.ConfigureAnalyzerRequest()
    for rule_id, values in load_config("prod").items():
        request.policyConfig[rule_id].properties.update(values)
        request.policyConfig[rule_id].enforcementLevel = proto.MANDATORY if RULES_BY_ID[rule_id].enforcement == EnforcementLevel.MANDATORY else proto.ADVISORY
    analyzer.Configure(request, None)
    return analyzer


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(unwrap_secrets(values))
    return s


def analyze(resource: RenderedResource) -> list[Any]:
    request = proto.AnalyzeRequest(type=resource.type, properties=struct(resource.inputs), urn=resource.urn, name=resource.name)
    return list(servicer().Analyze(request, None).diagnostics)


def analyze_stack(resources: list[RenderedResource]) -> list[Any]:
    request = proto.AnalyzeStackRequest()
    for r in resources:
        item = request.resources.add(type=r.type, properties=struct(r.inputs), urn=r.urn, name=r.name)
        for key, urns in r.property_dependencies.items():
            item.propertyDependencies[key].urns.extend(urns)
    return list(servicer().AnalyzeStack(request, None).diagnostics)


def with_inputs(resource: RenderedResource, change: Callable[[dict[str, Any]], None]) -> RenderedResource:
    inputs = unwrap_secrets(resource.inputs)
    change(inputs)
    return dataclasses.replace(resource, inputs=inputs)


def test_known_violation_reported_unknown_part_skipped_and_said(reference: Rendering) -> None:
    def change(i: dict[str, Any]) -> None:
        i["vpcConfig"]["endpointPrivateAccess"] = False  # known and wrong
        i["vpcConfig"]["publicAccessCidrs"] = UNKNOWN_ARRAY_VALUE  # computed during preview

    cluster = with_inputs(find(reference.resources, CLUSTER), change)
    diagnostics = [d for d in analyze(cluster) if d.policyName == "eks-endpoint-private"]
    mandatory = [d for d in diagnostics if d.enforcementLevel == proto.MANDATORY]
    advisory = [d for d in diagnostics if d.enforcementLevel == proto.ADVISORY]
    assert len(mandatory) == 1 and "endpointPrivateAccess is not true" in mandatory[0].message
    assert len(advisory) == 1
    assert "can't run policy 'eks-endpoint-private'" in advisory[0].message
    assert "public_endpoint_restricted" in advisory[0].message and ".vpcConfig.publicAccessCidrs" in advisory[0].message


def test_unknown_value_is_never_a_silent_pass(reference: Rendering) -> None:
    cluster = with_inputs(find(reference.resources, CLUSTER), lambda i: i.update(version=UNKNOWN_STRING_VALUE))
    diagnostics = [d for d in analyze(cluster) if d.policyName == "eks-supported-version"]
    assert [d.enforcementLevel for d in diagnostics] == [proto.ADVISORY]
    assert "string value at .version can't be known during preview" in diagnostics[0].message
    # Other rules on the same resource do not depend on `version` and still pass cleanly.
    assert [d for d in analyze(cluster) if d.policyName != "eks-supported-version"] == []


def test_fully_known_compliant_resource_gives_no_diagnostics(reference: Rendering) -> None:
    for r in reference.resources:
        if r.custom:
            assert analyze(r) == [], r.urn


def test_direct_validate_raises_after_reporting(reference: Rendering) -> None:
    """The same contract seen by a policy caller: violations first, then UnknownValueError."""
    policy = next(p for p in POLICIES if p.name == "launch-template-imdsv2")
    template = find(reference.resources, "aws:ec2/launchTemplate:LaunchTemplate")
    inputs = unwrap_secrets(template.inputs)
    inputs["metadataOptions"]["httpTokens"] = "optional"
    inputs["metadataOptions"]["httpPutResponseHopLimit"] = UNKNOWN_BOOLEAN_VALUE
    reported: list[str] = []
    args = ResourceValidationArgs(template.type, unknown_checking_proxy(inputs), template.urn, template.name, OPTS, None)
    with pytest.raises(UnknownValueError) as err:
        policy.validate(args, lambda message, urn=None: reported.append(message))
    assert reported == ["metadataOptions.httpTokens is optional (IMDSv1 allowed); set required"]
    assert "imds_hop_limit" in err.value.message


def test_stack_rule_checks_known_subjects_and_skips_unknown_ones(reference: Rendering) -> None:
    # The TLS-only bucket policy is built from bucket.arn during preview: unknown until the bucket exists.
    resources = [with_inputs(r, lambda i: i.update(policy=UNKNOWN_STRING_VALUE)) if r.type == "aws:s3/bucketPolicy:BucketPolicy"
                 else r for r in reference.resources]
    bare = RenderedResource(urn="urn:pulumi:prod::llm-platform::aws:s3/bucket:Bucket::bare", type="aws:s3/bucket:Bucket",
                            name="bare", parent=None, provider=None, inputs={}, custom=True)
    diagnostics = [d for d in analyze_stack([*resources, bare]) if d.policyName == "s3-tls-only"]
    mandatory = [d for d in diagnostics if d.enforcementLevel == proto.MANDATORY]
    advisory = [d for d in diagnostics if d.enforcementLevel == proto.ADVISORY]
    assert [d.urn for d in mandatory] == [bare.urn]
    assert len(advisory) == 1 and "ref-models" in advisory[0].message and ".policy" in advisory[0].message


def test_stack_rules_follow_property_dependencies_like_the_engine(reference: Rendering) -> None:
    # Engine-shaped AnalyzeStack of the compliant reference: no diagnostics at all (every link found through
    # propertyDependencies); without the WAF association the ALB is flagged, with the engine's URN.
    assert analyze_stack(list(reference.resources)) == []
    resources = [r for r in reference.resources if r.type != "aws:wafv2/webAclAssociation:WebAclAssociation"]
    diagnostics = analyze_stack(resources)
    alb = find(reference.resources, "aws:lb/loadBalancer:LoadBalancer")
    assert [(d.policyName, d.urn, d.enforcementLevel) for d in diagnostics] == [("alb-waf-association", alb.urn, proto.MANDATORY)]


def test_offline_runner_reports_unknowns_as_the_engine_does(reference: Rendering) -> None:
    cluster = with_inputs(find(reference.resources, CLUSTER), lambda i: i.update(version=UNKNOWN_STRING_VALUE))
    violations = run_rule("eks-supported-version", [cluster])
    assert [(v.enforcement, v.urn) for v in violations] == [("advisory", cluster.urn)]
    assert "can't run policy 'eks-supported-version' during preview" in violations[0].message


def all_unknown(value: Any) -> Any:
    """Every leaf replaced by the engine's unknown sentinel of its kind, as in a preview of a brand-new stack."""
    if isinstance(value, dict):
        return {k: all_unknown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [all_unknown(v) for v in value]
    if isinstance(value, bool):
        return UNKNOWN_BOOLEAN_VALUE
    if isinstance(value, (int, float)):
        return UNKNOWN_NUMBER_VALUE
    return UNKNOWN_STRING_VALUE


@pytest.mark.parametrize("depth", ["leaves", "top-level"])
def test_unknowns_never_crash_never_fail_and_are_reported(depth: str, reference: Rendering) -> None:
    """Each resource of the compliant reference in turn made unknown: no exception escapes any policy, no
    mandatory violation appears (an unknown is not a failure), and the rules that check it say they could not."""
    for target in reference.resources:
        if not target.custom or not target.inputs:
            continue
        inputs = unwrap_secrets(target.inputs)
        unknown = ({k: all_unknown(v) for k, v in inputs.items()} if depth == "leaves"
                   else {k: UNKNOWN_OBJECT_VALUE if isinstance(v, (dict, list)) else all_unknown(v) for k, v in inputs.items()})
        resources = [dataclasses.replace(r, inputs=unknown) if r is target else r for r in reference.resources]
        violations = evaluate_resources(resources, resolve_settings(load_config("prod")))
        assert mandatory(violations) == [], f"{target.name}: {mandatory(violations)}"
        resource_rules = [r.id for r in RULES if r.kind == "resource" and target.type in r.types]
        said = {v.rule for v in violations if v.urn == target.urn and "can't run policy" in v.message}
        # An input left out is known-absent (the AWS default) and still judged; what was given is unknown.
        assert not resource_rules or said, f"{target.name}: no rule said it could not check {resource_rules}"
        wrongly_failed = [v for v in violations if v.urn == target.urn and "can't run policy" not in v.message]
        assert wrongly_failed == [], f"{target.name}: {wrongly_failed}"
