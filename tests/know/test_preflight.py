"""Preflight checks, each passing and failing: moto for EC2/Route53/ACM, botocore Stubber for Service Quotas and
the EKS version APIs (moto implements neither for these calls)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from moto import mock_aws

from infra import preflight
from infra.cli import main as cli_main
from infra.config import NodeGroupConfig, PlatformConfig
from infra.preflight import (
    check_database_class, check_edge, check_eks_versions, check_instance_offerings, check_quotas, load_stack_config, report, required_vcpus,
)
from infra.render import read_stack_config


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no metadata-service lookups, no real profile: nothing can reach AWS from these tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def group(name: str, types: list[str], max_size: int, capacity: str = "ON_DEMAND", gpu: str | None = None) -> NodeGroupConfig:
    return NodeGroupConfig(name=name, gpu=gpu, instance_types=types, capacity=capacity, min_size=0, desired_size=0, max_size=max_size)


# Fixed node groups, so these tests keep their meaning when the tier files are retuned.
DEV_GROUPS = [group("system", ["t3.large"], 3), group("gpu-a10g", ["g5.xlarge", "g5.2xlarge"], 2, "SPOT", "a10g")]
PROD_GROUPS = [group("system", ["m6i.xlarge"], 9), group("gpu-a10g", ["g5.2xlarge"], 12, gpu="a10g"),
               group("gpu-a100", ["p4d.24xlarge"], 2, gpu="a100")]


def stack_config(stack: str, **changes: Any) -> PlatformConfig:
    """The stack's config with the fixed node groups above and no edge section, unless changed."""
    cfg = load_stack_config(stack)
    update: dict[str, Any] = {"node_groups": DEV_GROUPS if stack == "dev" else PROD_GROUPS}
    if "edge" in PlatformConfig.model_fields:
        update["edge"] = None
    return cfg.model_copy(update={**update, **changes})


class Clients:
    """A client factory: stubbed clients by service name, moto-backed clients for the rest."""

    def __init__(self, **stubbed: Any) -> None:
        self.stubbed = stubbed

    def __call__(self, service: str, region: str) -> Any:
        if service in self.stubbed:
            return self.stubbed[service]
        return boto3.client(service, region_name=region)  # type: ignore[call-overload]


def quota_response(code: str, value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "QuotaName": code, "Value": value, "Unit": "None",
                      "Adjustable": True, "GlobalQuota": False}}


