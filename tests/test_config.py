"""Tier config validation: every mistake stops with one line naming the key, the value and what is allowed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from infra.config import ConfigError, parse_platform_config
from infra.render import STACKS_DIR


def stack_raw(stack: str) -> dict[str, Any]:
    data = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in data.items() if k.startswith("llm-platform:")}


def error_for(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_platform_config(raw, source="stacks/Pulumi.test.yaml")
    message = str(info.value)
    assert "\n" not in message, "one line"
    return message


@pytest.mark.parametrize("stack", ["dev", "small", "prod", "global"])
def test_every_stack_file_is_valid(stack: str) -> None:
    cfg = parse_platform_config(stack_raw(stack))
    assert cfg.tier == stack


def group(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in raw["node_groups"] if g["name"] == name)


def test_unknown_gpu_class_names_key_value_and_allowed() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    group(raw, "gpu-a10g")["gpu"] = "h100x"
    msg = error_for(raw)
    assert msg.startswith("stacks/Pulumi.test.yaml: llm-platform:node_groups[1].gpu:")
    assert '"h100x"' in msg and "'a10g'" in msg and "'a100'" in msg


def test_min_greater_than_max() -> None:
    raw = copy.deepcopy(stack_raw("prod"))
    g = group(raw, "gpu-a100")
    g.update(min_size=3, desired_size=3, max_size=2)
    msg = error_for(raw)
    assert "llm-platform:node_groups[2]" in msg
    assert "min_size=3" in msg and "max_size=2" in msg and "min_size <= desired_size <= max_size" in msg


def test_g5_type_in_a100_group() -> None:
    raw = copy.deepcopy(stack_raw("prod"))
    group(raw, "gpu-a100")["instance_types"] = ["g5.12xlarge"]
    msg = error_for(raw)
    assert "llm-platform:node_groups[2]" in msg and "'g5.12xlarge'" in msg and "p4d.*/p4de.*" in msg


def test_gpu_type_in_cpu_group() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    group(raw, "system")["instance_types"] = ["g5.xlarge"]
    assert "GPU type (a10g) in a CPU group" in error_for(raw)


def test_mixed_gpu_counts_rejected() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    group(raw, "gpu-a10g")["instance_types"] = ["g5.xlarge", "g5.12xlarge"]
    assert "same GPU count" in error_for(raw)


def test_unknown_key_rejected() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["cluster"]["endpoint_public"] = True
    msg = error_for(raw)
    assert "llm-platform:cluster.endpoint_public" in msg and "xtra inputs are not permitted" in msg


def test_unknown_instance_type() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    group(raw, "system")["instance_types"] = ["m5.huge"]
    msg = error_for(raw)
    assert "node_groups[0].instance_types" in msg and "'m5.huge'" in msg


def test_public_endpoint_open_to_world_rejected() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["cluster"]["public_access_cidrs"] = ["0.0.0.0/0"]
    msg = error_for(raw)
    assert "llm-platform:cluster.public_access_cidrs" in msg and "0.0.0.0/0" in msg


def test_unsupported_eks_version() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["cluster"]["version"] = "1.24"
    msg = error_for(raw)
    assert "llm-platform:cluster.version" in msg and '"1.24"' in msg and "1.33" in msg


def test_overlapping_region_cidrs() -> None:
    raw = copy.deepcopy(stack_raw("global"))
    raw["regions"][1]["vpc_cidr"] = "10.40.128.0/17"
    msg = error_for(raw)
    assert "overlaps" in msg and "10.40.0.0/16" in msg


def test_az_count_bounds_and_tier_region_count() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["regions"][0]["az_count"] = 9
    assert "llm-platform:regions[0].az_count: got 9" in error_for(raw)
    raw = copy.deepcopy(stack_raw("dev"))
    raw["regions"].append({"name": "eu-west-1", "az_count": 2, "vpc_cidr": "10.99.0.0/16"})
    assert "single-region" in error_for(raw)


def test_missing_addon_version() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    del raw["cluster"]["addons"]["coredns"]
    assert "llm-platform:cluster.addons" in error_for(raw) and "coredns" in error_for(raw)


def test_missing_required_key() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    del raw["cluster"]
    assert error_for(raw).endswith("llm-platform:cluster: is required")


def test_needs_a_cpu_group() -> None:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["node_groups"] = [g for g in raw["node_groups"] if g.get("gpu")]
    assert "need a CPU group" in error_for(raw)
