"""The pack's wiring (what `pulumi preview --policy-pack policies` loads) and its per-stack config."""

from __future__ import annotations

import ast
import json
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi_policy
import pytest
import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from infra.config import SUPPORTED_EKS_VERSIONS
from infra.render import Rendering
from policies.offline import PolicyConfigError, evaluate, known_configs, list_rules, load_config, resolve_settings
from policies.registry import POLICIES, RULES
from policies.rules import eks
from tests.policies.policy_support import edit, setter

PACK_DIR = Path(__file__).resolve().parents[2] / "policies"
TIER_KEYS = {
    "rds-backup-retention": "min_days",
    "rds-multi-az": "required",
    "rds-deletion-protection": "required",
    "elasticache-multi-az": "required",
    "lb-deletion-protection": "required",
    "tier-gpu-node-budget": "max_gpu_nodes",
    "tier-instance-types": "allowed_instance_types",
    "tier-spot-capacity": "spot_allowed",
    "eks-supported-version": "supported_versions",
}



def test_policies_mirror_rules() -> None:
    assert len(POLICIES) == len(RULES) >= 40
    for rule, policy in zip(RULES, POLICIES):
        assert policy.name == rule.id
        assert isinstance(policy, StackValidationPolicy if rule.kind == "stack" else ResourceValidationPolicy)
        assert policy.enforcement_level == rule.enforcement
        assert policy.description == rule.description and policy.remediation_steps == rule.remediation
        schema = policy.config_schema.properties
        assert set(schema) == set(rule.config) | {"exceptions"}
        assert all("default" in prop for prop in schema.values())
    levels = {r.enforcement for r in RULES}
    assert levels == {EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY}


def test_main_only_builds_the_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (PACK_DIR / "__main__.py").read_text()
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    assert sorted(ast.unparse(c.func) for c in calls) == sorted(["Path", "Path(__file__).resolve", "str", "sys.path.insert",
                                                                 "PolicyPack"])
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: built.append(kwargs))
    runpy.run_path(str(PACK_DIR / "__main__.py"), run_name="__main__")
    assert len(built) == 1 and built[0]["policies"] is POLICIES and built[0]["name"] == "llm-platform-guardrails"


def test_pack_project_file() -> None:
    project = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python" and project["version"] and project["description"]
    assert (PACK_DIR / project["runtime"]["options"]["virtualenv"]).resolve() == PACK_DIR.parent / ".venv"


def test_every_stack_has_a_valid_config_with_its_tier_thresholds() -> None:
    stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (PACK_DIR.parent / "stacks").glob("Pulumi.*.yaml"))
    assert set(stacks) <= set(known_configs())
    for stack in stacks:
        raw = load_config(stack)
        resolve_settings(raw, stack)
        for rule_id, key in TIER_KEYS.items():
            assert key in raw.get(rule_id, {}), f"{stack}: {rule_id}.{key}"
    assert load_config("dev")["tier-spot-capacity"]["spot_allowed"] is True
    assert load_config("prod")["rds-multi-az"]["required"] is True and load_config("dev")["rds-multi-az"]["required"] is False


def test_supported_versions_match_the_config_model() -> None:
    assert eks.SUPPORTED_EKS_VERSIONS == SUPPORTED_EKS_VERSIONS
    for stack in known_configs():
        assert tuple(load_config(stack)["eks-supported-version"]["supported_versions"]) == SUPPORTED_EKS_VERSIONS


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"rds-backup-retnetion": {"min_days": 7}}, "rds-backup-retnetion: unknown rule"),
        ({"rds-backup-retention": {"min_days": "seven"}}, 'rds-backup-retention.min_days: got "seven"'),
        ({"rds-backup-retention": {"min_day": 7}}, "rds-backup-retention.min_day: unknown setting; allowed: min_days"),
        ({"rds-backup-retention": {"min_days": 99}}, "rds-backup-retention.min_days: got 99"),
        ({"k8s-probes": {"enforcementLevel": "sometimes"}}, 'k8s-probes.enforcementLevel: got "sometimes"; allowed: advisory'),
        ({"k8s-probes": {"exceptions": [{"rule": "k8s-probes", "urn_or_name_pattern": "*"}]}}, "k8s-probes.exceptions.0"),
        ({"k8s-probes": {"exceptions": [{"rule": "k8s-resources", "urn_or_name_pattern": "*", "reason": "long enough reason"}]}},
         "k8s-probes.exceptions.0.rule"),
        ({"all": "strict"}, 'all: got "strict"'),
    ],
)
def test_bad_config_is_one_clear_line(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(PolicyConfigError) as err:
        resolve_settings(raw, "policies/config/test.json")
    message = str(err.value)
    assert message.startswith("policies/config/test.json: ") and expected in message and "\n" not in message


def violations_of(rule: str, rendering: Rendering, config: dict[str, Any],
                  change: Callable[[list[Any]], tuple[list[Any], str]]) -> list[Any]:
    resources, _ = change(list(rendering.resources))
    return [v for v in evaluate(dataclass_rendering(rendering, resources), "prod", config) if v.rule == rule]


def dataclass_rendering(rendering: Rendering, resources: list[Any]) -> Rendering:
    return Rendering(stack=rendering.stack, resources=resources, outputs={})


PRIVILEGED = edit("kubernetes:apps/v1:Deployment", setter("spec.template.spec.containers.0.securityContext.privileged", True), "ref-vllm")


def test_exception_with_reason_waives_only_matching_resources(reference: Rendering) -> None:
    prod = load_config("prod")
    reason = "NVIDIA DCGM needs privileged access to read GPU counters"
    waived = {**prod, "k8s-pod-security": {"exceptions": [
        {"rule": "k8s-pod-security", "urn_or_name_pattern": "ref-vllm", "reason": reason}]}}
    assert [v.resource_name for v in violations_of("k8s-pod-security", reference, prod, PRIVILEGED)] == ["ref-vllm"]
    assert violations_of("k8s-pod-security", reference, waived, PRIVILEGED) == []
    by_urn = {**prod, "k8s-pod-security": {"exceptions": [
        {"rule": "k8s-pod-security", "urn_or_name_pattern": "*Deployment::ref-gateway", "reason": reason}]}}
    assert [v.resource_name for v in violations_of("k8s-pod-security", reference, by_urn, PRIVILEGED)] == ["ref-vllm"]


def test_enforcement_level_overrides(reference: Rendering) -> None:
    prod = load_config("prod")
    advisory = {**prod, "k8s-pod-security": {"enforcementLevel": "advisory"}}
    assert {v.enforcement for v in violations_of("k8s-pod-security", reference, advisory, PRIVILEGED)} == {"advisory"}
    disabled = {**prod, "k8s-pod-security": "disabled"}
    assert violations_of("k8s-pod-security", reference, disabled, PRIVILEGED) == []
    everything_advisory = {**prod, "all": "advisory"}
    assert {v.enforcement for v in violations_of("k8s-pod-security", reference, everything_advisory, PRIVILEGED)} == {"advisory"}


def test_missing_config_names_known_ones() -> None:
    with pytest.raises(PolicyConfigError) as err:
        load_config("nope")
    assert "no policy config nope.json" in str(err.value) and "prod" in str(err.value)


def test_list_rules_is_complete_and_json_ready() -> None:
    rules = list_rules()
    assert [r["id"] for r in rules] == [r.id for r in RULES]
    json.dumps(rules)
    budget = next(r for r in rules if r["id"] == "tier-gpu-node-budget")
    assert budget["config"] == {"max_gpu_nodes": 0} and budget["enforcement"] == "mandatory"
