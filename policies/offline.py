"""Run the policy pack against a rendered stack, without the Pulumi CLI.

`evaluate(rendering, stack)` feeds every rendered resource (type, camelCase inputs with secrets unwrapped, URN,
property dependencies) through the very `pulumi_policy` Policy objects the pack registers, the way the engine's
analyzer does: resource policies get `ResourceValidationArgs`, stack policies one `StackValidationArgs` with
`PolicyResource`s, each policy its config from `policies/config/<stack>.json` with the schema defaults filled in
(the engine fills them; the SDK does not). A policy that reads an unknown value reports what it could check and
ends with `UnknownValueError`, which becomes one advisory violation, as the engine does during a preview.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from policies.core import Rule
from policies.registry import POLICIES, RULES, RULES_BY_ID

if TYPE_CHECKING:
    from infra.render import RenderedResource, Rendering

CONFIG_DIR = Path(__file__).resolve().parent / "config"
LEVELS = {level.value: level for level in EnforcementLevel}


class PolicyConfigError(Exception):
    """A policy config file is invalid: one line naming the file, the key, the value and what is allowed."""


@dataclass(frozen=True)
class Violation:
    rule: str
    urn: str
    resource_type: str
    resource_name: str
    message: str
    enforcement: str  # "mandatory" or "advisory"

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"[{self.enforcement}] {self.rule}: {self.resource_type} {self.resource_name}: {self.message}"


@dataclass(frozen=True)
class PolicySettings:
    """One policy's effective enforcement level and config (schema defaults + the stack's values)."""

    enforcement: EnforcementLevel
    config: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------

def config_path(stack: str) -> Path:
    return CONFIG_DIR / f"{stack}.json"


def known_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(stack: str) -> dict[str, Any]:
    path = config_path(stack)
    if not path.is_file():
        raise PolicyConfigError(f"stack '{stack}': no policy config {path.name} in policies/config/; "
                                f"known: {', '.join(known_configs())}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PolicyConfigError(f"policies/config/{path.name}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise PolicyConfigError(f"policies/config/{path.name}: got {type(data).__name__}; expected an object keyed by rule id")
    return data


def resolve_settings(raw: Mapping[str, Any], source: str = "policy config") -> dict[str, PolicySettings]:
    """Validate a pack config (the `--policy-pack-config` format) and resolve every rule's settings."""
    default_level: EnforcementLevel | None = None
    if "all" in raw:
        default_level = _level(raw["all"], f"{source}: all")
    unknown = sorted(set(raw) - set(RULES_BY_ID) - {"all"})
    if unknown:
        raise PolicyConfigError(f"{source}: {unknown[0]}: unknown rule; allowed: one of the ids of `policy --list`")
    settings: dict[str, PolicySettings] = {}
    for rule in RULES:
        entry = raw.get(rule.id, {})
        level = default_level or rule.enforcement
        props: dict[str, Any] = {}
        if isinstance(entry, str):
            level = _level(entry, f"{source}: {rule.id}")
        elif isinstance(entry, dict):
            props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
            if "enforcementLevel" in entry:
                level = _level(entry["enforcementLevel"], f"{source}: {rule.id}.enforcementLevel")
            _validate_props(rule, props, source)
        else:
            raise PolicyConfigError(f"{source}: {rule.id}: got {json.dumps(entry)}; expected an object or an enforcement level")
        settings[rule.id] = PolicySettings(level, {**rule.defaults(), **props})
    return settings


def _level(value: Any, where: str) -> EnforcementLevel:
    if value not in LEVELS:
        raise PolicyConfigError(f"{where}: got {json.dumps(value)}; allowed: {', '.join(LEVELS)}")
    return LEVELS[value]


def _validate_props(rule: Rule, props: Mapping[str, Any], source: str) -> None:
    schema = rule.config_schema()
    extra = sorted(set(props) - set(schema["properties"]))
    if extra:
        raise PolicyConfigError(f"{source}: {rule.id}.{extra[0]}: unknown setting; allowed: {', '.join(schema['properties'])}")
    try:
        jsonschema.validate(dict(props), {"type": "object", **schema})
    except jsonschema.ValidationError as err:
        key = ".".join(str(p) for p in err.absolute_path)
        raise PolicyConfigError(f"{source}: {rule.id}.{key}: got {json.dumps(err.instance)}; {err.message}") from None


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------

