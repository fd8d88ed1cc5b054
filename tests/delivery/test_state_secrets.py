"""Issue 16 (3): who can read the generated secrets in stack state.

Choice (README "Deploying for real"): the state keeps the generated secrets (Redis AUTH tokens, the ledger
password, the gateway admin token, Grafana's password). Pulumi stores even write-only `*_wo` inputs in state inputs,
as secrets (Pulumi docs "Write-only fields"; pulumi-terraform-bridge#3201 is open), and ElastiCache has no
AWS-generated AUTH token, so the program cannot keep them out. What holds instead:
- every such value is a Pulumi secret wherever it is stored (ciphertext under the stack's secrets key);
- the roles that may decrypt with the secrets key are exactly those behind a GitHub environment (reviewed
  previews and the deploy roles); the role any pull request can assume cannot.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import pytest

from bootstrap.program import main
from infra.render import Rendering, is_secret, render_function
from tests.delivery.iam_support import as_list, statement_applies

STACKS = ["dev", "small", "prod", "global"]
REPO = "acme-ai/llm-platform"


def occurrences(value: Any, secrets: list[str], path: str = "", wrapped: bool = False) -> Iterator[tuple[str, bool]]:
    """(input path, stored as a Pulumi secret?) of every generated secret value inside `value`."""
    if is_secret(value):
        yield from occurrences(value.get("value"), secrets, path, True)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from occurrences(item, secrets, f"{path}.{key}", wrapped)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from occurrences(item, secrets, f"{path}[{index}]", wrapped)
    elif isinstance(value, str) and any(s in value for s in secrets):
        yield path, wrapped


@pytest.mark.parametrize("stack", STACKS)
def test_generated_secrets_are_in_state_only_as_pulumi_secrets(rendered: Callable[[str], Rendering], stack: str) -> None:
    r = rendered(stack)
    assert r.generated_secrets, "the mocks saw no generated secret: the check below would pass vacuously"
    stored = [(x.type, x.name, path, wrapped) for x in r.resources for path, wrapped in occurrences(x.inputs, r.generated_secrets)]
    # The premise of the reviewed-preview gate: state does hold them (the Redis AUTH token at least).
    assert any(t == "aws:elasticache/replicationGroup:ReplicationGroup" for t, *_ in stored)
    plain = [(t, n, p) for t, n, p, wrapped in stored if not wrapped]
    assert not plain, f"generated secrets stored in plain text in state: {plain}"
    exported = json.dumps(r.public_outputs())
    assert not any(s in exported for s in r.generated_secrets), "a stack output carries a generated secret unmasked"


def test_only_roles_behind_an_environment_can_decrypt_the_secrets_key() -> None:
    boot = render_function(main, stack="bootstrap", config={"llm-platform-bootstrap:github_repository": REPO,
                                                            "llm-platform-bootstrap:region": "us-east-1"})
    secrets_key = boot.outputs["secrets_key_arn"]
    documents: dict[str, list[dict[str, Any]]] = {}
    for inline in boot.of_type("aws:iam/rolePolicy:RolePolicy"):
        documents.setdefault(inline.inputs["role"], []).append(json.loads(inline.inputs["policy"]))
    managed = {p.inputs["name"]: json.loads(p.inputs["policy"]) for p in boot.of_type("aws:iam/policy:Policy")}
    for attachment in boot.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
        name = attachment.inputs["policyArn"].rsplit("/", 1)[-1]
        if name in managed:
            documents.setdefault(attachment.inputs["role"], []).append(managed[name])
        else:
            # AWS-managed: only ReadOnlyAccess, which grants no kms:Decrypt (its actions are Describe/Get/List).
            assert attachment.inputs["policyArn"] == "arn:aws:iam::aws:policy/ReadOnlyAccess"

    def decrypts(docs: list[dict[str, Any]]) -> bool:
        statements = [s for d in docs for s in as_list(d["Statement"]) if statement_applies(s, "kms:Decrypt", secrets_key)]
        # A conditional deny here is the region guard: it does not apply in the key's own region.
        return any(s["Effect"] == "Allow" for s in statements) and not any(s["Effect"] == "Deny" and not s.get("Condition") for s in statements)

    can_decrypt = set()
    for role in boot.of_type("aws:iam/role:Role"):
        name = role.inputs["name"]
        if decrypts(documents.get(name, [])):
            can_decrypt.add(name)
            (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
            for subject in as_list(statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]):
                assert subject.startswith(f"repo:{REPO}:environment:"), (name, subject)
    assert can_decrypt == {"llm-platform-ci-reviewed-preview", *(f"llm-platform-ci-deploy-{s}" for s in STACKS)}
