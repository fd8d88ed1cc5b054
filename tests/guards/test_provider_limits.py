"""Guard: the Terraform AWS provider's own limits (infra/provider_limits.py) over every stack and bootstrap."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bootstrap.program import main as bootstrap_main
from components.naming import region_short_code
from components.postgres_database import check_monitoring
from infra import provider_limits as limits
from infra.config import ConfigError, parse_platform_config
from infra.render import RenderedResource, Rendering, known_stacks, read_stack_config, render_function

STACKS = known_stacks()
BOOTSTRAP_CONFIG = {"llm-platform-bootstrap:github_repository": "acme-ai/llm-platform",
                    "llm-platform-bootstrap:region": "us-east-1"}


@pytest.mark.parametrize("stack", [*STACKS, "bootstrap"])
def test_no_rendered_resource_breaks_a_provider_limit(stack: str, rendered: Callable[[str], Rendering]) -> None:
    rendering = (render_function(bootstrap_main, stack="bootstrap", config=BOOTSTRAP_CONFIG) if stack == "bootstrap"
                 else rendered(stack))
    assert limits.check_rendering(rendering) == []


def _node_group(prefix: str, **inputs: Any) -> Rendering:
    r = RenderedResource(urn="urn:ng", type=limits.NODE_GROUP, name="ng", parent=None, provider=None,
                         inputs={"nodeGroupNamePrefix": prefix, **inputs}, custom=True)
    return Rendering(stack="t", resources=[r], outputs={})


def test_the_limits_catch_what_the_provider_refuses() -> None:
    assert limits.EKS_NODE_GROUP_NAME_PREFIX_MAX == 37
    assert limits.check_rendering(_node_group("x" * 37)) == []
    (problem,) = limits.check_rendering(_node_group("llmp-global-ap-northeast-1-gpu-a10g-shared-"))
    assert "at most 37" in problem and "internal/service/eks/node_group.go" in problem
    assert any("ConflictsWith" in p for p in limits.check_rendering(_node_group("a-", nodeGroupName="a")))
    assert any("taint key" in p for p in limits.check_rendering(_node_group("a-", taints=[{"key": "k" * 64, "effect": "NO_SCHEDULE"}])))
    other = RenderedResource(urn="urn:lt", type="aws:ec2/launchTemplate:LaunchTemplate", name="lt", parent=None,
                             provider=None, inputs={"namePrefix": "lt-"}, custom=True)
    assert any("has no limit" in p for p in limits.check_rendering(Rendering(stack="t", resources=[other], outputs={})))


def test_global_node_group_prefixes_use_the_region_short_code_and_fit(rendered: Callable[[str], Rendering]) -> None:
    """Issue 13.3: global rendered prefixes of 38-43 characters (`llmp-global-ap-northeast-1-gpu-a10g-shared-`)."""
    prefixes = {ng.inputs["nodeGroupNamePrefix"] for ng in rendered("global").of_type(limits.NODE_GROUP)}
    assert "llmp-global-apne1-gpu-a10g-shared-" in prefixes
    assert max(map(len, prefixes)) <= limits.EKS_NODE_GROUP_NAME_PREFIX_MAX


def test_single_region_node_group_names_and_urns_did_not_change(rendered: Callable[[str], Rendering]) -> None:
    groups = {ng.name: ng.inputs["nodeGroupNamePrefix"] for ng in rendered("dev").of_type(limits.NODE_GROUP)}
    assert groups["llmp-dev-gpu-a10g-ng"] == "llmp-dev-gpu-a10g-"
    assert all(prefix == name.removesuffix("ng") for name, prefix in groups.items())
    global_names = {ng.name for ng in rendered("global").of_type(limits.NODE_GROUP)}
    assert "llmp-global-ap-northeast-1-gpu-a10g-shared-ng" in global_names  # resource names (URNs) kept


@pytest.mark.parametrize("region, code", [("us-east-1", "use1"), ("ap-northeast-1", "apne1"), ("eu-central-1", "euc1"),
                                          ("us-west-2", "usw2"), ("ap-southeast-2", "apse2"), ("ca-central-1", "cac1")])
def test_region_short_codes_are_the_ones_aws_uses(region: str, code: str) -> None:
    assert region_short_code(region) == code


def test_a_node_group_name_that_overflows_is_a_one_line_config_error_naming_the_key() -> None:
    raw = {k.removeprefix("llm-platform:"): v for k, v in read_stack_config("global").items() if k.startswith("llm-platform:")}
    raw["node_groups"] = [*raw["node_groups"], {**raw["node_groups"][-1], "name": "gpu-a10g-shared-batch-extra"}]
    parse_platform_config(raw, source="stacks/Pulumi.global.yaml")  # without a stack name: nothing to check yet
    with pytest.raises(ConfigError) as err:
        parse_platform_config(raw, source="stacks/Pulumi.global.yaml", stack="global")
    message = str(err.value)
    assert "\n" not in message
    assert f"llm-platform:node_groups[{len(raw['node_groups']) - 1}].name" in message
    assert "'gpu-a10g-shared-batch-extra'" in message and "at most 37" in message


@pytest.mark.parametrize("days", [7, 31, 93, 713, 731])
def test_performance_insights_retention_accepts_what_rds_accepts(days: int) -> None:
    """Issue 13.15: 731 (two years, the documented maximum) was rejected: it is not a multiple of 31."""
    assert limits.check_performance_insights_retention(days) == days
    check_monitoring(60, days)


@pytest.mark.parametrize("days", [0, 30, 94, 744, 762])
def test_performance_insights_retention_rejects_what_rds_rejects(days: int) -> None:
    with pytest.raises(ValueError, match="731"):
        limits.check_performance_insights_retention(days)
    with pytest.raises(ValueError, match="performance_insights_retention_days"):
        check_monitoring(60, days)
    assert limits.check_rendering(Rendering(stack="t", resources=[RenderedResource(
        urn="urn:db", type=limits.RDS_INSTANCE, name="db", parent=None, provider=None,
        inputs={"performanceInsightsRetentionPeriod": float(days)}, custom=True)], outputs={}))


def _one(type_: str, inputs: dict[str, Any], name: str = "r") -> Rendering:
    return Rendering(stack="t", resources=[RenderedResource(urn=f"urn:{name}", type=type_, name=name, parent=None,
                                                            provider=None, inputs=inputs, custom=True)], outputs={})


def test_elbv2_and_s3_names_follow_the_provider_and_aws_rules_autonamed_or_not() -> None:
    lb = "aws:lb/loadBalancer:LoadBalancer"
    assert limits.check_rendering(_one(lb, {"name": "llmp-prod"})) == []
    assert limits.check_rendering(_one(lb, {"name": "internal-api"}))
    assert limits.check_rendering(_one(lb, {"name": "x" * 33}))
    assert limits.check_rendering(_one(lb, {}, name="x" * 24)) == []  # auto-named: 24 + 8 = 32
    assert limits.check_rendering(_one(lb, {}, name="x" * 25))
    bucket = "aws:s3/bucket:Bucket"
    assert limits.check_rendering(_one(bucket, {"bucket": "llmp-dev-models-123456789012"})) == []
    assert limits.check_rendering(_one(bucket, {"bucket": "LLMP_dev"}))
