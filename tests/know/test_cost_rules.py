"""Cost rules on small programs rendered with the real harness, priced from a synthetic table.

Every expected figure is computed here by hand from the synthetic table (round numbers on purpose), never by
calling the estimate code a second time.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from infra.cost import estimate, format_estimate
from infra.pricelist import PriceTable, load_price_table
from infra.render import render_function

HOURS = 730.0

SYNTHETIC: dict[str, Any] = {
    "schema_version": 1,
    "table_version": "test.1",
    "currency": "USD",
    "hours_per_month": HOURS,
    "retrieved": "2026-01-01",
    "source": "synthetic test table",
    "notes": [],
    "region_invariant": ["eks_cluster_hour", "kms_key_month", "secrets_manager_secret_month"],
    "spot": {"default_discount": 0.5, "by_family": {"g5": 0.7}},
    "assumptions": {"cloudwatch_logs_gb_month": {"/aws/eks/": 10.0, "default": 1.0}, "s3_gb": {"model": 100.0, "default": 5.0}},
    "regions": {
        "us-east-1": {
            "ec2_hour": {"m6i.large": 0.1, "g5.xlarge": 1.0, "p4d.24xlarge": 30.0},
            "elasticache_hour": {"redis": {"cache.r7g.large": 0.2}, "valkey": {"cache.t4g.small": 0.03}},
            "rds_postgres_single_az_hour": {"db.r6g.large": 0.25},
            "rds_multi_az_factor": 2.0,
            "rds_storage_gb_month": {"gp3": 0.1},
            "ebs_gb_month": {"gp3": 0.08},
            "eks_cluster_hour": 0.1,
            "eks_extended_support_cluster_hour": 0.6,
            "nat_gateway_hour": 0.05, "nat_gateway_gb": 0.05,
            "public_ipv4_hour": 0.005,
            "vpc_interface_endpoint_az_hour": 0.01,
            "alb_hour": 0.02, "alb_lcu_hour": 0.008, "nlb_hour": 0.02,
            "waf_web_acl_month": 5.0, "waf_rule_month": 1.0, "waf_million_requests": 0.6,
            "cloudwatch_logs_ingest_gb": 0.5, "cloudwatch_logs_storage_gb_month": 0.03,
            "s3_standard_gb_month": 0.02,
            "kms_key_month": 1.0,
            "secrets_manager_secret_month": 0.4,
        },
        "eu-west-1": {"derived": {"from": "us-east-1", "multiplier": 1.5}},
    },
}


@pytest.fixture()
def table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(SYNTHETIC))
    return load_price_table(path)


class Holder(pulumi.ComponentResource):
    def __init__(self, kind: str, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"llm-platform:test:{kind}", name, None, opts)


def _node_group_program(region: str = "us-east-1", capacity: str = "ON_DEMAND", itype: str = "m6i.large",
                        desired: int = 2, maximum: int = 5, disk: int = 100) -> None:
    provider = aws.Provider(f"aws-{region}", region=region)
    holder = Holder("NodeGroup", "workers", pulumi.ResourceOptions(provider=provider))
    child = pulumi.ResourceOptions(parent=holder)
    lt = aws.ec2.LaunchTemplate(
        "workers-lt",
        block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
            device_name="/dev/xvda", ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(volume_size=disk, volume_type="gp3"))],
        opts=child,
    )
    aws.eks.NodeGroup(
        "workers-ng",
        cluster_name="c",
        node_role_arn="arn:aws:iam::123456789012:role/n",
        subnet_ids=["subnet-1"],
        instance_types=[itype],
        capacity_type=capacity,
        scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=0, desired_size=desired, max_size=maximum),
        launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=lt.id, version="1"),
        opts=child,
    )


def test_on_demand_node_group_at_desired_and_max(table: PriceTable) -> None:
    est = estimate(render_function(_node_group_program), table)
    instance_hour, disk_month = 0.1, 100 * 0.08
    assert est.total_desired == pytest.approx(round(2 * (instance_hour * HOURS + disk_month), 2))
    assert est.total_max == pytest.approx(round(5 * (instance_hour * HOURS + disk_month), 2))
    assert est.by_component() == [("NodeGroup workers", 162.0, 405.0)]


def test_spot_gpu_group_idle_at_zero_costs_nothing_and_max_uses_family_discount(table: PriceTable) -> None:
    est = estimate(render_function(lambda: _node_group_program(capacity="SPOT", itype="g5.xlarge", desired=0, maximum=3, disk=200)), table)
    assert est.total_desired == 0.0
    # g5 Spot = on-demand 1.0/h less the table's 70 % g5 discount
    assert est.total_max == pytest.approx(round(3 * (1.0 * 0.3 * HOURS + 200 * 0.08), 2))
    assert any("spot" in line.detail and "1 GPU each" in line.detail for line in est.lines)


def test_derived_region_scales_prices_but_not_invariant_ones(table: PriceTable) -> None:
    def program() -> None:
        provider = aws.Provider("aws-eu-west-1", region="eu-west-1")
        aws.eks.Cluster("c", role_arn="arn:aws:iam::123456789012:role/c",
                        vpc_config=aws.eks.ClusterVpcConfigArgs(subnet_ids=["s"]), opts=pulumi.ResourceOptions(provider=provider))
        aws.ec2.NatGateway("nat", subnet_id="s", allocation_id="a", opts=pulumi.ResourceOptions(provider=provider))

    est = estimate(render_function(program), table)
    cluster = next(ln for ln in est.lines if ln.resource_type == "aws:eks/cluster:Cluster")
    nat = next(ln for ln in est.lines if ln.resource_type == "aws:ec2/natGateway:NatGateway")
    assert cluster.monthly_desired == pytest.approx(0.1 * HOURS)  # EKS costs the same in every region
    assert nat.monthly_desired == pytest.approx(0.05 * 1.5 * HOURS)
    assert {ln.region for ln in est.lines} == {"eu-west-1"}
    assert "derived" in est.region_bases[0]


def test_network_lines_nat_eip_and_interface_endpoints(table: PriceTable) -> None:
    def program() -> None:
        aws.ec2.Eip("eip", domain="vpc")
        aws.ec2.NatGateway("nat", subnet_id="s", allocation_id="a")
        aws.ec2.VpcEndpoint("ecr", vpc_id="v", service_name="com.amazonaws.us-east-1.ecr.api",
                            vpc_endpoint_type="Interface", subnet_ids=["a", "b", "c"])
        aws.ec2.VpcEndpoint("s3", vpc_id="v", service_name="com.amazonaws.us-east-1.s3", vpc_endpoint_type="Gateway")

    est = estimate(render_function(program), table)
    expected = 0.005 * HOURS + 0.05 * HOURS + 3 * 0.01 * HOURS + 0.0
    assert est.total_desired == pytest.approx(round(expected, 2))
    assert any("per GB processed" in n or "/GB processed" in n for n in est.notes)


def test_elasticache_replication_groups_count_nodes(table: PriceTable) -> None:
    def program() -> None:
        aws.elasticache.ReplicationGroup("single", description="d", node_type="cache.t4g.small", engine="valkey", num_cache_clusters=1)
        aws.elasticache.ReplicationGroup("pair", description="d", node_type="cache.r7g.large", engine="redis", num_cache_clusters=2)
        aws.elasticache.ReplicationGroup("sharded", description="d", node_type="cache.r7g.large", engine="redis",
                                         num_node_groups=3, replicas_per_node_group=2)

    est = estimate(render_function(program), table)
    by_name = {ln.resource_name: ln.monthly_desired for ln in est.lines}
    assert by_name["single"] == pytest.approx(0.03 * HOURS)
    assert by_name["pair"] == pytest.approx(2 * 0.2 * HOURS)
    assert by_name["sharded"] == pytest.approx(9 * 0.2 * HOURS)


def test_rds_multi_az_doubles_instance_and_storage(table: PriceTable) -> None:
    def program() -> None:
        aws.rds.Instance("single", engine="postgres", instance_class="db.r6g.large", allocated_storage=100, storage_type="gp3")
        aws.rds.Instance("multi", engine="postgres", instance_class="db.r6g.large", allocated_storage=100, storage_type="gp3", multi_az=True)

    est = estimate(render_function(program), table)
    single = sum(ln.monthly_desired for ln in est.lines if ln.resource_name == "single")
    multi = sum(ln.monthly_desired for ln in est.lines if ln.resource_name == "multi")
    assert single == pytest.approx(0.25 * HOURS + 100 * 0.1)
    assert multi == pytest.approx(2 * 0.25 * HOURS + 2 * 100 * 0.1)


def test_edge_alb_and_waf_rules(table: PriceTable) -> None:
    def program() -> None:
        aws.lb.LoadBalancer("alb", load_balancer_type="application", subnets=["a", "b"])
        rule = aws.wafv2.WebAclRuleArgs(
            name="r", priority=1, override_action=aws.wafv2.WebAclRuleOverrideActionArgs(none=aws.wafv2.WebAclRuleOverrideActionNoneArgs()),
            statement=aws.wafv2.WebAclRuleStatementArgs(managed_rule_group_statement=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgs(
                name="AWSManagedRulesCommonRuleSet", vendor_name="AWS")),
            visibility_config=aws.wafv2.WebAclRuleVisibilityConfigArgs(cloudwatch_metrics_enabled=True, metric_name="r", sampled_requests_enabled=True),
        )
        aws.wafv2.WebAcl("acl", scope="REGIONAL", default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
                         rules=[rule, rule], visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(
                             cloudwatch_metrics_enabled=True, metric_name="acl", sampled_requests_enabled=True))

    est = estimate(render_function(program), table)
    assert est.total_desired == pytest.approx(round(0.02 * HOURS + 5.0 + 2 * 1.0, 2))
    assert any("LCU" in n for n in est.notes) and any("million requests" in n for n in est.notes)


def test_logs_buckets_keys_secrets_use_table_assumptions(table: PriceTable) -> None:
    def program() -> None:
        aws.cloudwatch.LogGroup("cp", name="/aws/eks/c/cluster", retention_in_days=90)
        aws.s3.Bucket("models", bucket="llmp-model-weights")
        aws.kms.Key("k", description="k")
        aws.secretsmanager.Secret("s", name="s")

    est = estimate(render_function(program), table)
    logs = 10 * 0.5 + 10 * 3 * 0.03  # 10 GB/month ingested, 90 days (3 months) kept
    bucket = 100 * 0.02
    assert est.total_desired == pytest.approx(round(logs + bucket + 1.0 + 0.4, 2))


def test_free_resources_are_not_unpriced_and_unknown_types_are_listed(table: PriceTable) -> None:
    def program() -> None:
        aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16")
        aws.ec2.Subnet("sn", vpc_id="v", cidr_block="10.0.0.0/24")
        aws.sns.Topic("alerts")

    est = estimate(render_function(program), table)
    assert est.lines == []
    assert est.unpriced == ["aws:sns/topic:Topic"]
    assert "not priced" in format_estimate(est)


def test_missing_price_is_listed_and_left_out_of_the_totals(table: PriceTable) -> None:
    def program() -> None:
        _node_group_program(itype="c7i.xlarge")
        aws.kms.Key("k", description="k")

    est = estimate(render_function(program), table)
    assert len(est.errors) == 1
    assert est.errors[0].endswith(
        "prices.json: no price 'ec2_hour.c7i.xlarge' for region us-east-1; add it to the table or run `python -m infra.cli prices --refresh`")
    assert est.total_desired == 1.0  # the KMS key is still counted
    assert "NOT IN THE TOTALS: " in format_estimate(est)


def test_unknown_region_is_a_clear_error(tmp_path: Path) -> None:
    raw = copy.deepcopy(SYNTHETIC)
    del raw["regions"]["eu-west-1"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(raw))
    est = estimate(render_function(lambda: _node_group_program(region="eu-west-1")), load_price_table(path))
    assert est.lines == []
    assert len(est.errors) == 1 and est.errors[0].endswith("no prices for region 'eu-west-1'; known regions: us-east-1")


def test_repo_price_table_covers_every_instance_type() -> None:
    from infra.instances import INSTANCE_SPECS

    table = load_price_table()
    assert table.source and table.retrieved and table.version
    for region in table.raw["regions"]:
        prices = table.region(region)
        for itype in INSTANCE_SPECS:
            assert prices.rate("ec2_hour", itype) > 0, (region, itype)


def test_persistent_volume_claims_are_priced_as_gp3_in_the_clusters_region(table: PriceTable) -> None:
    import pulumi_kubernetes as k8s

    def program() -> None:
        aws.Provider("aws-eu-west-1", region="eu-west-1")
        provider = k8s.Provider("k8s-eu-west-1", kubeconfig="{}")
        k8s.core.v1.PersistentVolumeClaim(
            "prometheus",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="prometheus", namespace="monitoring"),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"], storage_class_name="gp3",
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": "50Gi"})),
            opts=pulumi.ResourceOptions(provider=provider),
        )

    est = estimate(render_function(program), table)
    (line,) = est.lines
    assert line.region == "eu-west-1"
    assert line.monthly_desired == pytest.approx(50 * 0.08 * 1.5)
