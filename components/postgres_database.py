"""`PostgresDatabase`: RDS for PostgreSQL, private, encrypted, TLS-only, with credentials RDS manages itself.

The master password is generated and rotated by RDS in a Secrets Manager secret encrypted with our KMS key: it never
passes through Pulumi state. Storage (gp3), Performance Insights and the secret use the customer-managed key;
`rds.force_ssl=1` refuses clear-text connections; IAM database authentication is on; enhanced monitoring, log exports
to pre-created log groups (retention and KMS set by us, not left at "never expire"), and tags copied to snapshots.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws

from components.irsa import service_trust_policy
from components.security_groups import data_store_security_group

POSTGRES_PORT = 5432
LOG_EXPORTS = ("postgresql", "upgrade")
ENGINE_VERSION_PATTERN = r"^(1[4-8])(\.\d+)?$"
MONITORING_INTERVALS = (1, 5, 10, 15, 30, 60)
# RDS PerformanceInsightsRetentionPeriod: 7, month * 31 for month 1-23, or 731 (botocore rds model documentation;
# 731 is not a multiple of 31). infra/provider_limits.py checks rendered stacks against this tuple.
PERFORMANCE_INSIGHTS_RETENTION_DAYS = (7, *(31 * month for month in range(1, 24)), 731)
# Statements slower than this are logged with their duration (PostgreSQL `log_min_duration_statement`, in ms; RDS
# "Turning on query logging for your RDS for PostgreSQL DB instance"): "which query is slow" without logging them all.
SLOW_STATEMENT_MS = 500
# Schema changes (CREATE/ALTER/DROP, GRANT) are always logged. Not `mod`/`all`: those would log every prompt's
# usage row; and a DDL statement carrying a password would be logged too, which is one more reason the gateway's
# role authenticates with IAM tokens and has no password.
LOG_STATEMENT = "ddl"


def parameter_group_family(engine_version: str) -> str:
    """RDS parameter group family for a PostgreSQL version: `16.4` -> `postgres16`."""
    return f"postgres{engine_version.split('.')[0]}"


def check_identifier_and_version(identifier: str, engine_version: str) -> None:
    """The instance identifier and engine version rules RDS applies to a primary and to a replica alike."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", identifier) or "--" in identifier or identifier.endswith("-"):
        raise ValueError(f"identifier: got {identifier!r}; allowed: 1-63 lowercase letters, digits, single hyphens, starting with a letter")
    if not re.fullmatch(ENGINE_VERSION_PATTERN, engine_version):
        raise ValueError(f"engine_version: got {engine_version!r}; allowed: 14 to 18, optionally with a minor (e.g. 17 or 17.4)")


def check_monitoring(monitoring_interval_seconds: int, performance_insights_retention_days: int) -> None:
    """The enhanced-monitoring intervals and Performance Insights retentions RDS accepts."""
    if monitoring_interval_seconds not in MONITORING_INTERVALS:
        raise ValueError(f"monitoring_interval_seconds: got {monitoring_interval_seconds}; allowed: {', '.join(map(str, MONITORING_INTERVALS))}")
    pi = performance_insights_retention_days
    if pi not in PERFORMANCE_INSIGHTS_RETENTION_DAYS:
        raise ValueError(f"performance_insights_retention_days: got {pi}; allowed: 7, 31 x 1-23 months (31-713) or 731")


