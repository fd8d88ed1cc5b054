"""The architecture diagram: valid SVG (parsed as XML) and a valid PNG for every stack, showing what was rendered."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pytest
from PIL import Image

from infra.cli import main as cli_main
from infra.diagram import build_boxes, layout, write_diagram
from infra.render import Rendering, known_stacks, render_function

SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    return [t.text or "" for t in root.iter(f"{SVG_NS}text")]


def assert_valid_png(path: Path, svg_path: Path) -> None:
    with Image.open(path) as image:
        image.verify()  # checks the PNG structure and CRCs
    with Image.open(path) as image:
        assert image.format == "PNG"
        root = ET.parse(svg_path).getroot()
        width, height = int(root.get("width", "0")), int(root.get("height", "0"))
        assert image.size == (width * 2, height * 2)
        # Not a blank canvas: boxes and text put many colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20


@pytest.mark.parametrize("stack", known_stacks())
def test_every_stack_gets_a_valid_svg_and_png(stack: str, rendered: Callable[[str], Rendering], tmp_path: Path) -> None:
    rendering = rendered(stack)
    svg_path, png_path = write_diagram(rendering, tmp_path, "cost line")
    texts = svg_texts(svg_path)
    assert_valid_png(png_path, svg_path)
    joined = "\n".join(texts)
    for node_group in rendering.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert ", ".join(node_group.inputs["instanceTypes"]) in joined
        scaling = node_group.inputs["scalingConfig"]
        assert f"min {int(scaling['minSize'])} / desired {int(scaling['desiredSize'])} / max {int(scaling['maxSize'])}" in joined
    for vpc in rendering.of_type("aws:ec2/vpc:Vpc"):
        assert f"VPC {vpc.inputs['cidrBlock']}" in texts
    for subnet in rendering.of_type("aws:ec2/subnet:Subnet"):
        assert subnet.inputs["availabilityZone"] in texts
        assert subnet.inputs["cidrBlock"] in joined
    for cluster in rendering.of_type("aws:eks/cluster:Cluster"):
        assert f"EKS {cluster.inputs['name']} · Kubernetes {cluster.inputs['version']}" in texts
    regions = {r.inputs["region"] for r in rendering.of_type("pulumi:providers:aws")}
    assert sum(1 for t in texts if t.startswith("Region ")) == len(regions)


def full_platform() -> None:
    """Two regions with edge, data and workloads, built from raw resources (independent of the components)."""
    for region in ("us-east-1", "eu-west-1"):
        provider = aws.Provider(f"aws-{region}", region=region)
        opts = pulumi.ResourceOptions(provider=provider)
        vpc = aws.ec2.Vpc(f"vpc-{region}", cidr_block="10.20.0.0/16" if region == "us-east-1" else "10.30.0.0/16", opts=opts)
        public = aws.ec2.Subnet(f"public-{region}a", vpc_id=vpc.id, cidr_block="10.20.224.0/22", availability_zone=f"{region}a",
                                tags={"kubernetes.io/role/elb": "1"}, opts=opts)
        aws.ec2.Subnet(f"private-{region}a", vpc_id=vpc.id, cidr_block="10.20.0.0/19", availability_zone=f"{region}a",
                       tags={"kubernetes.io/role/internal-elb": "1"}, opts=opts)
        aws.ec2.NatGateway(f"nat-{region}", subnet_id=public.id, allocation_id="eipalloc-1", opts=opts)
        aws.eks.Cluster(f"cluster-{region}", name=f"llmp-{region}", version="1.33", role_arn="arn:aws:iam::123456789012:role/c",
                        vpc_config=aws.eks.ClusterVpcConfigArgs(subnet_ids=["s"], endpoint_private_access=True, endpoint_public_access=False),
                        opts=opts)
        aws.eks.NodeGroup(f"gpu-{region}", cluster_name=f"llmp-{region}", node_role_arn="arn:aws:iam::123456789012:role/n",
                          subnet_ids=["s"], instance_types=["p4d.24xlarge"], labels={"llm-platform/node-group": "gpu-a100", "llm-platform/gpu": "a100"},
                          scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=1, desired_size=1, max_size=2), opts=opts)
        aws.elasticache.ReplicationGroup(f"redis-{region}", description="d", node_type="cache.r7g.large", engine="valkey", engine_version="8.0",
                                         num_cache_clusters=3, automatic_failover_enabled=True, transit_encryption_enabled=True, opts=opts)
        aws.rds.Instance(f"pg-{region}", engine="postgres", engine_version="16.4", instance_class="db.r6g.large", allocated_storage=100,
                         multi_az=True, storage_encrypted=True, deletion_protection=True, opts=opts)
        aws.lb.LoadBalancer(f"alb-{region}", load_balancer_type="application", subnets=["a", "b", "c"], opts=opts)
        aws.wafv2.WebAcl(f"waf-{region}", scope="REGIONAL", default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
                         visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(cloudwatch_metrics_enabled=True, metric_name="w", sampled_requests_enabled=True),
                         opts=opts)
        aws.s3.BucketV2(f"models-{region}", bucket=f"llmp-models-{region}", opts=opts)
    k8s_provider = k8s.Provider("k8s-us-east-1", kubeconfig="{}")
    k8s.apps.v1.Deployment(
        "gateway",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="gateway", namespace="llm-gateway"),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=3, selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app": "gateway"}),
            template=k8s.core.v1.PodTemplateSpecArgs(metadata=k8s.meta.v1.ObjectMetaArgs(labels={"app": "gateway"}),
                                                     spec=k8s.core.v1.PodSpecArgs(containers=[k8s.core.v1.ContainerArgs(name="g", image="g:1")]))),
        opts=pulumi.ResourceOptions(provider=k8s_provider),
    )
    pulumi.export("region", "us-east-1")  # the program exports its home region; the diagram puts it first
    aws.route53.Record("api", zone_id="Z1", name="api.example.com", type="A", set_identifier="us-east-1",
                       latency_routing_policies=[aws.route53.RecordLatencyRoutingPolicyArgs(region="us-east-1")],
                       aliases=[aws.route53.RecordAliasArgs(name="alb", zone_id="Z2", evaluate_target_health=True)])


def test_diagram_shows_regions_edge_data_workloads_and_dns(tmp_path: Path) -> None:
    rendering = render_function(full_platform, stack="full")
    svg_path, png_path = write_diagram(rendering, tmp_path)
    texts = svg_texts(svg_path)
    assert_valid_png(png_path, svg_path)
    joined = "\n".join(texts)
    assert "Region us-east-1 (home)" in texts and "Region eu-west-1" in texts
    assert texts.count("Application Load Balancer") == 2 and texts.count("WAF web ACL") == 2
    assert texts.count("ElastiCache Valkey 8.0") == 2 and "cache.r7g.large · 3 node(s)" in joined
    assert "Multi-AZ failover · TLS" in joined
    assert texts.count("RDS PostgreSQL 16.4") == 2 and "db.r6g.large · primary · Multi-AZ" in joined
    assert "gpu-a100 · GPU A100" in texts and "8× A100 40 GiB, 96 vCPU, 1152 GiB per node" in joined
    assert "namespace llm-gateway" in texts and "gateway ×3" in texts
    assert "Route 53" in texts and "routing: latency" in joined
    assert "public  10.20.224.0/22  + NAT" in joined
    assert "S3 llmp-models-eu-west-1" in joined


def test_layout_keeps_every_child_inside_its_parent() -> None:
    root, arrows = build_boxes(render_function(full_platform, stack="full"))
    layout(root)
    for box in root.walk():
        for child in box.children:
            assert box.x <= child.x and child.x + child.w <= box.x + box.w + 0.01, (box.key, child.key)
            assert box.y <= child.y and child.y + child.h <= box.y + box.h + 0.01, (box.key, child.key)
        for a, b in zip(box.children, box.children[1:]):  # siblings never overlap
            assert (a.x + a.w <= b.x) if box.direction == "row" else (a.y + a.h <= b.y), (a.key, b.key)
    keys = {b.key for b in root.walk()}
    assert arrows and all(a.source in keys and a.target in keys for a in arrows)


def test_cli_diagram_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["diagram", "dev", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'dev-architecture.svg'}" in out
    texts = svg_texts(tmp_path / "dev-architecture.svg")
    assert any("/month at desired size" in t for t in texts)  # the cost summary is in the heading
    assert_valid_png(tmp_path / "dev-architecture.png", tmp_path / "dev-architecture.svg")
