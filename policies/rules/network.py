"""VPC, subnets and security groups (POLICIES.md 10-14)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from policies.core import ADVISORY, MANDATORY, Res, Rule, Settings, Stack, as_list, number, truthy

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
STANDALONE_RULES = (SG_RULE, SG_INGRESS, SG_EGRESS)
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
WORLD = ("0.0.0.0/0", "::/0")
DEFAULT_DESCRIPTION = "Managed by Pulumi"


def _world_cidrs(entry: Any, *keys: str) -> list[str]:
    return [str(c) for k in keys for c in as_list(entry.get(k)) if str(c) in WORLD]


def _port_span(entry: Any, protocol_key: str) -> tuple[str, float, float]:
    return str(entry.get(protocol_key, "-1")), number(entry.get("fromPort")), number(entry.get("toPort"))


def _public_alb_sg(sg_urn: str, stack: Stack) -> bool:
    """Whether an internet-facing load balancer uses this security group."""
    return any(not truthy(lb.get("internal")) for lb in stack.of_type(LOAD_BALANCER) if sg_urn in lb.deps.get("securityGroups", ()))


def _open_entry_allowed(protocol: str, from_port: float, to_port: float, on_public_alb: bool, s: Settings) -> bool:
    return on_public_alb and protocol in ("tcp", "6") and from_port == to_port and int(from_port) in s["public_ports"]


def no_world_ingress(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if subject.type == SG:
        on_alb = _public_alb_sg(subject.urn, stack)
        for i, rule in enumerate(as_list(subject.get("ingress"))):
            cidrs = _world_cidrs(rule, "cidrBlocks", "ipv6CidrBlocks")
            proto, lo, hi = _port_span(rule, "protocol")
            if cidrs and not _open_entry_allowed(proto, lo, hi, on_alb, s):
                yield f"ingress[{i}] opens {proto} {lo:g}-{hi:g} to {cidrs}"
        return
    if subject.type == SG_RULE and str(subject.get("type")) != "ingress":
        return
    if subject.type == SG_RULE:
        cidrs = _world_cidrs(subject.props, "cidrBlocks", "ipv6CidrBlocks")
        proto, lo, hi = _port_span(subject.props, "protocol")
    else:
        cidrs = _world_cidrs(subject.props, "cidrIpv4", "cidrIpv6")
        proto, lo, hi = _port_span(subject.props, "ipProtocol")
    if not cidrs:
        return
    sg_urns = [u for u in subject.deps.get("securityGroupId", ()) if (g := stack.by_urn(u)) and g.type == SG]
    on_alb = any(_public_alb_sg(u, stack) for u in sg_urns)
    if not _open_entry_allowed(proto, lo, hi, on_alb, s):
        yield f"opens {proto} {lo:g}-{hi:g} to {cidrs}" + ("" if on_alb else " on a group that is not a public ALB's")


def descriptions(r: Res, s: Settings) -> Iterator[str]:
    if r.type == SG:
        if str(r.get("description", default=DEFAULT_DESCRIPTION)) == DEFAULT_DESCRIPTION:
            yield "security group has no description of its own"
        for direction in ("ingress", "egress"):
            for i, rule in enumerate(as_list(r.get(direction))):
                if not rule.get("description"):
                    yield f"{direction}[{i}] has no description"
    elif not r.get("description"):
        yield "security group rule has no description"


def no_mixed_rules(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    inline = [d for d in ("ingress", "egress") if as_list(subject.get(d))]
    standalone = stack.dependents(subject, STANDALONE_RULES, "securityGroupId")
    if inline and standalone:
        yield (f"has inline {'/'.join(inline)} rules and standalone rules {[r.name for r in standalone]}: "
               "the provider would overwrite one set with the other")


def flow_logs(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if not stack.dependents(subject, (FLOW_LOG,), "vpcId"):
        yield "has no aws.ec2.FlowLog"


def default_sg_closed(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    managed = stack.dependents(subject, (DEFAULT_SG,), "vpcId")
    if not managed:
        yield "default security group is not managed (aws.ec2.DefaultSecurityGroup): AWS leaves it open within itself"
    for group in managed:
        for direction in ("ingress", "egress"):
            if as_list(group.get(direction)):
                yield f"default security group {group.name} keeps {direction} rules"


def private_subnet_no_public_ip(r: Res, s: Settings) -> Iterator[str]:
    if not truthy(r.get("mapPublicIpOnLaunch")):
        return
    public = s["public_subnet_tag"] in r.get("tags", default={})
    if not public:
        yield "mapPublicIpOnLaunch is true on a private subnet"
    elif not s["allow_on_public_subnets"]:
        yield "mapPublicIpOnLaunch is true (policy config forbids it on public subnets too)"


RULES = [
    Rule(
        id="sg-no-public-ingress",
        controls=("FSBP EC2.18", "FSBP EC2.19", "CKV_AWS_24", "CKV_AWS_25", "CKV_AWS_260"),
        summary="No security group allows ingress from 0.0.0.0/0 or ::/0, except the public ALB's group on 443/80",
        remediation="Allow ingress from the ALB / cluster security group (sourceSecurityGroupId) or VPC CIDRs instead.",
        enforcement=MANDATORY, types=(SG, *STANDALONE_RULES[:2]), stack_checks=(no_world_ingress,), policies_md=(10,),
        config={"public_ports": {"type": "array", "items": {"type": "integer"}, "default": [80, 443]}},
    ),
    Rule(
        id="sg-descriptions",
        controls=("CKV_AWS_23",),
        summary="Every security group and every rule carries a description saying what it allows and why",
        remediation="Set description on the group and on each ingress/egress rule.",
        enforcement=ADVISORY, types=(SG, *STANDALONE_RULES), checks=(descriptions,), policies_md=(11,),
    ),
    Rule(
        id="sg-no-mixed-rules",
        controls=("AWSGuard ec2-security-group-no-inline-and-standalone-rules",),
        summary="A security group uses either inline rules or standalone rule resources, never both",
        remediation="Move the inline ingress/egress into aws.vpc.SecurityGroupIngressRule/EgressRule resources.",
        enforcement=MANDATORY, types=(SG,), stack_checks=(no_mixed_rules,), policies_md=(12,),
    ),
    Rule(
        id="vpc-flow-logs",
        controls=("FSBP EC2.6", "CKV2_AWS_11"),
        summary="Every VPC has flow logs",
        remediation="Add aws.ec2.FlowLog(vpc_id=vpc.id, traffic_type='ALL') to a CloudWatch log group or S3.",
        enforcement=MANDATORY, types=(VPC,), stack_checks=(flow_logs,), policies_md=(13,),
    ),
    Rule(
        id="vpc-default-sg-closed",
        controls=("FSBP EC2.2", "CKV2_AWS_12"),
        summary="Every VPC's default security group is managed and allows no traffic",
        remediation="Add aws.ec2.DefaultSecurityGroup(vpc_id=vpc.id) with no ingress and no egress.",
        enforcement=MANDATORY, types=(VPC,), stack_checks=(default_sg_closed,), policies_md=(14,),
    ),
    Rule(
        id="subnet-private-no-public-ip",
        controls=("FSBP EC2.15",),
        summary="Private subnets do not assign public IPs on launch",
        remediation="Set mapPublicIpOnLaunch=false on private subnets (public subnets are tagged kubernetes.io/role/elb).",
        enforcement=MANDATORY, types=(SUBNET,), checks=(private_subnet_no_public_ip,), policies_md=(14,),
        config={"public_subnet_tag": {"type": "string", "default": "kubernetes.io/role/elb"},
                "allow_on_public_subnets": {"type": "boolean", "default": True}},
    ),
]