@dataclass
class PostgresDatabaseArgs:
    identifier: str
    """DB instance identifier (lowercase, unique per account and region); also names its log groups."""
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets in at least two AZs (RDS requires two even for a single-AZ instance)."""
    allowed_security_group_ids: Sequence[pulumi.Input[str]]
    """Security groups whose members may connect (the EKS cluster security group)."""
    kms_key_arn: pulumi.Input[str]
    """Customer-managed KMS key for storage, snapshots, Performance Insights and the master-user secret."""
    log_kms_key_arn: pulumi.Input[str]
    """KMS key for the exported-log groups (its policy must admit `logs.<region>.amazonaws.com`)."""
    engine_version: str = "17"
    """PostgreSQL major (`17`) or major.minor (`17.4`); with a major only, RDS picks the current minor."""
    instance_class: str = "db.t4g.small"
    """DB instance class (Graviton `db.t4g`/`db.r7g` are the cheapest per vCPU)."""
    allocated_storage_gib: int = 20
    """Initial gp3 storage."""
    max_allocated_storage_gib: int = 100
    """Storage autoscaling ceiling (equal to `allocated_storage_gib` turns autoscaling off)."""
    database_name: str = "llmplatform"
    """Database created at launch (the gateway's schema lives here)."""
    master_username: str = "llmadmin"
    """Master user; its password is generated and rotated by RDS unless `master_password` is given."""
    multi_az: bool = False
    """A synchronous standby in another AZ with automatic failover."""
    deletion_protection: bool = True
    """Refuse deletion (also through `pulumi destroy`) until turned off."""
    backup_retention_days: int = 7
    """Days of automated backups and point-in-time recovery."""
    backup_window: str = "03:00-04:00"
    """Daily UTC backup window; must not overlap the maintenance window."""
    maintenance_window: str = "sun:05:00-sun:06:00"
    """Weekly UTC maintenance window (minor upgrades are applied here)."""
    final_snapshot: bool = True
    """Take a final snapshot on delete (named `<identifier>-final`)."""
    performance_insights_retention_days: int = 7
    """7 (free tier), 31 x 1-23 months, or 731."""
    monitoring_interval_seconds: int = 60
    """Enhanced monitoring granularity: 1, 5, 10, 15, 30 or 60 seconds."""
    log_retention_days: int = 30
    """Retention of the exported `postgresql` and `upgrade` log groups."""
    apply_immediately: bool = False
    """Apply modifications now instead of in the maintenance window."""
    master_password: pulumi.Input[str] | None = None
    """None: RDS generates and rotates the master password in its own secret. Given (a Pulumi secret): the instance
    uses it and the component keeps it in a KMS-encrypted secret of the same shape. Needed for read replicas: RDS
    refuses to create one when the source's password is RDS-managed (the global tier's ledger replicas)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags for every resource (the provider adds the stack's default tags)."""

    def __post_init__(self) -> None:
        check_identifier_and_version(self.identifier, self.engine_version)
        if not 0 <= self.backup_retention_days <= 35:
            raise ValueError(f"backup_retention_days: got {self.backup_retention_days}; allowed: 0 to 35")
        check_monitoring(self.monitoring_interval_seconds, self.performance_insights_retention_days)
        if self.max_allocated_storage_gib < self.allocated_storage_gib:
            raise ValueError(
                f"max_allocated_storage_gib: got {self.max_allocated_storage_gib}; allowed: >= allocated_storage_gib ({self.allocated_storage_gib})"
            )


class PostgresSurroundings:
    """The hardened surroundings of one RDS PostgreSQL instance, shared by the primary and its cross-region replicas.

    A security group open only to the given cluster security groups (and CIDRs); a subnet group; a parameter group that
    forces TLS and logs connections; the enhanced-monitoring role; and the exported-log groups, created before RDS
    would create them itself with no retention and no CMK. Resources are children of `parent`, named `<name>-...`.
    """

    security_group: aws.ec2.SecurityGroup
    subnet_group: aws.rds.SubnetGroup
    parameter_group: aws.rds.ParameterGroup
    monitoring_role: aws.iam.Role
    instance_depends_on: list[pulumi.Resource]
    """What the instance must wait for: the monitoring role's policy and its log groups."""

    def __init__(
        self,
        parent: pulumi.Resource,
        name: str,
        *,
        identifier: str,
        security_group_description: str,
        engine_version: str,
        vpc_id: pulumi.Input[str],
        subnet_ids: Sequence[pulumi.Input[str]],
        allowed_security_group_ids: Sequence[pulumi.Input[str]],
        log_kms_key_arn: pulumi.Input[str],
        log_retention_days: int,
        tags: dict[str, str],
        allowed_cidrs: Sequence[str] = (),
    ) -> None:
        child = pulumi.ResourceOptions(parent=parent)
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=parent))

        self.security_group = data_store_security_group(
            name,
            vpc_id=vpc_id,
            port=POSTGRES_PORT,
            description=security_group_description,
            name_tag=f"{identifier}-postgres",
            allowed_security_group_ids=allowed_security_group_ids,
            cluster_rule_description="PostgreSQL (TLS enforced by rds.force_ssl) from the EKS cluster nodes and pods",
            peer_protocol="PostgreSQL (TLS)",
            allowed_cidrs=allowed_cidrs,
            tags=tags,
            opts=child,
        )

        self.subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            description=f"{identifier}: private subnets",
            subnet_ids=list(subnet_ids),
            tags=tags,
            opts=child,
        )
        self.parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            family=parameter_group_family(engine_version),
            description=f"{identifier}: TLS required, connections, schema changes and slow statements logged",
            parameters=[
                {"name": "rds.force_ssl", "value": "1"},
                {"name": "log_connections", "value": "1"},
                {"name": "log_disconnections", "value": "1"},
                {"name": "log_min_duration_statement", "value": str(SLOW_STATEMENT_MS)},
                {"name": "log_statement", "value": LOG_STATEMENT},
            ],
            tags=tags,
            opts=child,
        )

        self.monitoring_role = aws.iam.Role(
            f"{name}-monitoring",
            description=f"RDS enhanced monitoring for {identifier}",
            assume_role_policy=service_trust_policy("monitoring.rds.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        monitoring_attachment = aws.iam.RolePolicyAttachment(
            f"{name}-monitoring",
            role=self.monitoring_role.name,
            policy_arn=partition.partition.apply(lambda p: f"arn:{p}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"),
            opts=child,
        )

        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-log-{export}",
                name=f"/aws/rds/instance/{identifier}/{export}",
                retention_in_days=log_retention_days,
                kms_key_id=log_kms_key_arn,
                tags=tags,
                # RDS writes to exactly this name: a replacement must free it first.
                opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),
            )
            for export in LOG_EXPORTS
        ]
        self.instance_depends_on = [monitoring_attachment, *log_groups]


