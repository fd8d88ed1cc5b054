"""Customer-managed KMS keys with the platform's secure defaults (POLICIES.md #36).

Every key: rotation on, a 30-day deletion window, no policy-lockout bypass, and a key policy that keeps the account
in control (so IAM policies can grant use) plus exactly the AWS service principals that encrypt with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws


@dataclass
class EncryptionKeyArgs:
    description: str
    """What the key protects; shown in the KMS console."""
    service_principals: Sequence[pulumi.Input[str]] = field(default_factory=tuple)
    """Service principals that use the key directly (e.g. `logs.us-east-1.amazonaws.com` for encrypted log groups)."""
    service_linked_roles: Sequence[str] = field(default_factory=tuple)
    """Service-linked role paths (after `role/`) that need grants, e.g. the Auto Scaling role for encrypted EBS volumes."""
    deletion_window_days: int = 30
    tags: dict[str, str] = field(default_factory=dict)


def _service_condition(principal: str, account_id: str, partition: str) -> dict[str, object]:
    """Scope a service's use of the key to this account, the way that service documents it.

    CloudWatch Logs encrypts with the log group ARN as encryption context (it does not send aws:SourceAccount).
    """
    if principal.startswith("logs."):
        region = principal.split(".")[1]
        return {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:{partition}:logs:{region}:{account_id}:log-group:*"}}
    return {"StringEquals": {"aws:SourceAccount": account_id}}


class EncryptionKey(pulumi.ComponentResource):
    """A rotated customer-managed KMS key with an alias."""

    key: aws.kms.Key
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: EncryptionKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:security:EncryptionKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self))

        def policy(account_id: str, part: str, principals: list[str]) -> str:
            statements: list[dict[str, object]] = [
                {
                    "Sid": "AccountAdministers",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{part}:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ]
            for principal in principals:
                statements.append(
                    {
                        # IAM's policy grammar allows only [A-Za-z0-9] in a Sid (logs.us-east-1 -> LogsUseast1).
                        "Sid": "ServiceEncrypts" + "".join(w.capitalize() for w in re.split(r"[^0-9A-Za-z]+", ".".join(principal.split(".")[:2]))),
                        "Effect": "Allow",
                        "Principal": {"Service": principal},
                        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                        "Resource": "*",
                        "Condition": _service_condition(principal, account_id, part),
                    }
                )
            if args.service_linked_roles:
                roles = [f"arn:{part}:iam::{account_id}:role/{r}" for r in args.service_linked_roles]
                statements.append(
                    {
                        "Sid": "ServiceLinkedRolesUse",
                        "Effect": "Allow",
                        "Principal": {"AWS": roles},
                        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                        "Resource": "*",
                    }
                )
                statements.append(
                    {
                        "Sid": "ServiceLinkedRolesGrant",
                        "Effect": "Allow",
                        "Principal": {"AWS": roles},
                        "Action": "kms:CreateGrant",
                        "Resource": "*",
                        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
                    }
                )
            return json.dumps({"Version": "2012-10-17", "Statement": statements})

        self.key = aws.kms.Key(
            f"{name}-key",
            description=args.description,
            enable_key_rotation=True,
            deletion_window_in_days=args.deletion_window_days,
            bypass_policy_lockout_safety_check=False,
            policy=pulumi.Output.all(identity.account_id, partition.partition, pulumi.Output.all(*args.service_principals)).apply(
                lambda v: policy(str(v[0]), str(v[1]), [str(p) for p in v[2]])
            ),
            tags=args.tags,
            opts=child,
        )
        aws.kms.Alias(f"{name}-alias", name=f"alias/{name}", target_key_id=self.key.key_id, opts=child)
        self.arn = self.key.arn
        self.register_outputs({"arn": self.arn})
