"""Secrets Manager secrets (POLICIES.md 37)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import ADVISORY, MANDATORY, Res, Rule, Settings, Stack

SECRET = "aws:secretsmanager/secret:Secret"
ROTATION = "aws:secretsmanager/secretRotation:SecretRotation"


def customer_key(r: Res, s: Settings) -> Iterator[str]:
    if not r.get("kmsKeyId"):
        yield "kmsKeyId is not set (AWS-managed aws/secretsmanager key)"


def rotated(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if not stack.dependents(subject, (ROTATION,), "secretId"):
        yield ("has no aws.secretsmanager.SecretRotation; if the consuming service cannot rotate it, "
               "record an exception with the reason")


RULES = [
    Rule(
        id="secrets-kms",
        controls=("FSBP SecretsManager.1", "CIS EKS 4.4.2", "CKV_AWS_149"),
        summary="Secrets Manager secrets are encrypted with a customer-managed KMS key",
        remediation="Set kmsKeyId to the platform's KMS key ARN.",
        enforcement=MANDATORY, types=(SECRET,), checks=(customer_key,), policies_md=(37,),
    ),
    Rule(
        id="secrets-rotation",
        controls=("FSBP SecretsManager.1", "FSBP SecretsManager.4"),
        summary="Secrets Manager secrets rotate automatically where the service supports it",
        remediation="Add aws.secretsmanager.SecretRotation, or use RDS-managed master passwords (rotated by RDS).",
        enforcement=ADVISORY, types=(SECRET,), stack_checks=(rotated,), policies_md=(37,),
    ),
]