class PostgresDatabase(pulumi.ComponentResource):
    """RDS PostgreSQL instance with its subnet group, parameter group, security group, monitoring role and log groups."""

    instance: aws.rds.Instance
    security_group_id: pulumi.Output[str]
    address: pulumi.Output[str]
    """Host name of the instance (without port)."""
    port: pulumi.Output[int]
    secret_arn: pulumi.Output[str]
    """Secrets Manager secret RDS keeps the master credentials in (`{"username", "password"}`), rotated by RDS."""
    database_name: str
    resource_id: pulumi.Output[str]
    """The instance's `DbiResourceId`: IAM database authentication policies name it."""

    def iam_connect_arn(self, db_user: str) -> pulumi.Output[str]:
        """`rds-db:connect` resource of `db_user` on this instance (IAM database authentication)."""
        def arn(values: list[str]) -> str:
            _, partition, _, region, account, *_ = str(values[0]).split(":")  # arn:<partition>:rds:<region>:<account>:db:<id>
            return f"arn:{partition}:rds-db:{region}:{account}:dbuser:{values[1]}/{db_user}"

        return pulumi.Output.all(self.instance.arn, self.resource_id).apply(arn)

    def __init__(self, name: str, args: PostgresDatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:data:PostgresDatabase", name, None, opts)
        tags = args.tags
        surroundings = PostgresSurroundings(
            self,
            name,
            identifier=args.identifier,
            security_group_description=f"RDS {args.identifier}: PostgreSQL (TLS only) from the EKS cluster only",
            engine_version=args.engine_version,
            vpc_id=args.vpc_id,
            subnet_ids=args.subnet_ids,
            allowed_security_group_ids=args.allowed_security_group_ids,
            log_kms_key_arn=args.log_kms_key_arn,
            log_retention_days=args.log_retention_days,
            tags=tags,
        )

        self.instance = aws.rds.Instance(
            f"{name}-db",
            identifier=args.identifier,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=args.instance_class,
            db_name=args.database_name,
            username=args.master_username,
            manage_master_user_password=True if args.master_password is None else None,
            master_user_secret_kms_key_id=args.kms_key_arn if args.master_password is None else None,
            password=args.master_password,
            iam_database_authentication_enabled=True,
            port=POSTGRES_PORT,
            storage_type="gp3",
            allocated_storage=args.allocated_storage_gib,
            max_allocated_storage=args.max_allocated_storage_gib,
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_subnet_group_name=surroundings.subnet_group.name,
            vpc_security_group_ids=[surroundings.security_group.id],
            publicly_accessible=False,
            parameter_group_name=surroundings.parameter_group.name,
            multi_az=args.multi_az,
            deletion_protection=args.deletion_protection,
            backup_retention_period=args.backup_retention_days,
            backup_window=args.backup_window,
            maintenance_window=args.maintenance_window,
            skip_final_snapshot=not args.final_snapshot,
            final_snapshot_identifier=f"{args.identifier}-final" if args.final_snapshot else None,
            delete_automated_backups=False,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=args.kms_key_arn,
            performance_insights_retention_period=args.performance_insights_retention_days,
            monitoring_interval=args.monitoring_interval_seconds,
            monitoring_role_arn=surroundings.monitoring_role.arn,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            apply_immediately=args.apply_immediately,
            tags=tags,
            # The identifier is fixed (the log groups are named after it), so a replacing change must delete the old
            # instance first (and is refused while deletion protection is on, which is the point of it). The subnet
            # and parameter groups are auto-named, so they are replaced create-first while the instance uses them.
            opts=pulumi.ResourceOptions(parent=self, depends_on=surroundings.instance_depends_on, delete_before_replace=True),
        )

        self.security_group_id = surroundings.security_group.id
        self.address = self.instance.address
        self.port = self.instance.port
        if args.master_password is None:
            self.secret_arn = self.instance.master_user_secrets.apply(lambda secrets: str(secrets[0].secret_arn))
        else:
            self.secret_arn = self._own_secret(name, args)
        self.database_name = args.database_name
        self.resource_id = self.instance.resource_id
        self.register_outputs(
            {"address": self.address, "port": self.port, "secret_arn": self.secret_arn, "security_group_id": self.security_group_id}
        )

    def _own_secret(self, name: str, args: PostgresDatabaseArgs) -> pulumi.Output[str]:
        """The caller-provided master password in a secret shaped like RDS's own (`username`, `password`)."""
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            f"{name}-master",
            description=f"Master credentials of RDS {args.identifier} (password set by the stack, not RDS-managed)",
            kms_key_id=args.kms_key_arn,
            tags=args.tags,
            opts=child,
        )
        document: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.master_username, args.master_password).apply(
                lambda v: json.dumps({"username": v[0], "password": v[1]})
            )
        )
        aws.secretsmanager.SecretVersion(f"{name}-master-value", secret_id=secret.id, secret_string=document, opts=child)
        return secret.arn
