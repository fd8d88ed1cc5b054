"""Guard: every gateway, in every stack and region, can reach each data store it is configured to use (NetworkPolicy,
route tables and peering, security groups all allow it) and nothing beyond what it or a failover needs is open.

One test per (stack, region, dependency): a failure names the source, the destination, the port and the rule that
blocks it (tests/netmodel.py decides as AWS and Kubernetes do)."""

from __future__ import annotations

from typing import Callable

import pytest
import yaml

from infra.render import STACKS_DIR, Rendering, known_stacks
from tests.netmodel import StackNet


def _regions(stack: str) -> list[str]:
    config = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return [r["name"] for r in config["llm-platform:regions"]]


CASES = [(stack, region, dep) for stack in known_stacks() for region in _regions(stack) for dep in ("redis", "postgres")]


@pytest.fixture(scope="module")
def nets(rendered: Callable[[str], Rendering]) -> Callable[[str], StackNet]:
    cache: dict[str, StackNet] = {}

    def get(stack: str) -> StackNet:
        if stack not in cache:
            cache[stack] = StackNet(rendered(stack))
        return cache[stack]

    return get


@pytest.mark.parametrize(("stack", "region", "dependency"), CASES, ids=[f"{s}-{r}-{d}" for s, r, d in CASES])
def test_gateway_reaches_its_data_store(nets: Callable[[str], StackNet], stack: str, region: str, dependency: str) -> None:
    net = nets(stack)
    endpoints = net.gateway_endpoints(region)
    has_store = bool(net.r.of_type("aws:elasticache/replicationGroup:ReplicationGroup" if dependency == "redis" else "aws:rds/instance:Instance"))
    if not has_store:
        assert dependency not in endpoints, f"{stack}/{region}: gateway configured with {dependency} but the stack has none"
        return
    assert dependency in endpoints, f"{stack}/{region}: the stack has {dependency} but the gateway is not configured with it"
    host, port = endpoints[dependency]
    store = net.resolve(host, port)
    assert store.kind == dependency
    blocked = net.why_unreachable(region, store)
    assert blocked is None, f"{stack}: gateway in {region} -> {store.resource.name} ({store.region}) TCP {port}: {blocked}"


@pytest.mark.parametrize("stack", known_stacks())
def test_nothing_open_beyond_what_gateways_and_failovers_need(nets: Callable[[str], StackNet], stack: str) -> None:
    """Data ports are open only to the VPCs whose gateways may use the store: configured, or promoted in its place."""
    net = nets(stack)
    needed: dict[str, set[str]] = {}  # data store resource id -> regions whose gateways may use it
    policy_cidrs: dict[tuple[str, int], set[str]] = {}
    for region in net.regions:
        for host, port in net.gateway_endpoints(region).values():
            for candidate in net.lineage(net.resolve(host, port)):
                needed.setdefault(str(candidate.id), set()).add(region)
                policy_cidrs.setdefault((region, port), set()).add(str(net.regions[net.r.region_of(candidate) or ""].cidr))
    assert needed, f"{stack}: no gateway uses a data store"
    for (region, port), cidrs in policy_cidrs.items():
        for policy in net.k8s_objects(region, "NetworkPolicy", "gateway"):
            for rule in policy.inputs["spec"].get("egress") or []:
                if any(int(p.get("port", 0)) == port for p in rule.get("ports") or []):
                    opened = {peer["ipBlock"]["cidr"] for peer in rule.get("to") or [] if "ipBlock" in peer}
                    assert opened <= cidrs, f"{stack}/{region}: {policy.inputs['metadata']['name']} opens TCP {port} to {sorted(opened - cidrs)}"
    cidr_region = {str(rn.cidr): r for r, rn in net.regions.items()}
    stores = [*net.r.of_type("aws:elasticache/replicationGroup:ReplicationGroup"), *net.r.of_type("aws:rds/instance:Instance")]
    for store in stores:
        users = needed.get(str(store.id), set())
        groups = store.inputs.get("securityGroupIds") or store.inputs.get("vpcSecurityGroupIds") or []
        for sg in groups:
            for rule in net.ingress_rules(str(sg)):
                cidr = rule.inputs.get("cidrIpv4")
                if cidr is not None:
                    assert cidr_region.get(cidr) in users, f"{stack}: {rule.name} opens {store.name} to {cidr}, whose gateways never use it"
