"""Shared fixtures. Pulumi mock state is set only inside infra.render (one harness, one place)."""

from __future__ import annotations

from typing import Callable

import pytest

from infra.render import Rendering, render


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], Rendering]:
    """`rendered("prod")`: the stack rendered once per test session through the real program under mocks."""
    cache: dict[str, Rendering] = {}

    def get(stack: str) -> Rendering:
        if stack not in cache:
            cache[stack] = render(stack)
        return cache[stack]

    return get
