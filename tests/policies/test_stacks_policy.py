"""Every stack, rendered through the real program, passes every mandatory rule of the pack with its own config.

When this fails, the message lists each violation as `rule | resource type name | message`: the resource that
regressed (or the rule that needs a config threshold or a written exception in policies/config/<stack>.json).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.render import Rendering, known_stacks
from policies.offline import evaluate, mandatory


@pytest.mark.parametrize("stack", known_stacks())
def test_stack_passes_every_mandatory_rule(stack: str, rendered: Callable[[str], Rendering]) -> None:
    violations = mandatory(evaluate(rendered(stack), stack))
    listing = "\n".join(f"  {v.rule} | {v.resource_type} {v.resource_name} | {v.message}" for v in violations)
    assert not violations, f"{stack}: {len(violations)} mandatory policy violation(s):\n{listing}"


@pytest.mark.parametrize("stack", known_stacks())
def test_stack_exercises_the_pack(stack: str, rendered: Callable[[str], Rendering]) -> None:
    """A rule that meets no resource proves nothing: the core AWS rules must each see their resources."""
    types = {r.type for r in rendered(stack).resources}
    for required in ("aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup", "aws:ec2/launchTemplate:LaunchTemplate",
                     "aws:ec2/vpc:Vpc", "aws:ec2/flowLog:FlowLog", "aws:kms/key:Key"):
        assert required in types, f"{stack} renders no {required}"
