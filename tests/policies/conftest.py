"""Fixtures of the policy tests."""

from __future__ import annotations

import pytest

from infra.render import Rendering, render_function
from tests.policies.policy_reference import reference_program


@pytest.fixture(scope="session")
def reference() -> Rendering:
    """The compliant reference platform (policy_reference.py), rendered once per session under the prod stack name."""
    return render_function(reference_program, stack="prod")
