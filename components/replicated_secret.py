"""`ReplicatedSecret`: a Secrets Manager secret in the home region, replicated by Secrets Manager into other regions.

Each replica is encrypted with a KMS key of its own region, so a workload reads its region's copy (same name, ARN
differing only in the region) through its region's Secrets Manager endpoint, and keeps reading it while the home
region is down. Replicas are read-only: the value is written once, in the home region, and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws


@dataclass
class SecretReplica:
    region: str
    kms_key_arn: pulumi.Input[str]
    """Customer-managed key of that region."""


@dataclass
class ReplicatedSecretArgs:
    description: str
    kms_key_arn: pulumi.Input[str]
    """Customer-managed key of the home region (the primary copy)."""
    value: pulumi.Input[str]
    """The secret string; wrapped as a Pulumi secret whatever the caller passes."""
    replicas: Sequence[SecretReplica]
    recovery_window_days: int = 7
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        regions = [r.region for r in self.replicas]
        if not regions or len(set(regions)) != len(regions):
            raise ValueError(f"replicas: got regions {regions}; allowed: one or more distinct regions")
        if not 7 <= self.recovery_window_days <= 30:
            raise ValueError(f"recovery_window_days: got {self.recovery_window_days}; allowed: 7 to 30")


class ReplicatedSecret(pulumi.ComponentResource):
    """Secret + value, with one KMS-encrypted replica per other region."""

    arn: pulumi.Output[str]
    """ARN of the home copy; `regional_arn(arn, region)` gives a replica's."""

    def __init__(self, name: str, args: ReplicatedSecretArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:ReplicatedSecret", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            name,
            description=args.description,
            kms_key_id=args.kms_key_arn,
            replicas=[{"region": r.region, "kms_key_id": r.kms_key_arn} for r in args.replicas],
            recovery_window_in_days=args.recovery_window_days,
            tags=args.tags,
            opts=child,
        )
        value: pulumi.Output[str] = pulumi.Output.secret(args.value)
        aws.secretsmanager.SecretVersion(f"{name}-value", secret_id=secret.id, secret_string=value, opts=child)
        self.arn = secret.arn
        self.register_outputs({"arn": self.arn})


def regional_arn(arn: pulumi.Input[str], region: str) -> pulumi.Output[str]:
    """The ARN of a replicated secret's copy in `region` (replicas keep the name and suffix; only the region differs)."""
    def swap(value: str) -> str:
        parts = value.split(":")
        return ":".join([*parts[:3], region, *parts[4:]]) if len(parts) > 4 else value

    return pulumi.Output.from_input(arn).apply(swap)
