"""Helpers for the policy tests: run one rule on rendered resources, mutate a rendered resource."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from infra.render import RenderedResource
from policies.offline import Violation, evaluate_resources, load_config, resolve_settings
from policies.registry import POLICIES

Resources = list[RenderedResource]
# A mutation returns the changed resource list and the URN of the resource that must now be flagged.
Mutation = Callable[[Resources], tuple[Resources, str]]


def run_rule(rule_id: str, resources: Resources, config: Mapping[str, Any] | None = None) -> list[Violation]:
    """One rule, with the prod policy config (or `config`), exactly as the offline runner evaluates it."""
    settings = resolve_settings(load_config("prod") if config is None else config)
    policy = next(p for p in POLICIES if p.name == rule_id)
    return evaluate_resources(resources, settings, [policy])


def find(resources: Resources, type_token: str, name_contains: str = "") -> RenderedResource:
    for r in resources:
        if r.type == type_token and name_contains in r.name:
            return r
    raise LookupError(f"no {type_token} named *{name_contains}* among {sorted({r.type for r in resources})}")


def edit(type_token: str, change: Callable[[dict[str, Any]], None], name_contains: str = "",
         flag: tuple[str, str] | None = None) -> Mutation:
    """Deep-copy the first matching resource's inputs and apply `change`; that resource (or the first of `flag`
    (type, name part), for stack rules that report on a related resource) must then be flagged."""
    def mutate(resources: Resources) -> tuple[Resources, str]:
        target = find(resources, type_token, name_contains)
        inputs = copy.deepcopy(target.inputs)
        change(inputs)
        changed = dataclasses.replace(target, inputs=inputs)
        flagged = find(resources, *flag).urn if flag else target.urn
        return [changed if r is target else r for r in resources], flagged
    return mutate


def drop(type_token: str, flagged_type: str, name_contains: str = "") -> Mutation:
    """Remove every resource of `type_token`; the first `flagged_type` resource must then be flagged."""
    def mutate(resources: Resources) -> tuple[Resources, str]:
        return [r for r in resources if r.type != type_token], find(resources, flagged_type, name_contains).urn
    return mutate


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """inputs[a][b][0][c] = value for path "a.b.0.c" (intermediate dicts are created)."""
    def change(inputs: dict[str, Any]) -> None:
        node: Any = inputs
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = keys[-1]
        if value is DELETE:
            node.pop(last, None)
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return change


DELETE = object()
