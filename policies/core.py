"""The rule model shared by the CrossGuard pack and the offline runner.

A `Rule` is metadata (id, controls, remediation, enforcement, config schema with defaults) plus plain check
functions. `to_policy()` wraps it as a `pulumi_policy` ResourceValidationPolicy / StackValidationPolicy, so the
engine (`pulumi preview --policy-pack policies`) and `policies.offline.evaluate` call exactly the same code.

Unknown values during a real preview
------------------------------------
The engine hands a policy `args.props` wrapped by `pulumi_policy.proxy.unknown_checking_proxy`: reading a value
that is not known yet (an id or ARN of a resource still to be created) raises `UnknownValueError`. Left alone,
that exception aborts the whole policy for the resource and the SDK downgrades it to one advisory
"can't run policy during preview" line: a mandatory rule would silently not check the values it *could* see.

So every rule is split into small checks and every check runs on its own (`_run_checks`): a check that touches
an unknown value is skipped, the others still run and report their violations at the rule's enforcement level.
After all checks ran, if any were skipped, the policy re-raises one `UnknownValueError` naming every skipped
check and the unknown property path; the engine turns that into its advisory "can't run policy ... during
preview" diagnostic. Result: known values are enforced, unknown ones are reported as not checked, never passed.
During `pulumi up` the inputs are resolved before the policy runs, so every check runs then.
A property that is *absent* is not unknown: absent means the AWS default, and rules treat it as such.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

# ---------------------------------------------------------------------------------------------------------------
# What a check sees
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Res:
    """One resource as a check sees it: identical under the engine and offline."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    # input name -> URNs its value came from (stack checks only; empty for resource checks)
    deps: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def get(self, *path: str | int, default: Any = None) -> Any:
        return dig(self.props, *path, default=default)

    def depends_on(self, urn: str, *input_names: str) -> bool:
        names = input_names or tuple(self.deps)
        return any(urn in self.deps.get(n, ()) for n in names)


class Stack:
    """All resources of the stack, for stack checks: lookups by type and by dependency, never by value."""

    def __init__(self, resources: Sequence[Res]) -> None:
        self.resources = list(resources)

    def of_type(self, *types: str) -> list[Res]:
        return [r for r in self.resources if r.type in types]

    def dependents(self, target: Res, types: Sequence[str], *input_names: str) -> list[Res]:
        """Resources of `types` whose `input_names` (any input if none given) were computed from `target`."""
        return [r for r in self.of_type(*types) if r.depends_on(target.urn, *input_names)]

    def by_urn(self, urn: str) -> Res | None:
        for r in self.resources:
            if r.urn == urn:
                return r
        return None


def dig(value: Any, *path: str | int, default: Any = None) -> Any:
    """value[p0][p1]...; `default` where a key/index is missing or a level is None. Raises on unknowns."""
    for key in path:
        if value is None:
            return default
        if isinstance(key, int):
            if not is_list(value) or key >= len(value):
                return default
            value = value[key]
        else:
            if not isinstance(value, Mapping) or key not in value:
                return default
            value = value[key]
    return default if value is None else value


def is_list(value: Any) -> bool:
    """Lists under the engine are `Sequence` proxies, not `list`."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if is_list(value):
        return [value[i] for i in range(len(value))]
    return [value]


def truthy(value: Any) -> bool:
    """Booleans that some AWS inputs carry as strings ("true" in launch templates)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def number(value: Any, default: float = 0.0) -> float:
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------------------

Settings = Mapping[str, Any]
# A resource check yields violation messages for one resource.
ResourceCheck = Callable[[Res, Settings], Iterable[str]]
# A stack check runs once per subject resource (with the whole stack at hand) and yields messages about it.
StackCheck = Callable[[Res, Stack, Settings], Iterable[str]]

EXCEPTIONS_SCHEMA_KEY = "exceptions"


