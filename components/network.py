"""`Network`: the VPC every other building block lives in.

Per AZ one public subnet (ALB, NAT) and one private subnet (nodes, pods, data stores), tagged for the AWS Load
Balancer Controller; NAT per AZ or a single one; VPC flow logs; an S3 gateway endpoint and interface endpoints so
image pulls and token exchanges stay inside the VPC; the default security group stripped of every rule.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Literal, Sequence

import pulumi
import pulumi_aws as aws

from components.irsa import service_trust_policy
from components.kms import EncryptionKey, EncryptionKeyArgs


@dataclass
class NetworkArgs:
    cidr: str
    """VPC IPv4 CIDR (/16 to /20). Private subnets get 1/8 of it each, public subnets 1/64."""
    azs: Sequence[str]
    """Availability zones to use, in order (2 to 6)."""
    cluster_name: str
    """EKS cluster name, for the `kubernetes.io/cluster/<name>` subnet tags."""
    nat_gateways: Literal["single", "per_az"] = "per_az"
    """`single` saves cost; `per_az` keeps egress working when one AZ fails."""
    interface_endpoints: Sequence[str] = ("ecr.api", "ecr.dkr", "sts")
    """AWS services reached through PrivateLink (service suffixes as in `com.amazonaws.<region>.<suffix>`)."""
    s3_gateway_endpoint: bool = True
    """Free S3 gateway endpoint (ECR layers and model weights come from S3)."""
    flow_logs_retention_days: int = 90
    flow_logs_kms_key_arn: pulumi.Input[str] | None = None
    """KMS key for the flow-log group; its policy must allow `logs.<region>.amazonaws.com`. None: the network
    creates its own key (CloudWatch Logs admitted only for this account's log groups, by encryption context)."""
    tags: dict[str, str] = field(default_factory=dict)


def subnet_plan(cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """(private, public) subnet CIDRs: private = the first `az_count` eighths, public = sixty-fourths of the last eighth."""
    vpc = ipaddress.IPv4Network(cidr)
    eighths = list(vpc.subnets(prefixlen_diff=3))
    if az_count > 7:
        raise ValueError(f"az_count {az_count} does not fit the subnet plan (max 6)")
    private = [str(n) for n in eighths[:az_count]]
    public = [str(n) for n in list(eighths[7].subnets(prefixlen_diff=3))[:az_count]]
    return private, public


def _service_name(region: pulumi.Output[str], service: str) -> pulumi.Output[str]:
    return region.apply(lambda r: f"com.amazonaws.{r}.{service}")


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    vpc_cidr: str
    azs: list[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    private_route_table_ids: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
        tags = dict(args.tags)
        cluster_tag = f"kubernetes.io/cluster/{args.cluster_name}"
        azs = list(args.azs)
        private_cidrs, public_cidrs = subnet_plan(args.cidr, len(azs))

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": f"{name}-vpc"},
            opts=child,
        )
        # Take over the default security group and leave it with no rules: nothing may use it by accident.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], tags={**tags, "Name": f"{name}-default-closed"}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-igw"}, opts=child)

        public_rt = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-public"}, opts=child)
        aws.ec2.Route(f"{name}-public-default", route_table_id=public_rt.id, destination_cidr_block="0.0.0.0/0", gateway_id=igw.id, opts=child)

        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for i, az in enumerate(azs):
            pub = aws.ec2.Subnet(
                f"{name}-public-{az}",
                vpc_id=vpc.id,
                cidr_block=public_cidrs[i],
                availability_zone=az,
                map_public_ip_on_launch=False,  # only the ALB and NAT live here, and they get their own addresses
                tags={**tags, "Name": f"{name}-public-{az}", "kubernetes.io/role/elb": "1", cluster_tag: "shared", "llm-platform/tier": "public"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{az}", subnet_id=pub.id, route_table_id=public_rt.id, opts=child)
            public_subnets.append(pub)
            priv = aws.ec2.Subnet(
                f"{name}-private-{az}",
                vpc_id=vpc.id,
                cidr_block=private_cidrs[i],
                availability_zone=az,
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-private-{az}", "kubernetes.io/role/internal-elb": "1", cluster_tag: "shared", "llm-platform/tier": "private"},
                opts=child,
            )
            private_subnets.append(priv)

        nat_count = len(azs) if args.nat_gateways == "per_az" else 1
        nats: list[aws.ec2.NatGateway] = []
        for i in range(nat_count):
            az = azs[i]
            eip = aws.ec2.Eip(f"{name}-nat-{az}", domain="vpc", tags={**tags, "Name": f"{name}-nat-{az}"}, opts=child)
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{az}",
                    allocation_id=eip.id,
                    subnet_id=public_subnets[i].id,
                    tags={**tags, "Name": f"{name}-nat-{az}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )

        private_rts: list[aws.ec2.RouteTable] = []
        for i, az in enumerate(azs):
            rt = aws.ec2.RouteTable(f"{name}-private-rt-{az}", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-private-{az}"}, opts=child)
            nat = nats[i] if args.nat_gateways == "per_az" else nats[0]
            aws.ec2.Route(f"{name}-private-default-{az}", route_table_id=rt.id, destination_cidr_block="0.0.0.0/0", nat_gateway_id=nat.id, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{az}", subnet_id=private_subnets[i].id, route_table_id=rt.id, opts=child)
            private_rts.append(rt)

        # Flow logs (FSBP EC2.6): every accepted and rejected flow, to an encrypted log group with retention.
        flow_logs_key_arn = args.flow_logs_kms_key_arn
        if flow_logs_key_arn is None:
            flow_logs_key_arn = EncryptionKey(
                f"{name}-flow-logs",
                EncryptionKeyArgs(
                    description=f"VPC {name} flow-log group",
                    service_principals=[region.apply(lambda r: f"logs.{r}.amazonaws.com")],
                    tags=tags,
                ),
                opts=child,
            ).arn
        flow_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/llm-platform/{name}/vpc-flow-logs",
            retention_in_days=args.flow_logs_retention_days,
            kms_key_id=flow_logs_key_arn,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),  # fixed name
        )
        flow_role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=service_trust_policy("vpc-flow-logs.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=flow_role.id,
            policy=flow_group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                                "Resource": [arn, f"{arn}:*"],
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_group.arn,
            iam_role_arn=flow_role.arn,
            max_aggregation_interval=60,
            tags=tags,
            opts=child,
        )

        if args.s3_gateway_endpoint:
            aws.ec2.VpcEndpoint(
                f"{name}-s3",
                vpc_id=vpc.id,
                service_name=region.apply(lambda r: f"com.amazonaws.{r}.s3"),
                vpc_endpoint_type="Gateway",
                route_table_ids=[rt.id for rt in private_rts],
                tags={**tags, "Name": f"{name}-s3"},
                opts=child,
            )
        if args.interface_endpoints:
            endpoint_sg = aws.ec2.SecurityGroup(
                f"{name}-endpoints",
                vpc_id=vpc.id,
                description="Interface VPC endpoints: HTTPS from inside the VPC only",
                tags={**tags, "Name": f"{name}-endpoints"},
                opts=child,
            )
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-endpoints-https",
                security_group_id=endpoint_sg.id,
                description="HTTPS to AWS APIs from the VPC",
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4=args.cidr,
                opts=child,
            )
            for service in args.interface_endpoints:
                aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}",
                    vpc_id=vpc.id,
                    service_name=_service_name(region, service),
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=[s.id for s in private_subnets],
                    security_group_ids=[endpoint_sg.id],
                    tags={**tags, "Name": f"{name}-{service}"},
                    opts=child,
                )

        self.vpc_id = vpc.id
        self.vpc_cidr = args.cidr
        self.azs = azs
        self.private_subnet_ids = [s.id for s in private_subnets]
        self.public_subnet_ids = [s.id for s in public_subnets]
        self.private_route_table_ids = [rt.id for rt in private_rts]
        self.register_outputs(
            {"vpc_id": self.vpc_id, "private_subnet_ids": self.private_subnet_ids, "public_subnet_ids": self.public_subnet_ids}
        )
