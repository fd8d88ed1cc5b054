"""IAM policy helpers for the delivery tests: which statements apply to an action on a resource, and every policy
document a rendering holds.

`statement_applies` evaluates Action/NotAction and Resource/NotResource the way IAM does (case-insensitive action
wildcards, case-sensitive ARN wildcards) and ignores Condition: callers that need a condition read it themselves.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from infra.render import Rendering, RenderedResource


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, case_sensitive: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def action_matches(pattern: str, action: str) -> bool:
    return _wildcard(pattern, action, case_sensitive=False)


def statement_applies(statement: dict[str, Any], action: str, resource: str) -> bool:
    """Whether `statement` covers `action` on `resource` (conditions aside)."""
    if "Action" in statement:
        hit = any(action_matches(p, action) for p in as_list(statement["Action"]))
    else:
        hit = not any(action_matches(p, action) for p in as_list(statement.get("NotAction", [])))
    if not hit:
        return False
    if "Resource" in statement:
        return any(_wildcard(p, resource, case_sensitive=True) for p in as_list(statement["Resource"]))
    if "NotResource" in statement:
        return not any(_wildcard(p, resource, case_sensitive=True) for p in as_list(statement["NotResource"]))
    return True


def allowed(doc: dict[str, Any], action: str, resource: str) -> bool:
    """Allowed by this one policy: an unconditional Allow applies and no Deny (conditional or not) applies."""
    statements = as_list(doc["Statement"])
    if any(s["Effect"] == "Deny" and statement_applies(s, action, resource) and not s.get("Condition") for s in statements):
        return False
    return any(s["Effect"] == "Allow" and not s.get("Condition") and statement_applies(s, action, resource) for s in statements)


def policy_documents(rendering: Rendering) -> Iterator[tuple[RenderedResource, str, str]]:
    """(resource, input path, JSON text) of every IAM policy document in any input of any resource, nested too
    (role trust and inline policies, managed policies, key, bucket, log-resource, ECR, SNS, secret policies)."""

    def walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, str) and '"Statement"' in value:
            try:
                doc = json.loads(value)
            except ValueError:
                return
            if isinstance(doc, dict) and "Statement" in doc:
                yield path, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")

    for resource in rendering.resources:
        for path, text in walk(resource.inputs, ""):
            yield resource, path, text


def deploy_policy_resources(rendering: Rendering, env: str) -> list[RenderedResource]:
    """The managed policies attached to one environment's deploy role (the bootstrap splits them to fit IAM's size)."""
    role = next(r for r in rendering.of_type("aws:iam/role:Role") if str(r.inputs["name"]).endswith(f"-ci-deploy-{env}"))
    arns = {a.inputs["policyArn"] for a in rendering.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == role.inputs["name"]}
    found = [p for p in rendering.of_type("aws:iam/policy:Policy") if any(str(a).endswith(f":policy/{p.inputs['name']}") for a in arns)]
    # ReadOnlyAccess or another AWS-managed policy would not be among the bootstrap's own.
    assert found and len(found) == len(arns), (env, sorted(arns))
    return found


def deploy_document(rendering: Rendering, env: str) -> dict[str, Any]:
    """Every statement of the deploy role's managed policies, as one document (IAM evaluates them together)."""
    statements = [s for p in deploy_policy_resources(rendering, env) for s in as_list(json.loads(p.inputs["policy"])["Statement"])]
    return {"Version": "2012-10-17", "Statement": statements}


def trusted_services(rendering: Rendering) -> set[str]:
    """Service principals the rendered roles trust: the services the program hands a role to (PassRole targets)."""
    found: set[str] = set()
    for role in rendering.of_type("aws:iam/role:Role"):
        for statement in as_list(json.loads(role.inputs["assumeRolePolicy"])["Statement"]):
            principal = statement.get("Principal")
            if statement["Effect"] == "Allow" and isinstance(principal, dict) and "Service" in principal:
                found.update(as_list(principal["Service"]))
    return found


__all__ = ["action_matches", "allowed", "deploy_document", "deploy_policy_resources", "as_list", "policy_documents", "statement_applies", "trusted_services"]
