"""`prices --refresh`: the Price List API answers (botocore Stubber on a real `pricing` client) become the table."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from infra.cli import main as cli_main
from infra.pricelist import PRICES_PATH, load_price_table, refresh_price_table

SMALL: dict[str, Any] = {
    "schema_version": 1, "table_version": "old", "currency": "USD", "hours_per_month": 730, "retrieved": "2020-01-01",
    "source": "hand", "region_invariant": ["eks_cluster_hour"],
    "regions": {
        "us-east-1": {
            "ec2_hour": {"g5.xlarge": 1.0},
            "elasticache_hour": {"redis": {"cache.r7g.large": 0.2}, "valkey": {}},
            "rds_postgres_single_az_hour": {"db.r6g.large": 0.2},
            "rds_multi_az_factor": 2.0,
            "ebs_gb_month": {"gp3": 0.08},
            "eks_cluster_hour": 0.1, "nat_gateway_hour": 0.045, "alb_hour": 0.0225,
        },
        "eu-west-1": {"derived": {"from": "us-east-1", "multiplier": 1.1}},
    },
}


def price_item(usd: str, unit: str = "Hrs", usagetype: str = "") -> str:
    return json.dumps({
        "product": {"attributes": {"usagetype": usagetype}},
        "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": {"SKU.TERM.DIM": {"unit": unit, "pricePerUnit": {"USD": usd}}}}}},
    })


def term(field: str, value: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": field, "Value": value}


def expect(stub: Stubber, service: str, filters: Any, items: list[str], token: str | None = None) -> None:
    response: dict[str, Any] = {"PriceList": items, "FormatVersion": "aws_v1"}
    if token:
        response["NextToken"] = token
    stub.add_response("get_products", response, {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1", "MaxResults": 100})


def stub_region(stub: Stubber, region: str, g5: str, redis: str = "0.219") -> None:
    where = term("regionCode", region)
    expect(stub, "AmazonEC2", [where, term("instanceType", "g5.xlarge"), term("operatingSystem", "Linux"), term("tenancy", "Shared"),
                               term("preInstalledSw", "NA"), term("capacitystatus", "Used"), term("licenseModel", "No License required")],
           [price_item("0.0000000000"), price_item(g5)])  # a zero-priced variant first: skipped
    expect(stub, "AmazonElastiCache", [where, term("instanceType", "cache.r7g.large"), term("cacheEngine", "Redis")], [price_item(redis)])
    expect(stub, "AmazonRDS", [where, term("instanceType", "db.r6g.large"), term("databaseEngine", "PostgreSQL"),
                               term("deploymentOption", "Single-AZ")], [])  # not in the API answer: kept
    expect(stub, "AmazonEKS", [where], [price_item("0.60", usagetype="USE1-AmazonEKS-Hours:extendedSupport"),
                                        price_item("0.10", usagetype="USE1-AmazonEKS-Hours:perCluster")])
    expect(stub, "AmazonEC2", [where, term("productFamily", "NAT Gateway")], [price_item("0.048", usagetype="USE1-NatGateway-Hours")])
    stub.add_response("get_products", {"PriceList": [price_item("0.008", usagetype="USE1-LCUUsage")], "NextToken": "page2"},
                      {"ServiceCode": "AWSELB", "Filters": [where, term("productFamily", "Load Balancer-Application")],
                       "FormatVersion": "aws_v1", "MaxResults": 100})
    stub.add_response("get_products", {"PriceList": [price_item("0.0252", usagetype="USE1-LoadBalancerUsage")]},
                      {"ServiceCode": "AWSELB", "Filters": [where, term("productFamily", "Load Balancer-Application")],
                       "FormatVersion": "aws_v1", "MaxResults": 100, "NextToken": "page2"})
    expect(stub, "AmazonEC2", [where, term("productFamily", "Storage"), term("volumeApiName", "gp3")], [price_item("0.08", unit="GB-Mo")])


def test_refresh_rewrites_rates_from_the_price_list_api() -> None:
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    with Stubber(client) as stub:
        stub_region(stub, "us-east-1", g5="1.0060000000")
        new, rep = refresh_price_table(client, SMALL, today=dt.date(2026, 11, 22))
        stub.assert_no_pending_responses()
    rates = new["regions"]["us-east-1"]
    assert rates["ec2_hour"]["g5.xlarge"] == 1.006
    assert rates["elasticache_hour"]["redis"]["cache.r7g.large"] == 0.219
    assert rates["rds_postgres_single_az_hour"]["db.r6g.large"] == 0.2  # kept
    assert rates["eks_cluster_hour"] == 0.1 and rates["nat_gateway_hour"] == 0.048 and rates["alb_hour"] == 0.0252
    assert new["regions"]["eu-west-1"] == SMALL["regions"]["eu-west-1"]  # derived regions keep deriving
    assert new["retrieved"] == "2026-11-22" and new["table_version"] == "2026-11-22.api"
    assert "Price List API" in new["source"]
    assert rep.not_found == ["us-east-1:db.r6g.large"]
    assert "us-east-1:g5.xlarge 1.0 -> 1.006" in rep.updated
    assert SMALL["regions"]["us-east-1"]["ec2_hour"]["g5.xlarge"] == 1.0  # input not mutated


def test_refresh_can_give_a_derived_region_its_own_prices() -> None:
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    with Stubber(client) as stub:
        stub_region(stub, "us-east-1", g5="1.006")
        stub_region(stub, "eu-west-1", g5="1.123", redis="0.242")
        new, _ = refresh_price_table(client, SMALL, make_explicit=["eu-west-1"])
        stub.assert_no_pending_responses()
    eu = new["regions"]["eu-west-1"]
    assert "derived" not in eu
    assert eu["ec2_hour"]["g5.xlarge"] == 1.123
    assert eu["rds_postgres_single_az_hour"]["db.r6g.large"] == pytest.approx(0.22)  # derived value kept (0.2 × 1.1)
    assert eu["rds_multi_az_factor"] == 2.0 and eu["eks_cluster_hour"] == 0.1  # factors and invariant prices not scaled


def test_cli_refresh_writes_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(SMALL))
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "t")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    made: list[tuple[str, str]] = []

    def fake_client(self: Any, service: str, region_name: str) -> Any:
        made.append((service, region_name))
        return client

    monkeypatch.setattr(boto3.Session, "client", fake_client)
    with Stubber(client) as stub:
        stub_region(stub, "us-east-1", g5="1.5")
        assert cli_main(["prices", "--refresh", "--table", str(path)]) == 0
    assert made == [("pricing", "us-east-1")]
    assert load_price_table(path).raw["regions"]["us-east-1"]["ec2_hour"]["g5.xlarge"] == 1.5
    out = capsys.readouterr().out
    assert "updated us-east-1:g5.xlarge 1.0 -> 1.5" in out and f"wrote {path}" in out


def test_repo_table_records_source_date_and_version() -> None:
    table = load_price_table(PRICES_PATH)
    assert table.raw["schema_version"] == 1
    assert dt.date.fromisoformat(table.retrieved)
    assert table.hours_per_month == 730
    assert "us-east-1" in table.raw["regions"] and "derived" not in table.raw["regions"]["us-east-1"]
