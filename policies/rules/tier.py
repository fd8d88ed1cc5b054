"""Tier budget guards on node groups: GPU nodes, instance types, spot capacity (POLICIES.md 46).

The thresholds are per stack (policies/config/<stack>.json), so the same pack stops a dev stack from growing a
32-GPU node group while letting prod have one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from infra.instances import INSTANCE_SPECS, gpu_class_of
from policies.core import MANDATORY, Res, Rule, Settings, Stack, as_list, number

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"


def instance_types(group: Res, stack: Stack) -> list[str]:
    """The node group's instance types, or its launch template's when the template carries the type."""
    types = [str(t) for t in as_list(group.get("instanceTypes"))]
    if not types:
        for urn in group.deps.get("launchTemplate", ()):
            template = stack.by_urn(urn)
            if template is not None and template.type == LAUNCH_TEMPLATE and template.get("instanceType"):
                types.append(str(template.get("instanceType")))
    return types


def gpus_per_node(group: Res, stack: Stack) -> int:
    counts = [INSTANCE_SPECS[t].gpus for t in instance_types(group, stack) if t in INSTANCE_SPECS and gpu_class_of(t)]
    if counts:
        return max(counts)
    # An unknown GPU type still counts as a GPU node (one GPU at least) when the AMI is the NVIDIA one.
    return 1 if "NVIDIA" in str(group.get("amiType", default="")).upper() else 0


def gpu_budget(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if gpus_per_node(subject, stack) == 0:
        return
    total = 0.0
    parts: list[str] = []
    for group in stack.of_type(NODE_GROUP):
        if gpus_per_node(group, stack) == 0:
            continue
        size = number(group.get("scalingConfig", "maxSize"))
        total += size
        parts.append(f"{group.name} {size:g}")
        if group.urn == subject.urn:
            # Reported once: on the first group that takes the running total over the budget.
            if total > s["max_gpu_nodes"] and total - size <= s["max_gpu_nodes"]:
                yield (f"GPU node groups can scale to {total:g} nodes ({', '.join(parts)}); "
                       f"this tier's budget is {s['max_gpu_nodes']} (policy config max_gpu_nodes)")
            return


def allowed_types(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    types = instance_types(subject, stack)
    if not types:
        yield "instance type is not declared (instanceTypes or launch template instanceType)"
    for t in types:
        if not any(fnmatch.fnmatchcase(t, p) for p in s["allowed_instance_types"]):
            allowed = ", ".join(s["allowed_instance_types"]) or "none: set allowed_instance_types in the stack's policy config"
            yield f"instance type {t} is not allowed in this tier ({allowed})"


def spot(r: Res, s: Settings) -> Iterator[str]:
    if str(r.get("capacityType", default="ON_DEMAND")) == "SPOT" and not s["spot_allowed"]:
        yield "capacityType SPOT is not allowed in this tier"


RULES = [
    Rule(
        id="tier-gpu-node-budget",
        controls=("llm-platform tier budget",),
        summary="GPU node groups together scale to at most the tier's GPU node budget (policy config max_gpu_nodes)",
        remediation="Lower node_groups[*].max_size of GPU groups, or raise max_gpu_nodes in the stack's policy config "
                    "after the budget owner agrees.",
        enforcement=MANDATORY, types=(NODE_GROUP,), stack_checks=(gpu_budget,), policies_md=(46,),
        config={"max_gpu_nodes": {"type": "integer", "minimum": 0, "default": 0}},
    ),
    Rule(
        id="tier-instance-types",
        controls=("llm-platform tier budget",),
        summary="Node groups use only the tier's allowed instance types (policy config allowed_instance_types)",
        remediation="Pick an allowed type or extend allowed_instance_types in the stack's policy config.",
        enforcement=MANDATORY, types=(NODE_GROUP,), stack_checks=(allowed_types,), policies_md=(46,),
        config={"allowed_instance_types": {"type": "array", "items": {"type": "string"}, "default": []}},
    ),
    Rule(
        id="tier-spot-capacity",
        controls=("llm-platform tier budget",),
        summary="Spot capacity only where the tier allows it (policy config spot_allowed)",
        remediation="Set capacity: ON_DEMAND for the node group, or spot_allowed in the stack's policy config.",
        enforcement=MANDATORY, types=(NODE_GROUP,), checks=(spot,), policies_md=(46,),
        config={"spot_allowed": {"type": "boolean", "default": False}},
    ),
]
