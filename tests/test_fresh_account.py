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
        assert narrowed, "the A100 group must have been narrowed to the zones offering its p4d/p4de type"


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
        raw["llm-platform:regions"][0]["az_count"] = 2  # us-east-1a, us-east-1c: neither offers prod's p4de.24xlarge here

    with pytest.raises(pulumi.RunError) as info:
        render("prod", config=_config_with("prod", two_zones))
    message = str(info.value)
    assert "llm-platform:node_groups[" in message and "].instance_types: got ['p4de.24xlarge']" in message
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


@pytest.mark.parametrize("stack", STACKS)
def test_node_groups_wait_for_the_network_addons(rendered: Render, stack: str) -> None:
    """Nodes join only once vpc-cni and kube-proxy run (the cluster skips the self-managed defaults). The NodeGroup
    component was given them as its own depends_on, which never reached the node group inside it."""
    r = rendered(stack)
    addons = {(a.inputs["clusterName"], a.inputs["addonName"]): a.urn for a in r.of_type("aws:eks/addon:Addon")}
    clusters = {c.id: c.inputs["name"] for c in r.of_type("aws:eks/cluster:Cluster")}
    for ng in r.of_type("aws:eks/nodeGroup:NodeGroup"):
        cluster = clusters.get(ng.inputs["clusterName"], ng.inputs["clusterName"])
        for addon in ("vpc-cni", "kube-proxy"):
            assert addons[(cluster, addon)] in r.waits_for(ng), f"{ng.name} does not wait for {addon}"


# --- service-linked roles ------------------------------------------------------------------------------------------

from infra.preconditions import ALL_ROLES, AUTOSCALING, required_service_linked_roles, slr_path, unclassified_types  # noqa: E402


@pytest.mark.parametrize("stack", STACKS)
def test_every_aws_type_is_classified_for_service_linked_roles(rendered: Render, stack: str) -> None:
    """A new resource type must say which service-linked roles it needs (or none), or this fails."""
    assert unclassified_types(rendered(stack)) == []


@pytest.mark.parametrize("role", ALL_ROLES, ids=[r.name for r in ALL_ROLES])
def test_each_service_linked_role_is_created_first_or_created_by_its_service(rendered: Render, role: object) -> None:
    """Per precondition, in a fresh account: a role that must exist before first use is created by the program and
    everything that names or uses it waits for it; any other role is created by its service on first use."""
    used = False
    for stack in STACKS:
        r = rendered(stack)
        need = required_service_linked_roles(r).get(role.name)  # type: ignore[attr-defined]
        if need is None:
            continue
        used = True
        created = [x for x in r.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
                   if x.inputs["awsServiceName"] == role.service]  # type: ignore[attr-defined]
        if not need.must_exist_first:
            assert role.created_on_first_use and role.source.startswith("https://docs.aws.amazon.com/")  # type: ignore[attr-defined]
            assert created == [], f"{stack}: {role.name} is the service's to create"  # type: ignore[attr-defined]
            continue
        assert len(created) == 1, f"{stack}: {role.name} must be created once per account before it is used"  # type: ignore[attr-defined]
        waiters = need.referenced_by or [u for u in need.used_by
                                         if r.by_urn(u).type == "aws:eks/nodeGroup:NodeGroup"]
        assert waiters
        for urn in waiters:
            assert created[0].urn in r.waits_for(r.by_urn(urn)), f"{stack}: {urn} does not wait for {role.name}"  # type: ignore[attr-defined]
    assert used, "a role in the table that no stack needs"


def test_ebs_key_names_the_autoscaling_role_only_through_the_role() -> None:
    """MalformedPolicyDocumentException in a fresh account: the key's policy named a role that did not exist yet."""
    import json

    r = render("small")
    key = next(k for k in r.of_type("aws:kms/key:Key") if k.name.endswith("-ebs-key"))
    slr = r.one("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert slr.inputs["awsServiceName"] == "autoscaling.amazonaws.com"
    assert slr.urn in key.property_dependencies["policy"]
    grant = next(s for s in json.loads(key.inputs["policy"])["Statement"] if s["Sid"] == "ServiceLinkedRolesGrant")
    assert grant["Principal"]["AWS"] == [f"arn:aws:iam::123456789012:role/{slr_path(AUTOSCALING)}"]


def test_existing_roles_are_read_never_declared_again_even_our_own() -> None:
    """A role this stack created survives `destroy` (retain_on_delete) with its tag: declaring it again on the next
    `up` would fail ("has been taken in this account"), so every existing role is only read."""
    from infra.render import MockAccount

    autoscaling = "aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    spot = "aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
    # Created long ago by someone else (untagged), and one this stack created on its first run.
    r = render("dev", account=MockAccount(roles={autoscaling: {}, spot: {"llm-platform/created-by-stack": "llm-platform/dev"}}))
    declared = {x.inputs["awsServiceName"]: x for x in r.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")}
    assert declared == {}
    key = next(k for k in r.of_type("aws:kms/key:Key") if k.name.endswith("-ebs-key"))
    assert f"arn:aws:iam::123456789012:role/{autoscaling}" in key.inputs["policy"]
