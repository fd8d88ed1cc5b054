"""The control plane is priced by the EKS support status of the cluster's version on the estimate's day.

AWS bills a version past its end of standard support at the extended-support rate ($0.60 instead of $0.10 per
cluster-hour, from the start of that day, UTC). Before this, every cluster was priced at the standard rate, so an
estimate for a 1.33/1.34 cluster in December 2026 was ~$365/month low.
"""

from __future__ import annotations

from datetime import date

import pulumi_aws as aws
import pytest

from infra.cost import estimate
from infra.pins import EKS_VERSIONS
from infra.pricelist import PriceTable
from infra.render import render_function
from tests.know.test_cost_rules import HOURS, table  # noqa: F401 - the synthetic price-table fixture



def _cluster(version: str) -> None:
    aws.eks.Cluster("c", name="c", version=version, role_arn="arn:aws:iam::123456789012:role/c",
                    vpc_config=aws.eks.ClusterVpcConfigArgs(subnet_ids=["subnet-1", "subnet-2"]))


def control_plane(version: str, day: date, prices: PriceTable) -> tuple[float, str]:
    est = estimate(render_function(lambda: _cluster(version)), prices, on=day)
    (line,) = [x for x in est.lines if "control plane" in x.detail]
    return line.monthly_desired, line.detail


def test_version_past_standard_support_is_billed_the_extended_rate(table: PriceTable) -> None:  # noqa: F811
    monthly, detail = control_plane("1.34", date(2026, 12, 3), table)
    assert monthly == pytest.approx(0.6 * HOURS)
    assert "extended support" in detail


def test_version_in_standard_support_is_billed_the_standard_rate(table: PriceTable) -> None:  # noqa: F811
    monthly, detail = control_plane("1.35", date(2026, 12, 3), table)
    assert monthly == pytest.approx(0.1 * HOURS)
    assert "standard support" in detail


def test_extended_billing_starts_on_the_end_of_standard_support_day(table: PriceTable) -> None:  # noqa: F811
    end = EKS_VERSIONS["1.35"].end_of_standard_support
    assert control_plane("1.35", date.fromordinal(end.toordinal() - 1), table)[0] == pytest.approx(0.1 * HOURS)
    assert control_plane("1.35", end, table)[0] == pytest.approx(0.6 * HOURS)
