"""The security group of a data store (Redis, PostgreSQL, a Global Datastore member): one TCP port, open only to the
given security groups (its EKS cluster) and, across inter-region peering, to the other regions' VPC CIDRs."""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_aws as aws


def data_store_security_group(
    name: str,
    *,
    vpc_id: pulumi.Input[str],
    port: int,
    description: str,
    name_tag: str,
    allowed_security_group_ids: Sequence[pulumi.Input[str]],
    cluster_rule_description: str,
    peer_protocol: str,
    allowed_cidrs: Sequence[str] = (),
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.ec2.SecurityGroup:
    """`<name>-sg` with ingress rules `<name>-from-cluster-<i>` and `<name>-from-peer-<i>`, all with `opts`.

    No egress rule: a data store never opens connections, and the provider removes AWS's default allow-all.
    `peer_protocol` names what the peers speak (`Redis (TLS, AUTH)`) in the peer rules' descriptions.
    """
    security_group = aws.ec2.SecurityGroup(
        f"{name}-sg",
        vpc_id=vpc_id,
        description=description,
        tags={**tags, "Name": name_tag},
        opts=opts,
    )
    for index, source_sg in enumerate(allowed_security_group_ids):
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-cluster-{index}",
            security_group_id=security_group.id,
            description=cluster_rule_description,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            referenced_security_group_id=source_sg,
            tags=tags,
            opts=opts,
        )
    for index, cidr in enumerate(allowed_cidrs):
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-peer-{index}",
            security_group_id=security_group.id,
            description=f"{peer_protocol} from {cidr} over inter-region peering (writes after a promotion)",
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            cidr_ipv4=cidr,
            tags=tags,
            opts=opts,
        )
    return security_group
