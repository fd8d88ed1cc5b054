"""`PostgresReplica`: a cross-region RDS for PostgreSQL read replica of the usage ledger, ready to be promoted.

Why RDS cross-region replicas rather than Aurora Global Database: the regional tiers already run RDS for PostgreSQL
(`PostgresDatabase`), so the ledger keeps one engine, one parameter set and one migration path; a replica is added
to the existing primary without a data migration. Aurora Global would give a lower RPO (typically < 1 s) and
managed switchover, but means moving every tier's database to Aurora; it remains an option for later.

The replica carries the primary's hardening: private subnets, a security group open only to its cluster, storage
and Performance Insights encrypted with a customer-managed key of its own region (cross-region replicas cannot use
the source's key), TLS forced by its parameter group, IAM authentication, enhanced monitoring, log exports to
pre-created encrypted log groups, deletion protection, Multi-AZ and automated backups (so a promoted replica is a
complete primary at once).

Promotion is a config change: `promote=True` drops `replicate_source_db`, which makes the provider promote the
replica to a standalone primary on the next `pulumi up`. The master user and password are the source's (they are
replicated with the data), so the credentials every region already holds keep working against the promoted one.
The source must not use an RDS-managed master password: RDS refuses replicas of such a source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws

from components.postgres_database import (
    LOG_EXPORTS,
    POSTGRES_PORT,
    PostgresSurroundings,
    check_identifier_and_version,
    check_monitoring,
)


@dataclass
class PostgresReplicaArgs:
    identifier: str
    """DB instance identifier in this region (lowercase); also names its log groups."""
    source_db_arn: pulumi.Input[str]
    """ARN of the primary in another region (cross-region replicas must name the source by ARN)."""
    engine_version: str
    """The primary's PostgreSQL version (major or major.minor): selects the parameter group family."""
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets in at least two AZs of this region."""
    allowed_security_group_ids: Sequence[pulumi.Input[str]]
    """Security groups that may connect (this region's EKS cluster security group)."""
    kms_key_arn: pulumi.Input[str]
    """KMS key of THIS region: storage, snapshots and Performance Insights."""
    log_kms_key_arn: pulumi.Input[str]
    """KMS key of the log groups (its policy must admit `logs.<region>.amazonaws.com`)."""
    allowed_cidrs: Sequence[str] = ()
    """Other regions' VPC CIDRs (over inter-region peering): their gateways write here once this replica is promoted."""
    instance_class: str = "db.t4g.medium"
    max_allocated_storage_gib: int = 100
    multi_az: bool = True
    deletion_protection: bool = True
    backup_retention_days: int = 7
    """Automated backups of the replica itself (PostgreSQL replicas support them), so a promoted replica has them."""
    backup_window: str = "03:00-04:00"
    maintenance_window: str = "sun:05:00-sun:06:00"
    performance_insights_retention_days: int = 7
    monitoring_interval_seconds: int = 60
    log_retention_days: int = 30
    final_snapshot: bool = True
    """Take a final snapshot on delete once promoted (RDS does not allow one for a replica)."""
    lag_alarm_seconds: int | None = 300
    """Alarm (in this region) when replication lag stays above this for 5 minutes: the RPO a failover would cost
    right now. 300 s matches the tier's 5-minute RPO; None: no alarm."""
    promote: bool = False
    """True: stop replicating and become a standalone primary (failover); see the module docstring."""
    alarm_actions: Sequence[str] = ()
    """SNS topics in this region the lag alarm notifies (on ALARM and on OK)."""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_identifier_and_version(self.identifier, self.engine_version)
        if self.lag_alarm_seconds is not None and not 1 <= self.lag_alarm_seconds <= 86400:
            raise ValueError(f"lag_alarm_seconds: got {self.lag_alarm_seconds}; allowed: 1 to 86400, or None")
        if not 1 <= self.backup_retention_days <= 35:
            raise ValueError(f"backup_retention_days: got {self.backup_retention_days}; allowed: 1 to 35")
        check_monitoring(self.monitoring_interval_seconds, self.performance_insights_retention_days)


class PostgresReplica(pulumi.ComponentResource):
    """Cross-region read replica with its own subnet group, parameter group, security group, monitoring and logs."""

    instance: aws.rds.Instance
    address: pulumi.Output[str]
    arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: PostgresReplicaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:PostgresReplica", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        surroundings = PostgresSurroundings(
            self,
            name,
            identifier=args.identifier,
            security_group_description=f"RDS replica {args.identifier}: PostgreSQL (TLS only) from the EKS cluster only",
            engine_version=args.engine_version,
            vpc_id=args.vpc_id,
            subnet_ids=args.subnet_ids,
            allowed_security_group_ids=args.allowed_security_group_ids,
            allowed_cidrs=args.allowed_cidrs,
            log_kms_key_arn=args.log_kms_key_arn,
            log_retention_days=args.log_retention_days,
            tags=tags,
        )

        self.instance = aws.rds.Instance(
            f"{name}-db",
            identifier=args.identifier,
            # Engine, version, database name and master user come from the source while replicating.
            replicate_source_db=None if args.promote else args.source_db_arn,
            instance_class=args.instance_class,
            storage_type="gp3",
            max_allocated_storage=args.max_allocated_storage_gib,
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_subnet_group_name=surroundings.subnet_group.name,
            vpc_security_group_ids=[surroundings.security_group.id],
            publicly_accessible=False,
            parameter_group_name=surroundings.parameter_group.name,
            port=POSTGRES_PORT,
            multi_az=args.multi_az,
            deletion_protection=args.deletion_protection,
            backup_retention_period=args.backup_retention_days,
            backup_window=args.backup_window,
            maintenance_window=args.maintenance_window,
            iam_database_authentication_enabled=True,
            # RDS refuses a final snapshot when deleting a replica; a promoted one takes it like any primary.
            skip_final_snapshot=not (args.promote and args.final_snapshot),
            final_snapshot_identifier=f"{args.identifier}-final" if args.promote and args.final_snapshot else None,
            delete_automated_backups=False,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=args.kms_key_arn,
            performance_insights_retention_period=args.performance_insights_retention_days,
            monitoring_interval=args.monitoring_interval_seconds,
            monitoring_role_arn=surroundings.monitoring_role.arn,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            tags={**tags, "llm-platform/ledger-role": "promoted-primary" if args.promote else "replica"},
            # The identifier is fixed, so a replacement (re-seeding from another source) must delete first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=surroundings.instance_depends_on, delete_before_replace=True),
        )

        if args.lag_alarm_seconds is not None and not args.promote:
            aws.cloudwatch.MetricAlarm(
                f"{name}-lag",
                alarm_description=f"{args.identifier}: replica lag above {args.lag_alarm_seconds} s for 5 minutes; promoting it now "
                                  "would lose that much usage. Runbook: docs/runbooks/region-failover.md",
                namespace="AWS/RDS",
                metric_name="ReplicaLag",
                dimensions={"DBInstanceIdentifier": self.instance.identifier},
                statistic="Maximum",
                period=60,
                evaluation_periods=5,
                threshold=args.lag_alarm_seconds,
                comparison_operator="GreaterThanThreshold",
                # RDS for PostgreSQL computes ReplicaLag on the replica (now() - pg_last_xact_replay_timestamp()), so
                # it keeps growing, and alarming, while the source is unreachable. Missing data means the instance is
                # no longer a replica (promoted, e.g. by the CLI in a failover): INSUFFICIENT_DATA, not ALARM forever.
                treat_missing_data="missing",
                alarm_actions=list(args.alarm_actions),
                ok_actions=list(args.alarm_actions),
                tags=tags,
                opts=child,
            )

        self.address = self.instance.address
        self.arn = self.instance.arn
        self.security_group_id = surroundings.security_group.id
        self.register_outputs({"address": self.address, "arn": self.arn, "security_group_id": self.security_group_id})
