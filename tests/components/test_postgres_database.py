"""PostgresDatabase under Pulumi mocks: encryption, TLS-only, managed credentials, HA switches, closed network."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.postgres_database import PostgresDatabase, PostgresDatabaseArgs, parameter_group_family
from infra.render import Rendering, render_function

CLUSTER_SG = "sg-0cluster0000000001"
KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-4333-8444-555555555555"
LOGS_KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/99999999-2222-4333-8444-555555555555"


def _render(**overrides: Any) -> Rendering:
    def program() -> None:
        args = PostgresDatabaseArgs(
            identifier="llmp-unit-pg",
            vpc_id="vpc-0123",
            subnet_ids=["subnet-a", "subnet-b"],
            allowed_security_group_ids=[CLUSTER_SG],
            kms_key_arn=KMS_ARN,
            log_kms_key_arn=LOGS_KMS_ARN,
            **overrides,
        )
        db = PostgresDatabase("db", args)
        pulumi.export("address", db.address)
        pulumi.export("port", db.port)
        pulumi.export("secret_arn", db.secret_arn)

    return render_function(program)


@pytest.fixture(scope="module")
def default_db() -> Rendering:
    return _render()


@pytest.fixture(scope="module")
def prod_db() -> Rendering:
    return _render(multi_az=True, deletion_protection=True, instance_class="db.r7g.large", backup_retention_days=14)


def _instance(r: Rendering) -> dict[str, Any]:
    return r.one("aws:rds/instance:Instance").inputs


def test_storage_encrypted_gp3_with_kms(default_db: Rendering) -> None:
    db = _instance(default_db)
    assert db["storageEncrypted"] is True and db["kmsKeyId"] == KMS_ARN
    assert db["storageType"] == "gp3"
    assert db["maxAllocatedStorage"] >= db["allocatedStorage"]
    assert db["publiclyAccessible"] is False
    assert db["engine"] == "postgres" and db["engineVersion"] == "17"


def test_credentials_are_managed_by_rds_in_secrets_manager(default_db: Rendering) -> None:
    db = _instance(default_db)
    assert db["manageMasterUserPassword"] is True
    assert db["masterUserSecretKmsKeyId"] == KMS_ARN
    assert "password" not in db and "passwordWo" not in db
    assert default_db.outputs["secret_arn"].startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!")
    assert default_db.outputs["port"] == 5432
    assert default_db.outputs["address"].endswith(".rds.amazonaws.com")


def test_iam_auth_pi_monitoring_logs_and_upgrades(default_db: Rendering) -> None:
    db = _instance(default_db)
    assert db["iamDatabaseAuthenticationEnabled"] is True
    assert db["performanceInsightsEnabled"] is True and db["performanceInsightsKmsKeyId"] == KMS_ARN
    assert db["monitoringInterval"] == 60 and db["monitoringRoleArn"].startswith("arn:aws:iam::")
    assert db["enabledCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    assert db["copyTagsToSnapshot"] is True and db["autoMinorVersionUpgrade"] is True
    assert db["backupRetentionPeriod"] == 7
    groups = {g.inputs["name"]: g.inputs for g in default_db.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert set(groups) == {"/aws/rds/instance/llmp-unit-pg/postgresql", "/aws/rds/instance/llmp-unit-pg/upgrade"}
    assert all(g["kmsKeyId"] == LOGS_KMS_ARN and g["retentionInDays"] == 30 for g in groups.values())
    attachment = default_db.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"


def test_parameter_group_forces_tls_and_matches_the_engine(default_db: Rendering) -> None:
    pg = default_db.one("aws:rds/parameterGroup:ParameterGroup").inputs
    assert pg["family"] == "postgres17"
    assert {"name": "rds.force_ssl", "value": "1"} in pg["parameters"]
    assert parameter_group_family("16.4") == "postgres16"
    assert _instance(default_db)["parameterGroupName"].startswith("db-params-")
    assert _instance(default_db)["dbSubnetGroupName"].startswith("db-subnets-")


def test_single_az_default_keeps_final_snapshot(default_db: Rendering) -> None:
    db = _instance(default_db)
    assert db["multiAz"] is False
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"] == "llmp-unit-pg-final"


def test_prod_switches(prod_db: Rendering) -> None:
    db = _instance(prod_db)
    assert db["multiAz"] is True and db["deletionProtection"] is True
    assert db["backupRetentionPeriod"] == 14
    assert db["instanceClass"] == "db.r7g.large"


def test_no_final_snapshot_only_when_asked() -> None:
    db = _instance(_render(final_snapshot=False, deletion_protection=False, backup_retention_days=1))
    assert db["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in db
    assert db["deletionProtection"] is False


def test_security_group_admits_only_the_cluster_on_5432(default_db: Rendering) -> None:
    sg = default_db.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert sg["description"] and "ingress" not in sg and "egress" not in sg
    (rule,) = [r.inputs for r in default_db.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]
    assert rule["referencedSecurityGroupId"] == CLUSTER_SG
    assert rule["fromPort"] == rule["toPort"] == 5432 and rule["description"]
    assert "cidrIpv4" not in rule


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"identifier": "Bad_Name"}, "identifier"),
        ({"engine_version": "12"}, "engine_version"),
        ({"backup_retention_days": 40}, "backup_retention_days"),
        ({"monitoring_interval_seconds": 7}, "monitoring_interval_seconds"),
        ({"performance_insights_retention_days": 30}, "performance_insights_retention_days"),
        ({"max_allocated_storage_gib": 10}, "max_allocated_storage_gib"),
    ],
)
def test_bad_args_name_the_field(overrides: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"identifier": "db", "vpc_id": "v", "subnet_ids": [], "allowed_security_group_ids": [],
                            "kms_key_arn": "k", "log_kms_key_arn": "l"}
    with pytest.raises(ValueError, match=f"^{field}: got"):
        PostgresDatabaseArgs(**{**base, **overrides})