def _props(resource: RenderedResource) -> Mapping[str, Any]:
    from infra.render import unwrap_secrets

    # The engine hands policies plain values (secrets unwrapped) behind the unknown-checking proxy.
    return unknown_checking_proxy(unwrap_secrets(resource.inputs))


def _options(resource: RenderedResource) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], resource.parent)


def evaluate(rendering: Rendering, stack: str, config: Mapping[str, Any] | None = None) -> list[Violation]:
    """Every violation of the pack on a rendered stack; `config` replaces policies/config/<stack>.json."""
    raw = load_config(stack) if config is None else config
    settings = resolve_settings(raw, f"policies/config/{stack}.json" if config is None else "policy config")
    return evaluate_resources(rendering.resources, settings)


def evaluate_resources(resources: Sequence[RenderedResource], settings: Mapping[str, PolicySettings],
                       policies: Sequence[Policy] = POLICIES) -> list[Violation]:
    by_urn = {r.urn: r for r in resources}
    # Built once and shared by every policy: the rules only read their props.
    props = {r.urn: _props(r) for r in resources}
    stack_resources = _policy_resources(resources, props)
    violations: list[Violation] = []
    for policy in policies:
        setting = settings[policy.name]
        if setting.enforcement == EnforcementLevel.DISABLED:
            continue
        level = "advisory" if setting.enforcement == EnforcementLevel.ADVISORY else "mandatory"
        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                _validate_one(policy, resource, props[resource.urn], setting, level, violations)
        elif isinstance(policy, StackValidationPolicy):
            stack_args = StackValidationArgs(stack_resources, setting.config)
            report = _reporter(violations, policy.name, level, lambda urn: by_urn.get(urn or ""))
            _run(policy.name, lambda: policy.validate(stack_args, report), None, violations)
    return violations


def _validate_one(policy: ResourceValidationPolicy, resource: RenderedResource, props: Mapping[str, Any],
                  setting: PolicySettings, level: str, sink: list[Violation]) -> None:
    args = ResourceValidationArgs(resource.type, props, resource.urn, resource.name,
                                  _options(resource), None, setting.config)
    report = _reporter(sink, policy.name, level, lambda _urn: resource)
    _run(policy.name, lambda: policy.validate(args, report), resource, sink)


def _reporter(sink: list[Violation], rule: str, level: str,
              find: Callable[[str | None], RenderedResource | None]) -> Callable[[str, str | None], None]:
    def report_violation(message: str, urn: str | None = None) -> None:
        resource = find(urn)
        sink.append(Violation(rule=rule, urn=resource.urn if resource else (urn or ""),
                              resource_type=resource.type if resource else "pulumi:pulumi:Stack",
                              resource_name=resource.name if resource else "", message=message, enforcement=level))
    return report_violation


def _run(rule: str, call: Callable[[], Any], resource: RenderedResource | None, sink: list[Violation]) -> None:
    try:
        call()
    except UnknownValueError as err:
        # What the engine does with it during a preview: one advisory diagnostic for the skipped part.
        sink.append(Violation(rule=rule, urn=resource.urn if resource else "",
                              resource_type=resource.type if resource else "pulumi:pulumi:Stack",
                              resource_name=resource.name if resource else "",
                              message=f"can't run policy '{rule}' during preview: {err.message}", enforcement="advisory"))


def _policy_resources(resources: Sequence[RenderedResource], props: Mapping[str, Mapping[str, Any]]) -> list[PolicyResource]:
    built = {r.urn: PolicyResource(r.type, props[r.urn], r.urn, r.name, _options(r), None, None, [], {}) for r in resources}
    for r in resources:
        node = built[r.urn]
        if r.parent in built:
            node.parent = built[r.parent]
        for key, urns in getattr(r, "property_dependencies", {}).items():
            node.property_dependencies[key] = [built[u] for u in urns if u in built]
            node.dependencies.extend(built[u] for u in urns if u in built and built[u] not in node.dependencies)
    return list(built.values())


def mandatory(violations: Sequence[Violation]) -> list[Violation]:
    return [v for v in violations if v.enforcement == "mandatory"]


def list_rules() -> list[dict[str, Any]]:
    """Every rule with its controls, enforcement, kind, resource types, remediation and config defaults."""
    return [
        {
            "id": r.id,
            "controls": list(r.controls),
            "enforcement": r.enforcement.value,
            "kind": r.kind,
            "description": r.description,
            "remediation": r.remediation,
            "types": list(r.types),
            "policies_md": list(r.policies_md),
            "config": {k: v for k, v in r.defaults().items() if k != "exceptions"},
        }
        for r in RULES
    ]
