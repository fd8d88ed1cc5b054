"""`NodeGroup` rendered alone under the mocks."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.node_group import NodeGroup, NodeGroupArgs
from infra.render import Rendering, render_function


def render_group(gpu_class: str | None, gpus: int, min_size: int = 0) -> Rendering:
    def program() -> None:
        provider = aws.Provider("aws-us-east-1", region="us-east-1")
        NodeGroup(
            "ng",
            NodeGroupArgs(
                cluster_name="llmp-test", subnet_ids=["subnet-a"], instance_types=["g5.xlarge"] if gpu_class else ["m6i.large"],
                min_size=min_size, desired_size=min_size, max_size=3, capacity_type="SPOT", disk_gib=200,
                ebs_kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/abc", security_group_ids=["sg-cluster"],
                gpu_class=gpu_class, gpus_per_node=gpus, vcpus_per_node=4, memory_mib_per_node=16384,
            ),
            opts=pulumi.ResourceOptions(provider=provider),
        )

    return render_function(program)


def test_launch_template_hardening() -> None:
    lt = render_group("a10g", 1).one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1,
                                     "instanceMetadataTags": "disabled"}
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3" and ebs["volumeSize"] == 200
    assert ebs["kmsKeyId"] == "arn:aws:kms:us-east-1:123456789012:key/abc"
    nic = lt["networkInterfaces"][0]
    assert nic["associatePublicIpAddress"] == "false" and nic["securityGroups"] == ["sg-cluster"]


def test_gpu_group_ami_label_taint_and_scale_from_zero_tags() -> None:
    r = render_group("a10g", 1)
    ng = r.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["amiType"] == "AL2023_x86_64_NVIDIA" and ng["capacityType"] == "SPOT"
    assert ng["scalingConfig"] == {"minSize": 0, "desiredSize": 0, "maxSize": 3}
    assert ng["labels"]["llm-platform/gpu"] == "a10g"
    assert ng["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert "remoteAccess" not in ng and "diskSize" not in ng
    asg_tags = {t.inputs["tag"]["key"]: t.inputs["tag"]["value"] for t in r.of_type("aws:autoscaling/tag:Tag")}
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert asg_tags[f"{prefix}/label/llm-platform/gpu"] == "a10g"
    assert asg_tags[f"{prefix}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert asg_tags[f"{prefix}/resources/nvidia.com/gpu"] == "1"
    assert all(t.inputs["autoscalingGroupName"].startswith("eks-") for t in r.of_type("aws:autoscaling/tag:Tag"))


def test_cpu_group_no_gpu_label_or_taint_and_minimal_node_role() -> None:
    r = render_group(None, 0, min_size=2)
    ng = r.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["amiType"] == "AL2023_x86_64_STANDARD"
    assert "llm-platform/gpu" not in ng.get("labels", {}) and not ng.get("taints")
    policies = sorted(a.inputs["policyArn"] for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"))
    assert policies == ["arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly", "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy"]
