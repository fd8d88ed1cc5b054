"""Every tier renders through the real program under mocks, with what matters per tier."""

from __future__ import annotations

import json
from typing import Callable

import pytest

from infra.render import Rendering

Render = Callable[[str], Rendering]
STACKS = ["dev", "small", "prod", "global"]
EXPECTED_REGIONS = {"global": ["us-east-1", "eu-west-1", "ap-northeast-1"]}


def node_groups(r: Rendering) -> dict[str, dict]:
    """Single-region stacks: node groups by config name (prefix `llmp-<stack>-<name>-`)."""
    return {ng.inputs["nodeGroupNamePrefix"].rstrip("-").split("-", 2)[-1]: ng.inputs for ng in r.of_type("aws:eks/nodeGroup:NodeGroup")}


@pytest.mark.parametrize("stack", STACKS)
def test_stack_renders_with_hardened_basics(rendered: Render, stack: str) -> None:
    r = rendered(stack)
    regions = EXPECTED_REGIONS.get(stack, ["us-east-1"])
    clusters = r.of_type("aws:eks/cluster:Cluster")
    assert sorted(r.region_of(c) or "" for c in clusters) == sorted(regions)
    for c in clusters:
        cluster = c.inputs
        assert cluster["encryptionConfig"]["resources"] == ["secrets"]
        assert cluster["vpcConfig"]["endpointPrivateAccess"] is True and cluster["vpcConfig"]["endpointPublicAccess"] is False
        assert len(cluster["enabledClusterLogTypes"]) == 5 and "audit" in cluster["enabledClusterLogTypes"]
    for lt in r.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        assert lt.inputs["metadataOptions"]["httpTokens"] == "required"
        assert lt.inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert lt.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    private_ids = {s.id for s in r.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"].get("llm-platform/tier") == "private"}
    for ng in r.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert set(ng.inputs["subnetIds"]) <= private_ids  # nodes only in private subnets
        assert len(ng.inputs["subnetIds"]) == 2 if stack == "dev" else 3
    for g in node_groups(r).values():
        if g["amiType"] == "AL2023_x86_64_NVIDIA":
            assert g["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
            assert g["labels"]["llm-platform/gpu"] in ("a10g", "a100")
    assert "kubeconfig" in r.secret_outputs
    # every AWS resource goes through an explicit regional provider
    for res in r.resources:
        if res.custom and res.type.startswith("aws:"):
            assert r.region_of(res) in regions, res.urn


def test_dev_two_azs_single_nat_spot_a10g_scaling_to_zero(rendered: Render) -> None:
    r = rendered("dev")
    assert len(r.of_type("aws:ec2/natGateway:NatGateway")) == 1
    azs = {s.inputs["availabilityZone"] for s in r.of_type("aws:ec2/subnet:Subnet")}
    assert azs == {"us-east-1a", "us-east-1b"}
    gpu = node_groups(r)["gpu-a10g"]
    assert gpu["capacityType"] == "SPOT" and gpu["scalingConfig"]["minSize"] == 0
    assert all(t.startswith("g5.") for t in gpu["instanceTypes"])
    tags = {(t.inputs["tag"]["key"], t.inputs["tag"]["value"]) for t in r.of_type("aws:autoscaling/tag:Tag")}
    assert ("k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu", "1") in tags
    assert ("k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu", "true:NoSchedule") in tags


def test_prod_three_azs_nat_per_az_a10g_and_a100(rendered: Render) -> None:
    r = rendered("prod")
    assert len(r.of_type("aws:ec2/natGateway:NatGateway")) == 3
    groups = node_groups(r)
    assert groups["gpu-a10g"]["instanceTypes"] == ["g5.2xlarge"] and groups["gpu-a10g"]["labels"]["llm-platform/gpu"] == "a10g"
    # 80 GiB A100s: chat-70b fits at 4 GPUs per replica (tests/test_fit.py)
    assert groups["gpu-a100"]["instanceTypes"] == ["p4de.24xlarge"] and groups["gpu-a100"]["labels"]["llm-platform/gpu"] == "a100"
    assert groups["gpu-a100"]["capacityType"] == "ON_DEMAND"
    tags = {(t.inputs["tag"]["key"], t.inputs["tag"]["value"]) for t in r.of_type("aws:autoscaling/tag:Tag") if "a100" in t.name}
    assert ("k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu", "8") in tags


def test_small_three_azs_on_demand_gpu(rendered: Render) -> None:
    r = rendered("small")
    assert len({s.inputs["availabilityZone"] for s in r.of_type("aws:ec2/subnet:Subnet")}) == 3
    assert node_groups(r)["gpu-a10g"]["capacityType"] == "ON_DEMAND"


def test_plan_json_has_no_plaintext_secret(rendered: Render) -> None:
    from infra.cli import plan_document

    for stack in STACKS:
        r = rendered(stack)
        text = json.dumps(plan_document(r), default=str)
        kubeconfig = r.outputs["kubeconfig"]
        assert kubeconfig not in text and "get-token" not in text  # the kubeconfig only ever appears as [secret]
        for secret in r.generated_secrets:
            assert secret not in text


# AWS name limits for resources whose physical name Pulumi derives from the logical name (+ "-" and 7 characters).
NAME_LIMITS = {
    "aws:elasticache/replicationGroup:ReplicationGroup": ("replicationGroupId", 40),
    "aws:lb/loadBalancer:LoadBalancer": ("name", 32),
    "aws:lb/targetGroup:TargetGroup": ("name", 32),
    "aws:s3/bucket:Bucket": ("bucket", 63),
    "aws:iam/role:Role": ("name", 64),
    "aws:iam/policy:Policy": ("name", 128),
    "aws:rds/instance:Instance": ("identifier", 63),
    "aws:eks/cluster:Cluster": ("name", 100),
}


@pytest.mark.parametrize("stack", STACKS)
def test_every_physical_name_fits_its_aws_limit(rendered: Render, stack: str) -> None:
    r = rendered(stack)
    too_long = []
    for typ, (field, limit) in NAME_LIMITS.items():
        for x in r.of_type(typ):
            given = x.inputs.get(field)
            length = len(given) if isinstance(given, str) else len(x.name) + 8
            if length > limit:
                too_long.append(f"{x.name}: {field} would be {length} > {limit}")
    assert not too_long
