"""What the first `pulumi up` in a fresh account depends on, checked over every stack's rendered graph.

- AZ choice: only zones that need no opt-in and that EKS accepts for cluster subnets; each node group only in the
  zones that offer its instance types. The mocks (infra/render.py) answer like an account that opted into a Local
  Zone, whose zone names map use1-az3 to `us-east-1b`, and where GPU types are offered in few zones.
- Critical path: no cluster add-on or non-GPU workload waits (transitively) for a GPU node group; every Helm release
  and Kubernetes object waits for the add-ons it needs.
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest

from infra.render import LOCAL_ZONE_TYPES, NOT_OFFERED_IN, PlatformMocks, Rendering, read_stack_config, render
from infra.zones import EKS_UNSUPPORTED_ZONE_IDS, Zone, choose_zones

Render = Callable[[str], Rendering]
STACKS = ["dev", "small", "prod", "global"]


def zone_facts(region: str) -> dict[str, tuple[str, str]]:
    """Zone name -> (zone id, opt-in status), as the mock account reports them."""
    return {name: (zone_id, opt_in) for name, zone_id, opt_in in PlatformMocks.zones(region)}


def offers(region: str, zone: str, instance_type: str) -> bool:
    _, opt_in = zone_facts(region)[zone]
    if opt_in != "opt-in-not-required":
        return instance_type in LOCAL_ZONE_TYPES
    return zone not in NOT_OFFERED_IN.get(region, {}).get(instance_type, set())


# --- AZ choice -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_subnets_only_in_regular_zones_that_eks_accepts(rendered: Render, stack: str) -> None:
    r = rendered(stack)
    for subnet in r.of_type("aws:ec2/subnet:Subnet"):
        region = r.region_of(subnet) or ""
        zone_id, opt_in = zone_facts(region)[subnet.inputs["availabilityZone"]]
        assert opt_in == "opt-in-not-required", f"{subnet.name}: Local/Wavelength zone"
        assert zone_id not in EKS_UNSUPPORTED_ZONE_IDS, f"{subnet.name}: {zone_id} cannot host EKS cluster subnets"
    # The cluster gets every private subnet (its control-plane ENIs may go to any of them).
    private = {s.id for s in r.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"].get("llm-platform/tier") == "private"}
    cluster_subnets = {sid for c in r.of_type("aws:eks/cluster:Cluster") for sid in c.inputs["vpcConfig"]["subnetIds"]}
    assert cluster_subnets == private


@pytest.mark.parametrize("stack", STACKS)
def test_each_node_group_only_in_zones_offering_all_its_types(rendered: Render, stack: str) -> None:
    r = rendered(stack)
    zone_of = {s.id: s.inputs["availabilityZone"] for s in r.of_type("aws:ec2/subnet:Subnet")}
    private_by_region: dict[str, set[str]] = {}
    for s in r.of_type("aws:ec2/subnet:Subnet"):
        if s.inputs["tags"].get("llm-platform/tier") == "private":
            private_by_region.setdefault(r.region_of(s) or "", set()).add(s.inputs["availabilityZone"])
    narrowed = 0
    for ng in r.of_type("aws:eks/nodeGroup:NodeGroup"):
        region = r.region_of(ng) or ""
        zones = {zone_of[sid] for sid in ng.inputs["subnetIds"]}
        expected = {z for z in private_by_region[region] if all(offers(region, z, t) for t in ng.inputs["instanceTypes"])}
        assert zones == expected, f"{ng.name}: subnets in {sorted(zones)}, types offered together in {sorted(expected)}"
        narrowed += zones != private_by_region[region]
    if stack in ("prod", "global"):
        assert narrowed, "the p4d group must have been narrowed to the zones offering p4d.24xlarge"


def test_choice_skips_opt_in_zones_and_eks_refused_ids_by_id_not_name() -> None:
    zones = [Zone("us-west-1a", "usw1-az2"), Zone("us-west-1b", "usw1-az1"), Zone("us-west-1c", "usw1-az3"),
             Zone("us-west-1-lax-1a", "usw1-lax1-az1", "opted-in")]
    assert choose_zones(zones, 2) == ["us-west-1b", "us-west-1c"]
    assert choose_zones(zones, 3) is None
    assert choose_zones([Zone("ca-central-1a", "cac1-az1"), Zone("ca-central-1b", "cac1-az3"), Zone("ca-central-1d", "cac1-az4")], 2) == \
        ["ca-central-1a", "ca-central-1d"]


def _config_with(stack: str, change: Callable[[dict], None]) -> dict:
    raw = copy.deepcopy(read_stack_config(stack))
    change(raw)
    return raw


def test_az_count_above_the_usable_zones_stops_with_one_line() -> None:
    import pulumi

    def six(raw: dict) -> None:
        raw["llm-platform:regions"][0]["az_count"] = 6  # us-east-1 has 6 regular zones, one of them use1-az3

    with pytest.raises(pulumi.RunError) as info:
        render("dev", config=_config_with("dev", six))
    message = str(info.value)
    assert "llm-platform:regions[0].az_count: got 6; allowed: at most 5" in message and "\n" not in message
    assert "us-east-1b" not in message and "us-east-1-bos-1a" not in message


def test_node_group_whose_types_no_chosen_zone_offers_stops_with_one_line() -> None:
    import pulumi

    def two_zones(raw: dict) -> None:
        raw["llm-platform:regions"][0]["az_count"] = 2  # us-east-1a, us-east-1c: neither offers p4d.24xlarge here

    with pytest.raises(pulumi.RunError) as info:
        render("prod", config=_config_with("prod", two_zones))
    message = str(info.value)
    assert "llm-platform:node_groups[" in message and "].instance_types: got ['p4d.24xlarge']" in message
    assert "(us-east-1a, us-east-1c)" in message and "\n" not in message


# --- critical path ---------------------------------------------------------------------------------------------------

POD_KINDS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
             "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob", "kubernetes:helm.sh/v3:Release")


def gpu_node_groups(r: Rendering) -> set[str]:
    return {ng.urn for ng in r.of_type("aws:eks/nodeGroup:NodeGroup") if "llm-platform/gpu" in (ng.inputs.get("labels") or {})}


def requests_gpus(res: object) -> bool:
    """A GPU workload: a pod template whose containers ask for `nvidia.com/gpu` (it may wait for GPU nodes)."""
    spec = (getattr(res, "inputs", {}).get("spec") or {}).get("template", {}).get("spec", {})
    return any("nvidia.com/gpu" in {**(c.get("resources") or {}).get("limits", {}), **(c.get("resources") or {}).get("requests", {})}
               for c in spec.get("containers") or [])


def has_volume_claims(res: object) -> bool:
    import json

    if getattr(res, "type") == "kubernetes:core/v1:PersistentVolumeClaim":
        return True
    text = json.dumps(getattr(res, "inputs"))
    return "volumeClaimTemplate" in text or '"persistentVolumeClaim"' in text


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_but_gpu_workloads_waits_for_a_gpu_node_group(rendered: Render, stack: str) -> None:
    """A p4d group without capacity used to hold every add-on and workload for up to an hour."""
    r = rendered(stack)
    gpu = gpu_node_groups(r)
    assert gpu, "every stack has GPU groups"
    checked = 0
    for res in r.resources:
        is_cluster_addon = res.type == "aws:eks/addon:Addon"
        is_k8s = res.type.startswith("kubernetes:") and not requests_gpus(res)
        if not (is_cluster_addon or is_k8s):
            continue
        checked += 1
        blocking = gpu & r.waits_for(res)
        assert not blocking, f"{res.type} {res.name} waits for GPU node group(s) {sorted(blocking)}"
    assert checked > 20


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_waits_for_the_addons_it_needs(rendered: Render, stack: str) -> None:
    """vpc-cni for everything (pods get no IP without it); coredns for whatever runs pods (Helm releases race
    it otherwise: the compute add-ons were created but nothing waited for them); EBS CSI for volume claims."""
    r = rendered(stack)
    addons = {(a.inputs["clusterName"], a.inputs["addonName"]): a.urn for a in r.of_type("aws:eks/addon:Addon")}
    by_urn = {x.urn: x for x in r.resources}
    cluster_of_provider: dict[str, str] = {}
    for p in r.of_type("pulumi:providers:kubernetes"):
        names = {cluster for (cluster, addon), urn in addons.items() if addon == "vpc-cni" and urn in r.waits_for(p)}
        assert len(names) == 1, f"{p.name} must wait for exactly its cluster's vpc-cni, got {names}"
        cluster_of_provider[p.urn] = names.pop()
    pods = claims = 0
    for res in r.resources:
        if not res.type.startswith("kubernetes:"):
            continue
        provider = (res.provider or "").rsplit("::", 1)[0]
        assert provider in cluster_of_provider, f"{res.name}: no explicit Kubernetes provider"
        cluster = cluster_of_provider[provider]
        waits = r.waits_for(res)
        needs = ["vpc-cni"]
        if res.type in POD_KINDS:
            needs.append("coredns")
            pods += 1
        if has_volume_claims(res):
            needs.append("aws-ebs-csi-driver")
            claims += 1
        for addon in needs:
            assert addons[(cluster, addon)] in waits, f"{res.type} {res.name} does not wait for {addon}"
        assert by_urn[provider].type == "pulumi:providers:kubernetes"
    assert pods >= 8 and claims >= 1, "the guard must have checked Helm releases and a volume claim"
