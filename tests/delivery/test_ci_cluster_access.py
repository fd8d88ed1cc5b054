"""Issue 16 (4): previews reach the Kubernetes API of every cluster of their stack, read-only.

Before: no access entry for the preview role (every preview's Kubernetes half failed with "could not get server
version") and private endpoints no CI runner could reach (global: a runner in one VPC, two other private endpoints).
Now: each cluster has an AmazonEKSViewPolicy (cluster scope) entry for the reviewed-preview role the bootstrap
creates, and admits the CI runner's VPC (the home region's) on 443; in global the other regions are reached over the
VPC peering, both ways routed (a private-only endpoint's public DNS name resolves to its private IPs).
"""

from __future__ import annotations

from typing import Callable

import pytest

from bootstrap.config import BootstrapConfig
from infra.config import parse_platform_config
from infra.render import ACCOUNT_ID, Rendering, read_stack_config

STACKS = ["dev", "small", "prod", "global"]
VIEW_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"


def reviewed_preview_role_arn() -> str:
    prefix = BootstrapConfig.model_fields["name_prefix"].default
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{prefix}-ci-reviewed-preview"


@pytest.mark.parametrize("stack", STACKS)
def test_every_cluster_gives_the_preview_role_read_only_access(rendered: Callable[[str], Rendering], stack: str) -> None:
    r = rendered(stack)
    clusters = r.of_type("aws:eks/cluster:Cluster")
    assert clusters
    for cluster in clusters:
        region = r.region_of(cluster)
        name = cluster.inputs["name"]
        entries = [e for e in r.of_type("aws:eks/accessEntry:AccessEntry")
                   if e.inputs["clusterName"] == name and e.inputs["principalArn"] == reviewed_preview_role_arn()]
        assert len(entries) == 1 and entries[0].inputs["type"] == "STANDARD", (stack, region)
        (association,) = [a for a in r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
                          if a.inputs["clusterName"] == name and a.inputs["principalArn"] == reviewed_preview_role_arn()]
        assert association.inputs["policyArn"] == VIEW_POLICY
        assert association.inputs["accessScope"] == {"type": "cluster"}
        # The entry waits for its association's prerequisite (the entry) and nothing grants the role more.
        assert all(a.inputs["policyArn"] == VIEW_POLICY for a in r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
                   if a.inputs["principalArn"] == reviewed_preview_role_arn())


@pytest.mark.parametrize("stack", STACKS)
def test_every_cluster_api_is_reachable_from_the_ci_runner_vpc(rendered: Callable[[str], Rendering], stack: str) -> None:
    r = rendered(stack)
    cfg = parse_platform_config({k.split(":", 1)[1]: v for k, v in read_stack_config(stack).items() if k.startswith("llm-platform:")})
    home = cfg.regions[0]
    home_vpc = next(v for v in r.of_type("aws:ec2/vpc:Vpc") if r.region_of(v) == home.name)
    assert home_vpc.inputs["cidrBlock"] == home.vpc_cidr
    for cluster in r.of_type("aws:eks/cluster:Cluster"):
        region = r.region_of(cluster)
        # The cluster security group (EKS puts it on the API endpoint's ENIs): its id comes from this cluster.
        rules = [x for x in r.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                 if cluster.urn in x.property_dependencies.get("securityGroupId", [])
                 and x.inputs.get("cidrIpv4") == home.vpc_cidr
                 and x.inputs.get("fromPort") == 443 and x.inputs.get("toPort") == 443 and x.inputs.get("ipProtocol") == "tcp"]
        assert len(rules) == 1, (stack, region)
        assert r.region_of(rules[0]) == region
        if region == home.name:
            continue
        # Another region: the runner's VPC must be peered with it and routed both ways.
        vpc = next(v for v in r.of_type("aws:ec2/vpc:Vpc") if r.region_of(v) == region)
        peerings = [p for p in r.of_type("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")
                    if {p.inputs["vpcId"], p.inputs["peerVpcId"]} == {home_vpc.id, vpc.id}]
        assert len(peerings) == 1, (stack, region)
        to_peer = [x for x in r.of_type("aws:ec2/route:Route") if r.region_of(x) == home.name and x.inputs.get("destinationCidrBlock") == vpc.inputs["cidrBlock"]]
        back = [x for x in r.of_type("aws:ec2/route:Route") if r.region_of(x) == region and x.inputs.get("destinationCidrBlock") == home.vpc_cidr]
        assert to_peer and back, (stack, region)
