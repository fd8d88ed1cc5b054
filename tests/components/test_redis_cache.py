"""RedisCache under Pulumi mocks: encryption, AUTH, failover per replica count, a closed security group."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.redis_cache import AUTH_TOKEN_SPECIAL_CHARS, RedisCache, RedisCacheArgs, parameter_group_family
from infra.render import Rendering, is_secret, render_function

CLUSTER_SG = "sg-0cluster0000000001"
KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-4333-8444-555555555555"


def _render(**overrides: Any) -> Rendering:
    def program() -> None:
        args = RedisCacheArgs(
            vpc_id="vpc-0123",
            subnet_ids=["subnet-a", "subnet-b", "subnet-c"],
            allowed_security_group_ids=[CLUSTER_SG],
            kms_key_arn=KMS_ARN,
            **overrides,
        )
        cache = RedisCache("cache", args)
        pulumi.export("endpoint", cache.endpoint)
        pulumi.export("port", cache.port)
        pulumi.export("secret_arn", cache.auth_secret_arn)
        pulumi.export("token", cache.auth_token)
        pulumi.export("reader", cache.reader_endpoint)

    return render_function(program)


@pytest.fixture(scope="module")
def single_node() -> Rendering:
    return _render()


@pytest.fixture(scope="module")
def with_replicas() -> Rendering:
    return _render(replicas=2, node_type="cache.r7g.large")


def test_encrypted_at_rest_with_kms_and_tls_required(single_node: Rendering) -> None:
    rg = single_node.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert rg["atRestEncryptionEnabled"] is True
    assert rg["kmsKeyId"] == KMS_ARN
    assert rg["transitEncryptionEnabled"] is True
    assert rg["transitEncryptionMode"] == "required"
    assert rg["autoMinorVersionUpgrade"] is True
    assert rg["snapshotRetentionLimit"] == 7
    assert rg["maintenanceWindow"] and rg["snapshotWindow"]
    assert rg["subnetGroupName"].startswith("cache-subnets-") and rg["parameterGroupName"].startswith("cache-params-")


def test_auth_token_is_secret_and_in_secrets_manager(single_node: Rendering) -> None:
    rg = single_node.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert is_secret(rg["authToken"]), "the AUTH token must reach the engine only as a secret"
    token = rg["authToken"]["value"]
    assert single_node.generated_secrets == [token]
    assert 16 <= len(token) <= 128
    secret = single_node.one("aws:secretsmanager/secret:Secret").inputs
    assert secret["kmsKeyId"] == KMS_ARN
    version = single_node.one("aws:secretsmanager/secretVersion:SecretVersion").inputs
    assert is_secret(version["secretString"])
    stored = json.loads(version["secretString"]["value"])
    assert stored["auth_token"] == token and stored["port"] == 6379 and stored["tls"] is True
    assert "token" in single_node.secret_outputs
    assert single_node.outputs["secret_arn"].startswith("arn:aws:secretsmanager:")


def test_token_alphabet_is_what_elasticache_accepts(single_node: Rendering) -> None:
    password = single_node.one("random:index/randomPassword:RandomPassword").inputs
    assert 16 <= password["length"] <= 128
    assert not set(password["overrideSpecial"]) & set('/"@ ')
    assert password["overrideSpecial"] == AUTH_TOKEN_SPECIAL_CHARS


def test_single_node_has_no_failover(single_node: Rendering) -> None:
    rg = single_node.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert rg["numCacheClusters"] == 1
    assert rg["automaticFailoverEnabled"] is False
    assert rg["multiAzEnabled"] is False
    assert rg["clusterMode"] == "disabled"


def test_replicas_turn_on_failover_and_multi_az(with_replicas: Rendering) -> None:
    rg = with_replicas.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert rg["numCacheClusters"] == 3
    assert rg["automaticFailoverEnabled"] is True
    assert rg["multiAzEnabled"] is True
    assert with_replicas.outputs["reader"].startswith("replica.")


def test_cluster_mode_shards_and_configuration_endpoint() -> None:
    r = _render(cluster_mode=True, shards=3, replicas=1)
    rg = r.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert rg["clusterMode"] == "enabled"
    assert rg["numNodeGroups"] == 3 and rg["replicasPerNodeGroup"] == 1
    assert "numCacheClusters" not in rg
    assert rg["automaticFailoverEnabled"] is True
    params = {p["name"]: p["value"] for p in r.one("aws:elasticache/parameterGroup:ParameterGroup").inputs["parameters"]}
    assert params["cluster-enabled"] == "yes"
    assert r.outputs["endpoint"].startswith("clustercfg.")
    assert r.outputs["reader"] is None


def test_security_group_admits_only_the_cluster_on_6379(single_node: Rendering) -> None:
    sg = single_node.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert sg["description"]
    assert "ingress" not in sg and "egress" not in sg, "no inline rules next to standalone ones"
    rules = single_node.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert len(rules) == 1
    rule = rules[0].inputs
    assert rule["referencedSecurityGroupId"] == CLUSTER_SG
    assert rule["fromPort"] == rule["toPort"] == 6379 and rule["ipProtocol"] == "tcp"
    assert rule["description"]
    assert "cidrIpv4" not in rule and "cidrIpv6" not in rule
    assert not single_node.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")


def test_slow_and_engine_logs_go_to_encrypted_log_groups() -> None:
    logs_key = "arn:aws:kms:us-east-1:123456789012:key/logs"
    r = _render(log_kms_key_arn=logs_key, log_retention_days=14)
    groups = {g.inputs["name"]: g.inputs for g in r.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert set(groups) == {"/aws/elasticache/cache/slow-log", "/aws/elasticache/cache/engine-log"}
    assert all(g["kmsKeyId"] == logs_key and g["retentionInDays"] == 14 for g in groups.values())
    deliveries = r.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs["logDeliveryConfigurations"]
    assert {(d["logType"], d["destination"], d["destinationType"], d["logFormat"]) for d in deliveries} == {
        ("slow-log", "/aws/elasticache/cache/slow-log", "cloudwatch-logs", "json"),
        ("engine-log", "/aws/elasticache/cache/engine-log", "cloudwatch-logs", "json"),
    }


def test_no_log_delivery_without_a_log_key(single_node: Rendering) -> None:
    assert not single_node.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert not single_node.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs.get("logDeliveryConfigurations")


def test_long_names_keep_the_replication_group_id_within_40() -> None:
    def program() -> None:
        RedisCache("llmp-global-ap-northeast-1-redis", RedisCacheArgs(
            vpc_id="v", subnet_ids=["s"], allowed_security_group_ids=["sg"], kms_key_arn=KMS_ARN))

    (rg,) = render_function(program).of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    assert len(rg.name) + 8 <= 40, "Pulumi appends '-' and 7 characters to auto-name the replication group id"


def test_parameter_group_family_follows_engine() -> None:
    assert parameter_group_family("redis", "7.1") == "redis7"
    assert parameter_group_family("valkey", "8.0") == "valkey8"
    r = _render(engine="redis", engine_version="7.1")
    assert r.one("aws:elasticache/parameterGroup:ParameterGroup").inputs["family"] == "redis7"
    rg = r.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert rg["engine"] == "redis" and rg["engineVersion"] == "7.1"


def test_every_resource_is_a_child_of_the_component(single_node: Rendering) -> None:
    component = single_node.one("llm-platform:data:RedisCache")
    for r in single_node.resources:
        if r is not component:
            assert r.parent == component.urn, r.name


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"replicas": 6}, "replicas"), ({"shards": 2}, "shards"), ({"engine": "memcached"}, "engine"),
     ({"secret_recovery_window_days": 3}, "secret_recovery_window_days")],
)
def test_bad_args_name_the_field(overrides: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"vpc_id": "v", "subnet_ids": [], "allowed_security_group_ids": [], "kms_key_arn": "k"}
    with pytest.raises(ValueError, match=f"^{field}: got"):
        RedisCacheArgs(**base, **overrides)
