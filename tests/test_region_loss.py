"""Guard: the region-loss drill. For each region of the global stack, render the configuration the runbook
(docs/runbooks/region-failover.md) has the operator set after losing it, and check that
- every surviving region's gateway reaches a writer for keys and usage (the ledger) and for limits (Redis), in a
  surviving region, through NetworkPolicy, routes/peering and security groups;
- no surviving resource references the lost region (images, buckets, keys, secrets, database sources), except the
  plumbing listed in ALLOWED with its reason;
- Route53 sends traffic only to survivors: every record answering with the lost region's ALB carries its health
  check, except a residency pin with `on_region_failure: refuse`, which keeps its clients in their region by design.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
import yaml

from infra.render import STACKS_DIR, Rendering, RenderedResource, render
from tests.netmodel import StackNet

CONFIG = yaml.safe_load((STACKS_DIR / "Pulumi.global.yaml").read_text())["config"]
REGIONS = [r["name"] for r in CONFIG["llm-platform:regions"]]
# Resources whose reference to the lost region is plumbing *to* it, harmless while it is gone: peering and its
# routes, the private zone's VPC associations, Route53 records and checks (judged below), replication towards it
# (ECR, S3, secret replicas: the other destinations keep replicating).
ALLOWED_COMPONENTS = ("llm-platform:global:RegionPeering", "llm-platform:global:InternalDns", "llm-platform:global:GlobalRouting",
                      "llm-platform:global:ArtifactReplication")
ALLOWED_INPUTS = {
    ("aws:secretsmanager/secret:Secret", "replicas"): "the secret's replica in the lost region; survivors read their own",
    ("aws:rds/instance:Instance", "replicateSourceDb"): "a replica still following the lost primary (stale until fail back re-seeds it)",
    ("pulumi:providers:aws", "region"): "the lost region's own provider",
}


def after_losing(lost: str) -> dict[str, Any]:
    """The runbook's config after losing `lost`: writers move to the first surviving region if they were there."""
    raw = yaml.safe_load((STACKS_DIR / "Pulumi.global.yaml").read_text())["config"]
    g = raw["llm-platform:global"]
    survivor = next(r for r in REGIONS if r != lost)
    if (g.get("ledger_primary_region") or REGIONS[0]) == lost:
        g["ledger_primary_region"] = survivor
    if g.get("shared_state", "global_datastore") == "global_datastore" and (g.get("redis_primary_region") or REGIONS[0]) == lost:
        g["redis_primary_region"] = survivor
    return raw


_CACHE: dict[str, Rendering] = {}


def drill(lost: str) -> Rendering:
    if lost not in _CACHE:
        _CACHE[lost] = render("global", config=after_losing(lost))
    return _CACHE[lost]


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path)


def _under(rendering: Rendering, resource: RenderedResource, types: tuple[str, ...]) -> bool:
    by_urn = {r.urn: r for r in rendering.resources}
    parent = resource.parent
    while parent and parent in by_urn:
        if by_urn[parent].type in types:
            return True
        parent = by_urn[parent].parent
    return False


@pytest.mark.parametrize("lost", REGIONS)
def test_survivors_reach_writers_in_surviving_regions(lost: str) -> None:
    net = StackNet(drill(lost))
    for region in REGIONS:
        if region == lost:
            continue
        endpoints = net.gateway_endpoints(region)
        assert set(endpoints) == {"redis", "postgres"}, region
        for dependency, (host, port) in endpoints.items():
            store = net.resolve(host, port)
            assert store.region != lost, f"after losing {lost}: {region}'s {dependency} is {store.resource.name} in the lost region"
            if dependency == "postgres":  # keys and usage: a writer, not a replica
                assert not store.resource.inputs.get("replicateSourceDb"), f"{region}'s ledger {store.resource.name} is still a replica"
            blocked = net.why_unreachable(region, store)
            assert blocked is None, f"after losing {lost}: gateway in {region} -> {store.resource.name} TCP {port}: {blocked}"


@pytest.mark.parametrize("lost", REGIONS)
def test_no_surviving_resource_references_the_lost_region(lost: str) -> None:
    r = drill(lost)
    net = StackNet(r)
    k8s_region = {rn.k8s_provider: region for region, rn in net.regions.items()}
    lost_buckets = {str(b.id) for b in r.of_type("aws:s3/bucket:Bucket") if r.region_of(b) == lost}
    pattern = re.compile(rf"(arn:aws[a-z-]*:[a-z0-9-]+:{lost}:|\.{lost}\.amazonaws\.com|\.{lost}\.rds\.)")
    found: list[str] = []
    for resource in r.resources:
        region = r.region_of(resource) if resource.type.startswith("aws:") else k8s_region.get((resource.provider or "").rsplit("::", 1)[0])
        if region in (None, lost) or _under(r, resource, ALLOWED_COMPONENTS):
            continue
        for path, text in _strings(resource.inputs):
            if (resource.type, path.split(".")[0]) in ALLOWED_INPUTS:
                continue
            if pattern.search(text) or any(f"s3://{b}" in text or f":::{b}" in text for b in lost_buckets):
                found.append(f"{resource.type} {resource.name} ({region}) {path}: {text[:160]}")
    assert not found, f"after losing {lost}, surviving resources still use it:\n" + "\n".join(found[:20])


@pytest.mark.parametrize("lost", REGIONS)
def test_route53_sends_traffic_only_to_survivors(lost: str) -> None:
    r = drill(lost)
    g = CONFIG["llm-platform:global"]
    checks = {next(x for x in REGIONS if c.name.endswith(x)): str(c.id) for c in r.of_type("aws:route53/healthCheck:HealthCheck")}
    # The global name and its latency pool (each region's own <region>.<edge domain> name is regional by design).
    global_names = {g["api_hostname"], f"latency.{g['api_hostname']}"}
    refuse = {p["region"] for p in g.get("data_residency", []) if p.get("on_region_failure", "refuse") == "refuse"}
    answering = set()
    for record in r.of_type("aws:route53/record:Record"):
        if record.inputs["name"] not in global_names:
            continue
        for alias in record.inputs.get("aliases") or []:
            target = next((x for x in REGIONS if f".{x}.elb.amazonaws.com" in str(alias["name"])), None)
            if target is None:
                assert alias["evaluateTargetHealth"] is True, f"{record.name} -> {alias['name']} must fall through when its targets are down"
                continue
            answering.add(target)
            if target != lost:
                continue
            if record.inputs.get("geolocationRoutingPolicies") and lost in refuse:
                assert record.inputs.get("healthCheckId") is None  # residency over availability, documented in the runbook
                continue
            assert record.inputs.get("healthCheckId") == checks[lost], f"{record.name} answers with {lost} without its health check"
    assert answering >= set(REGIONS) - {lost}
