"""Every stack, rendered through the real program, passes every mandatory rule of the pack with its own config.

When this fails, the message lists each violation as `rule | resource type name | message`: the resource that
regressed (or the rule that needs a config threshold or a written exception in policies/config/<stack>.json).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.render import Rendering, known_stacks
from policies.offline import evaluate, mandatory
from policies.registry import RULES


@pytest.mark.parametrize("stack", known_stacks())
def test_stack_passes_every_mandatory_rule(stack: str, rendered: Callable[[str], Rendering]) -> None:
    violations = mandatory(evaluate(rendered(stack), stack))
    listing = "\n".join(f"  {v.rule} | {v.resource_type} {v.resource_name} | {v.message}" for v in violations)
    assert not violations, f"{stack}: {len(violations)} mandatory policy violation(s):\n{listing}"


# Rules with no subject in the stacks today, and why that is expected (anything else is a type-token mismatch).
NO_SUBJECTS_EXPECTED = {
    "k8s-rbac-least-privilege": "the platform declares no Role/ClusterRole/bindings itself; charts create theirs at install",
}


@pytest.mark.parametrize("stack", ["prod", "global"])
def test_every_rule_meets_its_resources(stack: str, rendered: Callable[[str], Rendering]) -> None:
    """A rule that meets no resource proves nothing: each rule's resource types must occur in the full tiers."""
    types = {r.type for r in rendered(stack).resources}
    idle = {rule.id for rule in RULES if not types & set(rule.types)}
    assert idle <= set(NO_SUBJECTS_EXPECTED), f"{stack}: rules that check nothing: {sorted(idle - set(NO_SUBJECTS_EXPECTED))}"
