"""`Network` rendered alone under the mocks."""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws
import pytest

from components.network import Network, NetworkArgs, subnet_plan
from infra.render import Rendering, render_function


def render_network(**overrides: object) -> Rendering:
    def program() -> None:
        provider = aws.Provider("aws-eu-west-1", region="eu-west-1")
        args = NetworkArgs(cidr="10.5.0.0/16", azs=["eu-west-1a", "eu-west-1b", "eu-west-1c"], cluster_name="c1")
        for k, v in overrides.items():
            setattr(args, k, v)
        Network("net", args, opts=pulumi.ResourceOptions(provider=provider))

    return render_function(program)


def test_subnets_per_az_with_role_tags_and_no_public_ips() -> None:
    r = render_network()
    subnets = r.of_type("aws:ec2/subnet:Subnet")
    public = [s for s in subnets if s.inputs["tags"].get("kubernetes.io/role/elb") == "1"]
    private = [s for s in subnets if s.inputs["tags"].get("kubernetes.io/role/internal-elb") == "1"]
    assert len(public) == 3 and len(private) == 3
    assert {s.inputs["availabilityZone"] for s in private} == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}
    for s in subnets:
        assert s.inputs["tags"]["kubernetes.io/cluster/c1"] == "shared"
        assert s.inputs["mapPublicIpOnLaunch"] is False
        assert ipaddress.ip_network(s.inputs["cidrBlock"]).subnet_of(ipaddress.ip_network("10.5.0.0/16"))
    cidrs = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in subnets]
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    # the explicit provider is inherited from the component: everything lands in eu-west-1
    assert {r.region_of(s) for s in subnets} == {"eu-west-1"}


@pytest.mark.parametrize("mode,expected", [("per_az", 3), ("single", 1)])
def test_nat_layout(mode: str, expected: int) -> None:
    r = render_network(nat_gateways=mode)
    assert len(r.of_type("aws:ec2/natGateway:NatGateway")) == expected
    nat_routes = [x for x in r.of_type("aws:ec2/route:Route") if x.inputs.get("natGatewayId")]
    assert len(nat_routes) == 3  # every private route table egresses through a NAT
    assert len({x.inputs["natGatewayId"] for x in nat_routes}) == expected


def test_flow_logs_endpoints_and_closed_default_sg() -> None:
    r = render_network()
    flow = r.one("aws:ec2/flowLog:FlowLog")
    assert flow.inputs["trafficType"] == "ALL" and flow.inputs["logDestinationType"] == "cloud-watch-logs"
    assert r.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 90
    default_sg = r.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default_sg.inputs.get("ingress", []) == [] and default_sg.inputs.get("egress", []) == []
    services = sorted(e.inputs["serviceName"] for e in r.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"))
    assert services == ["com.amazonaws.eu-west-1.ecr.api", "com.amazonaws.eu-west-1.ecr.dkr",
                        "com.amazonaws.eu-west-1.s3", "com.amazonaws.eu-west-1.sts"]
    sg = r.one("aws:ec2/securityGroup:SecurityGroup")
    assert sg.inputs["description"]
    rule = r.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["cidrIpv4"] == "10.5.0.0/16" and rule.inputs["fromPort"] == 443 and rule.inputs["description"]


def test_endpoints_can_be_turned_off() -> None:
    r = render_network(interface_endpoints=[], s3_gateway_endpoint=False)
    assert r.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") == []


def test_subnet_plan_sizes() -> None:
    private, public = subnet_plan("10.0.0.0/16", 3)
    assert private == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    assert public == ["10.0.224.0/22", "10.0.228.0/22", "10.0.232.0/22"]
    private, public = subnet_plan("10.0.0.0/20", 6)
    assert len(private) == 6 and all(ipaddress.ip_network(p).prefixlen == 23 for p in private)


def test_vpc_cidr_error_states_the_subnet_sizes_the_plan_really_gives() -> None:
    """The /16-/20 rule's message must promise what `subnet_plan` delivers (it once said "/20-or-larger")."""
    import copy

    import yaml

    from infra.config import ConfigError, parse_platform_config
    from infra.render import STACKS_DIR

    data = yaml.safe_load((STACKS_DIR / "Pulumi.dev.yaml").read_text())["config"]
    raw = copy.deepcopy({k.split(":", 1)[1]: v for k, v in data.items() if k.startswith("llm-platform:")})
    raw["regions"][0]["vpc_cidr"] = "10.0.0.0/21"
    with pytest.raises(ConfigError) as info:
        parse_platform_config(raw, source="stacks/Pulumi.test.yaml")
    message = str(info.value)
    largest = ipaddress.ip_network(subnet_plan("10.0.0.0/16", 2)[0][0]).prefixlen
    smallest = ipaddress.ip_network(subnet_plan("10.0.0.0/20", 2)[0][0]).prefixlen
    assert "llm-platform:regions[0].vpc_cidr" in message and "10.0.0.0/21" in message
    assert f"/{largest} for a /16" in message and f"/{smallest} for a /20" in message
    assert "/20-or-larger" not in message


def test_flow_log_group_is_encrypted_with_a_key_that_admits_cloudwatch_logs() -> None:
    """Documented as encrypted, the group had no key (`flow_logs_kms_key_arn` was never passed)."""
    import json

    r = render_network()
    group = r.one("aws:cloudwatch/logGroup:LogGroup")
    key_arn = group.inputs.get("kmsKeyId")
    assert key_arn, "flow-log group must be encrypted"
    key = next(k for k in r.of_type("aws:kms/key:Key") if key_arn.endswith(f"key/{k.id}"))
    statements = json.loads(key.inputs["policy"])["Statement"]
    logs = [s for s in statements if s.get("Principal", {}).get("Service") == "logs.eu-west-1.amazonaws.com"]
    assert len(logs) == 1
    # Scoped by the encryption context CloudWatch Logs sends: only this account's log groups in this region.
    assert logs[0]["Condition"] == {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:log-group:*"}}