@pytest.fixture()
def quotas() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("service-quotas", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


@pytest.fixture()
def eks() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("eks", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


# --- quotas --------------------------------------------------------------------------------------------------------

def test_required_vcpus_use_max_size_and_largest_type() -> None:
    need = required_vcpus(stack_config("dev"))
    # dev: system 3 × t3.large (2 vCPU); gpu-a10g spot 2 × g5.2xlarge (8 vCPU, the larger of its two types)
    assert need[("Standard", "ON_DEMAND")][0] == 3 * 2
    assert need[("G and VT", "SPOT")][0] == 2 * 8
    prod = required_vcpus(stack_config("prod"))
    assert prod[("P", "ON_DEMAND")][0] == 2 * 96
    assert prod[("G and VT", "ON_DEMAND")][0] == 12 * 8


def test_quota_check_passes_when_quotas_cover_max_nodes(quotas: tuple[Any, Stubber]) -> None:
    client, stub = quotas
    stub.add_response("get_service_quota", quota_response("L-3819A6DF", 16.0), {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF"})
    stub.add_response("get_service_quota", quota_response("L-1216C47A", 64.0), {"ServiceCode": "ec2", "QuotaCode": "L-1216C47A"})
    results = check_quotas(stack_config("dev"), Clients(**{"service-quotas": client}))
    assert [r.status for r in results] == ["PASS", "PASS"]
    assert "All G and VT Spot Instance Requests (L-3819A6DF): quota 16 vCPUs, node groups at max need 16" in results[0].detail


def test_quota_check_fails_with_the_request_command(quotas: tuple[Any, Stubber]) -> None:
    client, stub = quotas
    stub.add_response("get_service_quota", quota_response("L-3819A6DF", 0.0))
    stub.add_response("get_service_quota", quota_response("L-1216C47A", 64.0))
    results = check_quotas(stack_config("dev"), Clients(**{"service-quotas": client}))
    assert results[0].status == "FAIL"
    assert results[0].fix.startswith(
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-3819A6DF --desired-value 16 --region us-east-1")
    text, code = report(results)
    assert code == 1 and "1 failed" in text


def test_quota_check_on_demand_p_instances_for_prod(quotas: tuple[Any, Stubber]) -> None:
    client, stub = quotas
    # sorted keys: G and VT on-demand, P on-demand, Standard on-demand
    stub.add_response("get_service_quota", quota_response("L-DB2E81BA", 96.0), {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})
    stub.add_response("get_service_quota", quota_response("L-417A185B", 96.0), {"ServiceCode": "ec2", "QuotaCode": "L-417A185B"})
    stub.add_response("get_service_quota", quota_response("L-1216C47A", 100.0), {"ServiceCode": "ec2", "QuotaCode": "L-1216C47A"})
    results = check_quotas(stack_config("prod"), Clients(**{"service-quotas": client}))
    assert [r.status for r in results] == ["PASS", "FAIL", "PASS"]
    assert "--quota-code L-417A185B --desired-value 192" in results[1].fix


def test_quota_never_adjusted_falls_back_to_the_aws_default(quotas: tuple[Any, Stubber]) -> None:
    client, stub = quotas
    stub.add_client_error("get_service_quota", "NoSuchResourceException", "not found")
    stub.add_response("get_aws_default_service_quota", quota_response("L-3819A6DF", 0.0), {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF"})
    stub.add_response("get_service_quota", quota_response("L-1216C47A", 64.0))
    results = check_quotas(stack_config("dev"), Clients(**{"service-quotas": client}))
    assert results[0].status == "FAIL" and "quota 0 vCPUs" in results[0].detail


def test_quota_access_denied_names_the_missing_permission(quotas: tuple[Any, Stubber]) -> None:
    client, stub = quotas
    stub.add_client_error("get_service_quota", "AccessDeniedException", "not authorized")
    stub.add_client_error("get_service_quota", "AccessDeniedException", "not authorized")
    results = check_quotas(stack_config("dev"), Clients(**{"service-quotas": client}))
    assert {r.status for r in results} == {"FAIL"}
    assert results[0].fix == "grant servicequotas:GetServiceQuota to the credentials running preflight"


# --- AZ offerings (moto ships real per-AZ offering data) ----------------------------------------------------------

@mock_aws
def test_offerings_pass_in_the_azs_the_program_uses() -> None:
    results = check_instance_offerings(stack_config("prod"), Clients())
    assert [r.status for r in results] == ["PASS", "PASS", "PASS"]
    assert "us-east-1a, us-east-1b, us-east-1c" in results[2].detail


@mock_aws
def test_offerings_fail_and_suggest_azs_and_az_count() -> None:
    cfg = stack_config("prod")
    cfg = cfg.model_copy(update={"regions": [cfg.regions[0].model_copy(update={"az_count": 6})]})
    results = {r.detail.split(":")[0]: r for r in check_instance_offerings(cfg, Clients())}
    a100 = results["gpu-a100"]
    assert a100.status == "FAIL"
    assert "p4d.24xlarge not offered in us-east-1e, us-east-1f" in a100.detail
    assert "AZs offering them: p4d.24xlarge in us-east-1a, us-east-1b, us-east-1c, us-east-1d" in a100.fix
    assert "set llm-platform:regions[0].az_count to 4 or less" in a100.fix
    assert results["gpu-a10g"].status == "FAIL" and "us-east-1e" in results["gpu-a10g"].detail


# --- EKS versions and add-ons ----------------------------------------------------------------------------------

def _addon_versions(name: str, versions: list[str], cluster_version: str, default: str) -> dict[str, Any]:
    return {"addons": [{"addonName": name, "addonVersions": [
        {"addonVersion": v, "compatibilities": [{"clusterVersion": cluster_version, "defaultVersion": v == default}]} for v in versions]}]}


def _stub_all_addons(stub: Stubber, cfg: PlatformConfig, override: dict[str, list[str]] | None = None) -> None:
    for name, version in sorted(cfg.cluster.addons.items()):
        versions = (override or {}).get(name, [version])
        stub.add_response("describe_addon_versions", _addon_versions(name, versions, cfg.cluster.version, versions[0]),
                          {"kubernetesVersion": cfg.cluster.version, "addonName": name})


def test_eks_version_and_addons_pass(eks: tuple[Any, Stubber]) -> None:
    client, stub = eks
    cfg = stack_config("dev")
    stub.add_response("describe_cluster_versions", {"clusterVersions": [{"clusterVersion": cfg.cluster.version, "versionStatus": "STANDARD_SUPPORT"}]},
                      {"clusterVersions": [cfg.cluster.version]})
    _stub_all_addons(stub, cfg)
    results = check_eks_versions(cfg, Clients(eks=client))
    assert [r.status for r in results] == ["PASS"] * (1 + len(cfg.cluster.addons))


def test_eks_version_not_offered_fails_with_served_versions(eks: tuple[Any, Stubber]) -> None:
    client, stub = eks
    cfg = stack_config("dev")
    stub.add_response("describe_cluster_versions", {"clusterVersions": []})
    stub.add_response("describe_cluster_versions", {"clusterVersions": [{"clusterVersion": "1.34"}, {"clusterVersion": "1.35"}]},
                      {"versionStatus": "STANDARD_SUPPORT"})
    _stub_all_addons(stub, cfg)
    results = check_eks_versions(cfg, Clients(eks=client))
    assert results[0].status == "FAIL"
    assert results[0].fix == "set llm-platform:cluster.version to one of: 1.34, 1.35"


def test_eks_extended_support_is_a_warning(eks: tuple[Any, Stubber]) -> None:
    client, stub = eks
    cfg = stack_config("dev")
    stub.add_response("describe_cluster_versions", {"clusterVersions": [{"clusterVersion": cfg.cluster.version, "versionStatus": "EXTENDED_SUPPORT"}]})
    _stub_all_addons(stub, cfg)
    results = check_eks_versions(cfg, Clients(eks=client))
    assert results[0].status == "WARN"
    assert report(results)[1] == 0


def test_missing_addon_version_fails_and_suggests_the_default(eks: tuple[Any, Stubber]) -> None:
    client, stub = eks
    cfg = stack_config("dev")
    stub.add_response("describe_cluster_versions", {"clusterVersions": [{"clusterVersion": cfg.cluster.version, "versionStatus": "STANDARD_SUPPORT"}]})
    _stub_all_addons(stub, cfg, {"coredns": ["v1.14.4-eksbuild.1", "v1.14.2-eksbuild.4"]})
    results = {r.detail.split(" ")[0]: r for r in check_eks_versions(cfg, Clients(eks=client))[1:]}
    assert results["coredns"].status == "FAIL"
    assert results["coredns"].fix.startswith(f"set llm-platform:cluster.addons.coredns to v1.14.4-eksbuild.1 (default for {cfg.cluster.version})")
    assert all(r.status == "PASS" for name, r in results.items() if name != "coredns")


# --- database instance class ----------------------------------------------------------------------------------

def with_postgres(cfg: PlatformConfig, instance_class: str, version: str, multi_az: bool) -> Any:
    postgres = SimpleNamespace(instance_class=instance_class, engine_version=version, multi_az=multi_az)
    return SimpleNamespace(data=SimpleNamespace(postgres=postgres), regions=cfg.regions, home_region=cfg.home_region)


def orderable(*options: tuple[str, str, bool]) -> dict[str, Any]:
    return {"OrderableDBInstanceOptions": [
        {"Engine": "postgres", "EngineVersion": v, "DBInstanceClass": c, "MultiAZCapable": m} for c, v, m in options]}


@pytest.fixture()
def rds() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("rds", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def test_database_class_orderable_for_the_major_version_passes(rds: tuple[Any, Stubber]) -> None:
    client, stub = rds
    stub.add_response("describe_orderable_db_instance_options", orderable(("db.r7g.large", "17.4", True), ("db.r7g.large", "16.8", True)),
                      {"Engine": "postgres", "DBInstanceClass": "db.r7g.large"})
    (result,) = check_database_class(with_postgres(stack_config("prod"), "db.r7g.large", "17", True), Clients(rds=client))
    assert result.status == "PASS" and result.detail == "db.r7g.large for PostgreSQL 17 Multi-AZ is orderable"


def test_database_class_not_offered_for_the_version_fails_with_the_versions_it_has(rds: tuple[Any, Stubber]) -> None:
    client, stub = rds
    stub.add_response("describe_orderable_db_instance_options", orderable(("db.t4g.small", "15.10", True), ("db.t4g.small", "16.6", True)))
    (result,) = check_database_class(with_postgres(stack_config("dev"), "db.t4g.small", "17", False), Clients(rds=client))
    assert result.status == "FAIL"
    assert result.fix.startswith("db.t4g.small is offered here for PostgreSQL 15.10, 16.6: change llm-platform:data.postgres.engine_version")


def test_database_class_without_multi_az_fails_when_multi_az_is_asked(rds: tuple[Any, Stubber]) -> None:
    client, stub = rds
    stub.add_response("describe_orderable_db_instance_options", orderable(("db.x9.large", "17.4", False)))
    (result,) = check_database_class(with_postgres(stack_config("prod"), "db.x9.large", "17", True), Clients(rds=client))
    assert result.status == "FAIL" and "Multi-AZ is not orderable" in result.detail


# --- hosted zone and certificate -----------------------------------------------------------------------------------

def with_edge(cfg: PlatformConfig, **edge: str) -> Any:
    """The stack config plus an edge section (the `llm-platform:edge` fields preflight reads)."""
    fields = {"hosted_zone": None, "certificate_arn": None, "domain_name": None, **edge}
    return SimpleNamespace(edge=SimpleNamespace(**fields), regions=cfg.regions, home_region=cfg.home_region)


def test_no_edge_section_is_nothing_to_check() -> None:
    results = check_edge(stack_config("dev"), Clients())
    assert [r.status for r in results] == ["PASS"] and "nothing to check" in results[0].detail


@mock_aws
def test_zone_and_issued_certificate_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", -1)  # moto issues DNS-validated certificates at once
    boto3.client("route53").create_hosted_zone(Name="example.com", CallerReference="t1")
    arn = boto3.client("acm", region_name="us-east-1").request_certificate(
        DomainName="api.example.com", ValidationMethod="DNS")["CertificateArn"]
    cfg = with_edge(stack_config("dev"), hosted_zone="example.com", certificate_arn=arn, domain_name="api.example.com")
    results = check_edge(cfg, Clients())
    assert [(r.check, r.status) for r in results] == [("dns-zone", "PASS"), ("certificate", "PASS")]


@mock_aws
def test_missing_zone_and_unissued_certificate_fail() -> None:
    arn = boto3.client("acm", region_name="us-east-1").request_certificate(
        DomainName="api.example.com", ValidationMethod="DNS")["CertificateArn"]
    cfg = with_edge(stack_config("dev"), hosted_zone="example.org", certificate_arn=arn, domain_name="api.example.com")
    zone, cert = check_edge(cfg, Clients())
    assert zone.status == "FAIL" and "no public Route 53 hosted zone named example.org." in zone.detail
    assert "create-hosted-zone --name example.org" in zone.fix
    assert cert.status == "FAIL" and "PENDING_VALIDATION" in cert.detail


@mock_aws
def test_certificate_not_covering_the_hostname_or_in_another_region_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", -1)
    boto3.client("route53").create_hosted_zone(Name="example.com", CallerReference="t2")
    acm = boto3.client("acm", region_name="us-east-1")
    arn = acm.request_certificate(DomainName="www.example.com", ValidationMethod="DNS")["CertificateArn"]
    results = check_edge(with_edge(stack_config("dev"), hosted_zone="example.com", certificate_arn=arn, domain_name="api.example.com"), Clients())
    assert results[1].status == "FAIL" and "does not cover api.example.com" in results[1].detail
    elsewhere = arn.replace(":us-east-1:", ":eu-west-1:")
    results = check_edge(with_edge(stack_config("dev"), certificate_arn=elsewhere), Clients())
    assert results[0].status == "FAIL" and "in its own region" in results[0].detail
    missing = arn[:-4] + "0000"
    results = check_edge(with_edge(stack_config("dev"), certificate_arn=missing), Clients())
    assert results[0].status == "FAIL" and "ResourceNotFoundException" in results[0].detail


# --- the command ---------------------------------------------------------------------------------------------------

def test_cli_without_credentials_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert cli_main(["preflight", "dev"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: preflight needs AWS credentials") and "\n" not in err


@mock_aws
def test_cli_runs_every_check_and_exits_1_on_a_failure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                       quotas: tuple[Any, Stubber], eks: tuple[Any, Stubber],
                                                       rds: tuple[Any, Stubber]) -> None:
    """The real dev stack file end to end: the first quota is 0, everything else is in place."""
    q_client, q_stub = quotas
    e_client, e_stub = eks
    r_client, r_stub = rds
    cfg = load_stack_config("dev")
    needed = sorted(required_vcpus(cfg))
    for i, key in enumerate(needed):
        q_stub.add_response("get_service_quota", quota_response(preflight.QUOTAS[key].code, 0.0 if i == 0 else 10_000.0))
    e_stub.add_response("describe_cluster_versions", {"clusterVersions": [{"clusterVersion": cfg.cluster.version, "versionStatus": "STANDARD_SUPPORT"}]})
    _stub_all_addons(e_stub, cfg)
    postgres = cfg.data.postgres  # type: ignore[attr-defined]
    r_stub.add_response("describe_orderable_db_instance_options",
                        orderable((postgres.instance_class, f"{postgres.engine_version}.2", True)))
    edge = getattr(cfg, "edge", None)
    if edge is not None and edge.hosted_zone:
        boto3.client("route53").create_hosted_zone(Name=edge.hosted_zone, CallerReference="cli")
    monkeypatch.setattr(preflight, "session_clients",
                        lambda profile=None: Clients(**{"service-quotas": q_client, "eks": e_client, "rds": r_client}))
    assert cli_main(["preflight", "dev"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  quota        us-east-1      {preflight.QUOTAS[needed[0]].name}" in out
    assert f"fix: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {preflight.QUOTAS[needed[0]].code}" in out
    assert "PASS  az-offering" in out and "PASS  eks-addon" in out and "PASS  db-class" in out
    checks = len(needed) + len(cfg.node_groups) + 1 + len(cfg.cluster.addons) + 1 + 1
    assert out.strip().splitlines()[-1] == f"{checks} checks: {checks - 1} passed, 0 warnings, 1 failed"


def test_cli_bad_stack_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = copy.deepcopy(read_stack_config("dev"))
    raw["llm-platform:node_groups"][1]["gpu"] = "h100x"
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": raw}))
    assert cli_main(["--stacks-dir", str(tmp_path), "preflight", "dev"]) == 2
    assert "llm-platform:node_groups[1].gpu" in capsys.readouterr().err


def test_cli_json_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quotas: tuple[Any, Stubber]) -> None:
    import json

    q_client, q_stub = quotas
    cfg = load_stack_config("dev")
    for key in sorted(required_vcpus(cfg)):
        q_stub.add_response("get_service_quota", quota_response(preflight.QUOTAS[key].code, 10_000.0))
    monkeypatch.setattr(preflight, "CHECKS", (preflight.check_quotas,))
    monkeypatch.setattr(preflight, "session_clients", lambda profile=None: Clients(**{"service-quotas": q_client}))
    assert cli_main(["preflight", "dev", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stack"] == "dev" and doc["ok"] is True
    assert [c["check"] for c in doc["checks"]] == ["quota"] * len(required_vcpus(cfg))
    assert all(c["status"] == "PASS" and c["fix"] == "" for c in doc["checks"])


def test_quotas_are_checked_in_every_region_of_the_global_tier(quotas: tuple[Any, Stubber]) -> None:
    client, stub = quotas
    cfg = stack_config("global")
    asked: list[str] = []
    keys = sorted(required_vcpus(cfg))
    for _ in cfg.regions:
        for key in keys:
            stub.add_response("get_service_quota", quota_response(preflight.QUOTAS[key].code, 10_000.0))

    def clients(service: str, region: str) -> Any:
        asked.append(region)
        return client

    results = check_quotas(cfg, clients)
    regions = [r.name for r in cfg.regions]
    assert len(regions) == 3 and asked == regions
    assert [r.region for r in results] == [region for region in regions for _ in keys]
    assert {r.status for r in results} == {"PASS"}


def test_eks_version_support_dates_are_reported_and_checked_against_the_pins_table(eks: tuple[Any, Stubber]) -> None:
    """DescribeClusterVersions (botocore's eks model: endOfStandardSupportDate/endOfExtendedSupportDate) vs infra/pins.py."""
    from datetime import datetime, timedelta, timezone

    from infra.pins import EKS_VERSIONS

    client, stub = eks
    cfg = stack_config("dev")
    ours = EKS_VERSIONS[cfg.cluster.version]
    pacific = timezone(timedelta(hours=-7))
    # AWS gives the instant in US Pacific time: 17:00 the day before is midnight UTC of the calendar day.
    std = datetime(ours.end_of_standard_support.year, ours.end_of_standard_support.month, ours.end_of_standard_support.day,
                   tzinfo=timezone.utc).astimezone(pacific)
    later = datetime(2099, 1, 1, tzinfo=timezone.utc)
    stub.add_response("describe_cluster_versions", {"clusterVersions": [{
        "clusterVersion": cfg.cluster.version, "versionStatus": "STANDARD_SUPPORT",
        "endOfStandardSupportDate": std, "endOfExtendedSupportDate": later}]})
    _stub_all_addons(stub, cfg)
    results = check_eks_versions(cfg, Clients(eks=client))
    assert results[0].status == "PASS"
    assert results[0].detail.endswith(f"standard support until {ours.end_of_standard_support.isoformat()}, extended until 2099-01-01")
    assert not [r for r in results if r.check == "eks-calendar"]

    stub.add_response("describe_cluster_versions", {"clusterVersions": [{
        "clusterVersion": cfg.cluster.version, "versionStatus": "STANDARD_SUPPORT", "endOfStandardSupportDate": later}]})
    _stub_all_addons(stub, cfg)
    drift = [r for r in check_eks_versions(cfg, Clients(eks=client)) if r.check == "eks-calendar"]
    assert len(drift) == 1 and drift[0].status == "WARN" and "infra/pins.py" in drift[0].fix
