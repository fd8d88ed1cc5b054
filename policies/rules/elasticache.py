"""ElastiCache Redis replication groups (POLICIES.md 15-18)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import MANDATORY, Res, Rule, Settings, as_list, number, truthy

REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"


def _is_global_secondary(r: Res) -> bool:
    # A Global Datastore secondary inherits encryption, auth and engine settings from the primary group.
    return bool(r.get("globalReplicationGroupId"))


def at_rest(r: Res, s: Settings) -> Iterator[str]:
    if not _is_global_secondary(r) and not truthy(r.get("atRestEncryptionEnabled")):
        yield "atRestEncryptionEnabled is not true"


def in_transit(r: Res, s: Settings) -> Iterator[str]:
    if _is_global_secondary(r):
        return
    if not truthy(r.get("transitEncryptionEnabled")):
        yield "transitEncryptionEnabled is not true"
    elif str(r.get("transitEncryptionMode", default="required")) != "required":
        yield f"transitEncryptionMode is {r.get('transitEncryptionMode')}: plaintext clients still accepted"


def authenticated(r: Res, s: Settings) -> Iterator[str]:
    if _is_global_secondary(r):
        return
    if not r.get("authToken") and not as_list(r.get("userGroupIds")):
        yield "neither authToken (AUTH) nor userGroupIds (RBAC) is set: any client in the network can connect"


def customer_key(r: Res, s: Settings) -> Iterator[str]:
    if not _is_global_secondary(r) and not r.get("kmsKeyId"):
        yield "kmsKeyId is not set (AWS-owned key)"


def multi_az(r: Res, s: Settings) -> Iterator[str]:
    if not s["required"]:
        return
    if not truthy(r.get("automaticFailoverEnabled")):
        yield "automaticFailoverEnabled is not true"
    if not truthy(r.get("multiAzEnabled")):
        yield "multiAzEnabled is not true"


def backups(r: Res, s: Settings) -> Iterator[str]:
    days = number(r.get("snapshotRetentionLimit"))
    if days < s["min_snapshot_retention_days"]:
        yield f"snapshotRetentionLimit is {days:g}; at least {s['min_snapshot_retention_days']} required"


def upgrades_and_subnets(r: Res, s: Settings) -> Iterator[str]:
    if r.get("autoMinorVersionUpgrade") is not None and not truthy(r.get("autoMinorVersionUpgrade")):
        yield "autoMinorVersionUpgrade is false"
    if not r.get("subnetGroupName"):
        yield "subnetGroupName is not set (the default subnet group spans the default VPC)"


RULES = [
    Rule(
        id="elasticache-encryption",
        controls=("FSBP ElastiCache.4", "FSBP ElastiCache.5", "FSBP ElastiCache.6", "CKV_AWS_29", "CKV_AWS_30", "CKV_AWS_31"),
        summary="Redis encrypts at rest and in transit (mode required) and requires AUTH or RBAC users",
        remediation="Set atRestEncryptionEnabled, transitEncryptionEnabled, transitEncryptionMode='required' and an "
                    "authToken from a generated secret (or userGroupIds).",
        enforcement=MANDATORY, types=(REPLICATION_GROUP,), checks=(at_rest, in_transit, authenticated), policies_md=(15,),
    ),
    Rule(
        id="elasticache-cmk",
        controls=("CKV_AWS_191",),
        summary="Redis at-rest encryption uses a customer-managed KMS key",
        remediation="Set kmsKeyId to the platform's KMS key ARN.",
        enforcement=MANDATORY, types=(REPLICATION_GROUP,), checks=(customer_key,), policies_md=(16,),
    ),
    Rule(
        id="elasticache-multi-az",
        controls=("FSBP ElastiCache.3", "CKV2_AWS_50"),
        summary="Redis fails over automatically across AZs where the tier requires it (policy config `required`)",
        remediation="Set automaticFailoverEnabled=true, multiAzEnabled=true and at least one replica.",
        enforcement=MANDATORY, types=(REPLICATION_GROUP,), checks=(multi_az,), policies_md=(17,),
        config={"required": {"type": "boolean", "default": True}},
    ),
    Rule(
        id="elasticache-backups-upgrades",
        controls=("FSBP ElastiCache.1", "FSBP ElastiCache.2", "FSBP ElastiCache.7", "CKV_AWS_134"),
        summary="Redis keeps snapshots for at least N days (policy config), takes minor upgrades, uses its own subnet group",
        remediation="Set snapshotRetentionLimit >= min_snapshot_retention_days, leave autoMinorVersionUpgrade on, "
                    "set subnetGroupName to the platform's private subnet group.",
        enforcement=MANDATORY, types=(REPLICATION_GROUP,), checks=(backups, upgrades_and_subnets), policies_md=(18,),
        config={"min_snapshot_retention_days": {"type": "integer", "minimum": 0, "maximum": 35, "default": 1}},
    ),
]
