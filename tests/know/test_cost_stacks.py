"""The estimate on the real stacks, checked against figures computed here, by hand, from the repo's price table.

The expected dev figure is built from the stack file (what the tier asks for) and the price table, with the
rendering used only to count the resources the program adds on its own (keys, secrets, log groups, WAF rules);
no code of `infra.cost` is called to get it.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from infra.cost import estimate
from infra.pricelist import PRICES_PATH
from infra.preflight import load_stack_config
from infra.render import Rendering, known_stacks


def table() -> dict[str, Any]:
    return dict(json.loads(PRICES_PATH.read_text()))


def test_dev_idle_with_gpus_at_zero_costs_what_the_table_says(rendered: Callable[[str], Rendering]) -> None:
    rendering = rendered("dev")
    cfg = load_stack_config("dev")
    raw = table()
    hours = raw["hours_per_month"]
    p = raw["regions"][cfg.home_region.name]
    az_count = cfg.home_region.az_count
    expected: dict[str, float] = {}

    gpu_groups = [g for g in cfg.node_groups if g.gpu]
    assert gpu_groups and all(g.desired_size == 0 for g in gpu_groups), "dev idles with every GPU group at zero"
    for g in cfg.node_groups:
        hourly = p["ec2_hour"][g.instance_types[0]]
        if g.capacity == "SPOT":
            family = g.instance_types[0].split(".")[0]
            hourly *= 1 - raw["spot"]["by_family"].get(family, raw["spot"]["default_discount"])
        expected[f"nodes {g.name}"] = g.desired_size * (hourly * hours + g.disk_gib * p["ebs_gb_month"]["gp3"])
    expected["eks control plane"] = p["eks_cluster_hour"] * hours

    nat_count = 1 if cfg.network.nat_gateways == "single" else az_count
    expected["nat + its public IPv4"] = nat_count * (p["nat_gateway_hour"] + p["public_ipv4_hour"]) * hours
    expected["interface endpoints"] = len(cfg.network.interface_endpoints) * az_count * p["vpc_interface_endpoint_az_hour"] * hours

    redis = cfg.data.redis  # type: ignore[attr-defined]
    nodes = redis.shards * (1 + redis.replicas) if redis.cluster_mode else 1 + redis.replicas
    expected["redis"] = nodes * p["elasticache_hour"][redis.engine][redis.node_type] * hours

    pg = cfg.data.postgres  # type: ignore[attr-defined]
    copies = 2 if pg.multi_az else 1
    expected["postgres"] = copies * (p["rds_postgres_single_az_hour"][pg.instance_class] * hours
                                     + pg.allocated_storage_gib * p["rds_storage_gb_month"]["gp3"])

    (acl,) = rendering.of_type("aws:wafv2/webAcl:WebAcl")
    expected["alb"] = p["alb_hour"] * hours
    expected["waf"] = p["waf_web_acl_month"] + len(acl.inputs["rules"]) * p["waf_rule_month"]

    logs_assumed = raw["assumptions"]["cloudwatch_logs_gb_month"]
    for group in rendering.of_type("aws:cloudwatch/logGroup:LogGroup"):
        name = group.inputs["name"]
        gb = next((v for k, v in logs_assumed.items() if k != "default" and k in name), logs_assumed["default"])
        stored = gb * group.inputs["retentionInDays"] / 30
        expected[f"logs {name}"] = gb * p["cloudwatch_logs_ingest_gb"] + stored * p["cloudwatch_logs_storage_gb_month"]
    s3_assumed = raw["assumptions"]["s3_gb"]
    for bucket in rendering.of_type("aws:s3/bucket:Bucket"):
        gb = next((v for k, v in s3_assumed.items() if k != "default" and k in bucket.name), s3_assumed["default"])
        expected[f"bucket {bucket.name}"] = gb * p["s3_standard_gb_month"]
    expected["kms keys"] = len(rendering.of_type("aws:kms/key:Key")) * p["kms_key_month"]
    expected["secrets"] = len(rendering.of_type("aws:secretsmanager/secret:Secret")) * p["secrets_manager_secret_month"]

    est = estimate(rendering)
    assert est.unpriced == [] and est.errors == []
    assert abs(est.total_desired - round(sum(expected.values()), 2)) < 0.005, expected
    for g in gpu_groups:
        lines = [ln for ln in est.lines if ln.resource_type == "aws:eks/nodeGroup:NodeGroup" and g.name in ln.component]
        assert lines and sum(ln.monthly_desired for ln in lines) == 0.0
        assert sum(ln.monthly_max for ln in lines) > 0.0


@pytest.mark.parametrize("stack", known_stacks())
def test_every_resource_of_every_stack_is_priced_or_known_free(stack: str, rendered: Callable[[str], Rendering]) -> None:
    est = estimate(rendered(stack))
    assert est.unpriced == [] and est.errors == []
    assert 0 < est.total_desired <= est.total_max
    assert est.total_desired == pytest.approx(sum(d for _, d, _ in est.by_component()), abs=0.05)


def test_tiers_cost_in_the_order_the_seeds_expect(rendered: Callable[[str], Rendering]) -> None:
    """dev is the cheapest and grows with the tier: small (MVP) < prod (1k-10k RPS) < global (3 regions)."""
    totals = {stack: estimate(rendered(stack)) for stack in ("dev", "small", "prod", "global")}
    idle = [totals[s].total_desired for s in ("dev", "small", "prod", "global")]
    peak = [totals[s].total_max for s in ("dev", "small", "prod", "global")]
    assert idle == sorted(idle) and peak == sorted(peak)
    assert totals["dev"].total_desired < 1000  # one engineer's platform with its GPUs scaled to zero


def test_plan_json_carries_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli import main as cli_main

    cli_main(["plan", "dev", "--json"])
    doc = json.loads(capsys.readouterr().out)
    cost = doc["cost"]
    assert cost["currency"] == "USD" and cost["total_monthly_desired"] <= cost["total_monthly_max"]
    assert {c["component"] for c in cost["components"]} >= {"EksCluster llmp-dev", "NodeGroup llmp-dev-system"}
    assert cost["price_table"]["retrieved"] == table()["retrieved"]
    assert round(sum(c["monthly_desired"] for c in cost["components"]), 2) == pytest.approx(cost["total_monthly_desired"], abs=0.05)


def test_cost_command_markdown_for_a_pr_comment(capsys: pytest.CaptureFixture[str], rendered: Callable[[str], Rendering]) -> None:
    from infra.cli import main as cli_main

    assert cli_main(["cost", "global", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    est = estimate(rendered("global"))
    assert out.startswith("#### Estimated monthly cost: stack `global`")
    assert f"| | **total** | **${est.total_desired:,.2f}** | **${est.total_max:,.2f}** |" in out
    table_rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_rows) == 1 + len(est.by_region_component()) + 1  # header, one per component, total
    assert "| eu-west-1 | NodeGroup llmp-global-eu-west-1-system |" in out

    assert cli_main(["cost", "dev", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total_monthly_desired"] == estimate(rendered("dev")).total_desired
