"""RDS Postgres instances / clusters and their parameter groups (POLICIES.md 19-26)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import ADVISORY, MANDATORY, Res, Rule, Settings, as_list, number, truthy

INSTANCE = "aws:rds/instance:Instance"
CLUSTER = "aws:rds/cluster:Cluster"
CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
CLUSTER_PARAMETER_GROUP = "aws:rds/clusterParameterGroup:ClusterParameterGroup"
DATABASES = (INSTANCE, CLUSTER)


def _is_replica(r: Res) -> bool:
    # Read replicas inherit backups / Multi-AZ decisions from their source; those checks apply to primaries.
    return bool(r.get("replicateSourceDb")) or bool(r.get("replicationSourceIdentifier"))


def not_public(r: Res, s: Settings) -> Iterator[str]:
    if truthy(r.get("publiclyAccessible")):
        yield "publiclyAccessible is true"


def storage_encrypted(r: Res, s: Settings) -> Iterator[str]:
    if not truthy(r.get("storageEncrypted")):
        yield "storageEncrypted is not true"
    elif not r.get("kmsKeyId"):
        yield "kmsKeyId is not set (AWS-managed aws/rds key instead of a customer-managed key)"


def backup_retention(r: Res, s: Settings) -> Iterator[str]:
    if _is_replica(r):
        return
    days = number(r.get("backupRetentionPeriod"), default=1.0 if r.type == CLUSTER else 0.0)
    if days < s["min_days"]:
        yield f"backupRetentionPeriod is {days:g}; at least {s['min_days']} days required"


def multi_az(r: Res, s: Settings) -> Iterator[str]:
    if not s["required"] or _is_replica(r) or r.type != INSTANCE:
        return
    if not truthy(r.get("multiAz")):
        yield "multiAz is not true"


def deletion_protection(r: Res, s: Settings) -> Iterator[str]:
    if s["required"] and not truthy(r.get("deletionProtection")):
        yield "deletionProtection is not true"


def iam_auth(r: Res, s: Settings) -> Iterator[str]:
    if not truthy(r.get("iamDatabaseAuthenticationEnabled")):
        yield "iamDatabaseAuthenticationEnabled is not true"


def log_exports(r: Res, s: Settings) -> Iterator[str]:
    exported = {str(x) for x in as_list(r.get("enabledCloudwatchLogsExports"))}
    missing = [t for t in s["required_exports"] if t not in exported]
    if missing:
        yield f"enabledCloudwatchLogsExports misses {missing}"


def monitoring(r: Res, s: Settings) -> Iterator[str]:
    if r.type != INSTANCE:
        return
    if number(r.get("monitoringInterval")) <= 0 or not r.get("monitoringRoleArn"):
        yield "enhanced monitoring is off (monitoringInterval > 0 with monitoringRoleArn)"
    if not truthy(r.get("performanceInsightsEnabled")):
        yield "performanceInsightsEnabled is not true"
    elif not r.get("performanceInsightsKmsKeyId"):
        yield "performanceInsightsKmsKeyId is not set"


def force_ssl(r: Res, s: Settings) -> Iterator[str]:
    family = str(r.get("family", default=""))
    if not family.startswith("postgres") and not family.startswith("aurora-postgresql"):
        return
    values = {str(p.get("name")): str(p.get("value")) for p in as_list(r.get("parameters"))}
    if values.get("rds.force_ssl") != "1":
        yield f"rds.force_ssl is {values.get('rds.force_ssl', 'not set')}; set it to 1"


def hygiene(r: Res, s: Settings) -> Iterator[str]:
    if r.get("autoMinorVersionUpgrade") is not None and not truthy(r.get("autoMinorVersionUpgrade")):
        yield "autoMinorVersionUpgrade is false"
    if not truthy(r.get("copyTagsToSnapshot")):
        yield "copyTagsToSnapshot is not true"


RULES = [
    Rule(
        id="rds-not-public",
        controls=("FSBP RDS.2", "CKV_AWS_17"),
        summary="RDS databases are not publicly accessible",
        remediation="Set publiclyAccessible=false and place the database in private subnets.",
        enforcement=MANDATORY, types=(*DATABASES, CLUSTER_INSTANCE), checks=(not_public,), policies_md=(19,),
    ),
    Rule(
        id="rds-storage-encrypted",
        controls=("FSBP RDS.3", "CKV_AWS_16"),
        summary="RDS storage is encrypted with a customer-managed KMS key",
        remediation="Set storageEncrypted=true and kmsKeyId to the platform's KMS key ARN.",
        enforcement=MANDATORY, types=DATABASES, checks=(storage_encrypted,), policies_md=(20,),
    ),
    Rule(
        id="rds-backup-retention",
        controls=("FSBP RDS.11", "CKV_AWS_133"),
        summary="RDS keeps automated backups for at least N days (policy config min_days)",
        remediation="Set backupRetentionPeriod >= min_days.",
        enforcement=MANDATORY, types=DATABASES, checks=(backup_retention,), policies_md=(21,),
        config={"min_days": {"type": "integer", "minimum": 1, "maximum": 35, "default": 7}},
    ),
    Rule(
        id="rds-multi-az",
        controls=("FSBP RDS.5", "FSBP RDS.15", "CKV_AWS_157"),
        summary="RDS primaries run Multi-AZ where the tier requires it (policy config `required`)",
        remediation="Set multiAz=true: a synchronous standby in a second AZ takes over on failure.",
        enforcement=MANDATORY, types=DATABASES, checks=(multi_az,), policies_md=(22,),
        config={"required": {"type": "boolean", "default": True}},
    ),
    Rule(
        id="rds-deletion-protection",
        controls=("FSBP RDS.8", "FSBP RDS.7", "CKV_AWS_293"),
        summary="RDS databases have deletion protection where the tier requires it (policy config `required`)",
        remediation="Set deletionProtection=true (turn it off explicitly before an intended delete).",
        enforcement=MANDATORY, types=DATABASES, checks=(deletion_protection,), policies_md=(23,),
        config={"required": {"type": "boolean", "default": True}},
    ),
    Rule(
        id="rds-iam-auth",
        controls=("FSBP RDS.10", "FSBP RDS.12", "CKV_AWS_161"),
        summary="RDS databases accept IAM database authentication",
        remediation="Set iamDatabaseAuthenticationEnabled=true so IAM roles, not shared passwords, can log in.",
        enforcement=MANDATORY, types=DATABASES, checks=(iam_auth,), policies_md=(24,),
    ),
    Rule(
        id="rds-log-exports",
        controls=("FSBP RDS.9", "CKV_AWS_129"),
        summary="RDS exports the database log to CloudWatch Logs",
        remediation="Set enabledCloudwatchLogsExports=['postgresql', 'upgrade'].",
        enforcement=MANDATORY, types=DATABASES, checks=(log_exports,), policies_md=(25,),
        config={"required_exports": {"type": "array", "items": {"type": "string"}, "default": ["postgresql"]}},
    ),
    Rule(
        id="rds-monitoring",
        controls=("FSBP RDS.6", "CKV_AWS_118", "CKV_AWS_353", "CKV_AWS_354"),
        summary="RDS instances have enhanced monitoring and Performance Insights encrypted with a KMS key",
        remediation="Set monitoringInterval (e.g. 60) with monitoringRoleArn, performanceInsightsEnabled=true and "
                    "performanceInsightsKmsKeyId.",
        enforcement=ADVISORY, types=(INSTANCE,), checks=(monitoring,), policies_md=(25,),
    ),
    Rule(
        id="rds-force-ssl",
        controls=("FSBP RDS.13", "CKV2_AWS_69"),
        summary="Postgres parameter groups force TLS for every connection (rds.force_ssl=1)",
        remediation="Add parameters=[{name: 'rds.force_ssl', value: '1'}] to the parameter group.",
        enforcement=MANDATORY, types=(PARAMETER_GROUP, CLUSTER_PARAMETER_GROUP), checks=(force_ssl,), policies_md=(26,),
    ),
    Rule(
        id="rds-hygiene",
        controls=("FSBP RDS.13", "FSBP RDS.17"),
        summary="RDS databases take minor version upgrades and copy tags to snapshots",
        remediation="Leave autoMinorVersionUpgrade on and set copyTagsToSnapshot=true.",
        enforcement=ADVISORY, types=DATABASES, checks=(hygiene,), policies_md=(26,),
    ),
]