@dataclass(frozen=True)
class Rule:
    id: str
    controls: tuple[str, ...]
    summary: str
    remediation: str
    enforcement: EnforcementLevel
    # resource types the rule checks (resource rules) or iterates over as subjects (stack rules)
    types: tuple[str, ...]
    checks: tuple[ResourceCheck, ...] = ()
    stack_checks: tuple[StackCheck, ...] = ()
    # JSON-schema properties of the rule's own config, each with a "default"
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # the POLICIES.md row(s) this rule implements
    policies_md: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.checks) == bool(self.stack_checks):
            raise ValueError(f"rule {self.id}: give either resource checks or stack checks")
        for key, schema in self.config.items():
            if "default" not in schema:
                raise ValueError(f"rule {self.id}: config property {key!r} needs a default")

    @property
    def kind(self) -> str:
        return "stack" if self.stack_checks else "resource"

    @property
    def description(self) -> str:
        return f"{self.summary} [{', '.join(self.controls)}]"

    def config_schema(self) -> dict[str, Any]:
        """The policy's JSON schema: its thresholds plus the shared `exceptions` list."""
        props: dict[str, Any] = {k: dict(v) for k, v in self.config.items()}
        props[EXCEPTIONS_SCHEMA_KEY] = {
            "type": "array",
            "default": [],
            "description": "resources this rule does not apply to, each with the reason why",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["rule", "urn_or_name_pattern", "reason"],
                "properties": {
                    "rule": {"type": "string", "const": self.id},
                    "urn_or_name_pattern": {"type": "string", "minLength": 1,
                                            "description": "fnmatch pattern on the resource URN or logical name"},
                    "reason": {"type": "string", "minLength": 10, "description": "why the exception is acceptable"},
                },
            },
        }
        return {"properties": props}

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.config_schema()["properties"].items()}

    def to_policy(self) -> Union[ResourceValidationPolicy, StackValidationPolicy]:
        schema = PolicyConfigSchema(properties=self.config_schema()["properties"])
        if self.stack_checks:
            return StackValidationPolicy(
                name=self.id, description=self.description, validate=self._validate_stack,
                enforcement_level=self.enforcement, config_schema=schema, remediation_steps=self.remediation,
            )
        return ResourceValidationPolicy(
            name=self.id, description=self.description, validate=self._validate_resource,
            enforcement_level=self.enforcement, config_schema=schema, remediation_steps=self.remediation,
        )

    # --- the validate callbacks the engine (and the offline runner) call ---------------------------------------
    def _validate_resource(self, args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in self.types:
            return
        settings = self._settings(args.get_config())
        res = Res(type=args.resource_type, name=args.name, urn=args.urn, props=args.props)
        if is_excepted(res, settings):
            return
        skipped: list[tuple[str, UnknownValueError]] = []
        for check in self.checks:
            for message in _run_check(lambda: check(res, settings), check, res, skipped):
                report_violation(message, None)
        _raise_skipped(skipped)

    def _validate_stack(self, args: StackValidationArgs, report_violation: ReportViolation) -> None:
        settings = self._settings(args.get_config())
        stack = Stack([_res_from_policy_resource(r) for r in args.resources])
        skipped: list[tuple[str, UnknownValueError]] = []
        for subject in stack.of_type(*self.types):
            if is_excepted(subject, settings):
                continue
            for check in self.stack_checks:
                bound = (lambda c, s: lambda: c(s, stack, settings))(check, subject)
                for message in _run_check(bound, check, subject, skipped):
                    report_violation(message, subject.urn)
        _raise_skipped(skipped)

    def _settings(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        # The engine fills schema defaults; filling them here too keeps direct calls (tests, offline) identical.
        merged = self.defaults()
        merged.update(dict(config or {}))
        return merged


def _run_check(call: Callable[[], Iterable[str]], check: Callable[..., Any], res: Res,
               skipped: list[tuple[str, UnknownValueError]]) -> Iterator[str]:
    try:
        yield from call()
    except UnknownValueError as err:
        skipped.append((f"{getattr(check, '__name__', 'check')} on {res.urn}", err))


def _raise_skipped(skipped: list[tuple[str, UnknownValueError]]) -> None:
    if not skipped:
        return
    first = skipped[0][1]
    err = UnknownValueError(first.unknown_type_sentinel, first.props)
    err.message = "not checked, value unknown until apply: " + "; ".join(f"{what} ({e.message})" for what, e in skipped)
    raise err


def is_excepted(res: Res, settings: Settings) -> bool:
    for entry in as_list(settings.get(EXCEPTIONS_SCHEMA_KEY)):
        pattern = str(dig(entry, "urn_or_name_pattern", default=""))
        if pattern and (fnmatch.fnmatchcase(res.urn, pattern) or fnmatch.fnmatchcase(res.name, pattern)):
            return True
    return False


def _res_from_policy_resource(r: PolicyResource) -> Res:
    deps = {k: [d.urn for d in v] for k, v in (r.property_dependencies or {}).items()}
    return Res(type=r.resource_type, name=r.name, urn=r.urn, props=r.props, deps=deps)


# Re-exported for tests that simulate a preview.
UNKNOWN = UNKNOWN_STRING_VALUE
