"""IAM roles for Kubernetes service accounts (IRSA), each trusted by exactly one service account; and the trust
policy of roles AWS services assume (`service_trust_policy`).

The trust policy pins both OIDC claims EKS puts in a projected service-account token: `sub` must be the one
service account (`system:serviceaccount:<namespace>:<name>`) and `aud` must be `sts.amazonaws.com`. Without
the `sub` condition any pod in the cluster could assume the role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws


@dataclass
class ServiceAccountIdentity:
    """Where the role's trust comes from: the cluster's OIDC provider."""

    oidc_provider_arn: pulumi.Input[str]
    """ARN of the cluster's IAM OIDC provider."""
    oidc_issuer: pulumi.Input[str]
    """Issuer host and path without `https://`, e.g. `oidc.eks.us-east-1.amazonaws.com/id/ABC`."""


def service_trust_policy(service: str) -> str:
    """Trust policy of a role an AWS service assumes (`eks.amazonaws.com`, `monitoring.rds.amazonaws.com`, ...)."""
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
    )


def trust_policy(oidc_provider_arn: str, oidc_issuer: str, namespace: str, service_account: str) -> str:
    issuer = oidc_issuer.removeprefix("https://")
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                            f"{issuer}:aud": "sts.amazonaws.com",
                        }
                    },
                }
            ],
        }
    )


def service_account_role(
    name: str,
    identity: ServiceAccountIdentity,
    namespace: str,
    service_account: str,
    policy: pulumi.Input[str],
    parent: pulumi.Resource,
    tags: dict[str, str] | None = None,
) -> aws.iam.Role:
    """A role only `namespace/service_account` can assume, with `policy` (JSON) as its only permissions."""
    assume = pulumi.Output.all(identity.oidc_provider_arn, identity.oidc_issuer).apply(
        lambda v: trust_policy(str(v[0]), str(v[1]), namespace, service_account)
    )
    role = aws.iam.Role(
        name,
        assume_role_policy=assume,
        description=f"IRSA role for {namespace}/{service_account}",
        max_session_duration=3600,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    aws.iam.RolePolicy(
        f"{name}-policy",
        role=role.id,
        policy=policy,
        opts=pulumi.ResourceOptions(parent=role),
    )
    return role


def policy_document(statements: list[dict[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy document whose statements may hold Outputs (ARNs known only at deploy time)."""
    return pulumi.Output.from_input(statements).apply(lambda s: json.dumps({"Version": "2012-10-17", "Statement": s}))
