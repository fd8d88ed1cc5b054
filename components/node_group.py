"""`NodeGroup`: an EKS managed node group (CPU or GPU) on a hardened launch template.

IMDSv2 is required with a hop limit of 1, so pods cannot reach the node's credentials (they get AWS access through
IRSA / Pod Identity); the root volume is encrypted gp3; no public IP; the node role carries only what a node needs
(CNI and EBS permissions live in IRSA roles). GPU groups use the AL2023 NVIDIA AMI, are labelled
`llm-platform/gpu=<class>` and tainted `nvidia.com/gpu=true:NoSchedule`, and carry the cluster-autoscaler
node-template tags on their Auto Scaling group so the autoscaler can scale them up from zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.irsa import service_trust_policy
from components.labels import ACCELERATOR_LABEL, ACCELERATOR_TYPES, time_slices

GPU_LABEL = "llm-platform/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
)
AMI_TYPES = {"cpu": "AL2023_x86_64_STANDARD", "gpu": "AL2023_x86_64_NVIDIA"}


@dataclass
class NodeGroupArgs:
    cluster_name: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets only."""
    instance_types: Sequence[str]
    min_size: int
    desired_size: int
    max_size: int
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    disk_gib: int = 100
    ebs_kms_key_arn: pulumi.Input[str] | None = None
    """CMK for the root volume; its policy must let the Auto Scaling service-linked role use it. None = aws/ebs key."""
    security_group_ids: Sequence[pulumi.Input[str]] = ()
    """Security groups for the node ENI; pass the EKS cluster security group."""
    gpu_class: str | None = None
    """`a10g` / `a100` for a GPU group, None for CPU."""
    gpus_per_node: int = 0
    vcpus_per_node: int = 0
    memory_mib_per_node: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    name_prefix: str | None = None
    """Physical node group name prefix (the provider appends 26 characters); default `<name>-`."""


def autoscaler_template_tags(labels: Mapping[str, str], taints: Sequence[tuple[str, str, str]], args: NodeGroupArgs) -> dict[str, str]:
    """ASG tags the cluster-autoscaler reads to build a node template when the group has no node to look at."""
    prefix = "k8s.io/cluster-autoscaler/node-template"
    tags = {f"{prefix}/label/{k}": v for k, v in labels.items()}
    tags.update({f"{prefix}/taint/{key}": f"{value}:{effect}" for key, value, effect in taints})
    if args.gpus_per_node:
        # What the device plugin will advertise: every GPU once, or N times on a time-sliced group.
        tags[f"{prefix}/resources/nvidia.com/gpu"] = str(args.gpus_per_node * time_slices(labels))
    if args.vcpus_per_node:
        tags[f"{prefix}/resources/cpu"] = str(args.vcpus_per_node)
    if args.memory_mib_per_node:
        tags[f"{prefix}/resources/memory"] = f"{args.memory_mib_per_node}Mi"
    return tags


class NodeGroup(pulumi.ComponentResource):
    node_group: aws.eks.NodeGroup
    role: aws.iam.Role
    launch_template: aws.ec2.LaunchTemplate

    def __init__(self, name: str, args: NodeGroupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:eks:NodeGroup", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        is_gpu = args.gpu_class is not None

        self.role = aws.iam.Role(
            f"{name}-node",
            assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{i}", role=self.role.name, policy_arn=arn, opts=child)
            for i, arn in enumerate(NODE_POLICIES)
        ]

        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"llm-platform node group {name}: IMDSv2 only, encrypted root volume, no public IP",
            update_default_version=True,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="disabled",
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=args.disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        kms_key_id=args.ebs_kms_key_arn,
                        delete_on_termination="true",
                    ),
                )
            ],
            network_interfaces=[
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    device_index=0,
                    associate_public_ip_address="false",
                    delete_on_termination="true",
                    security_groups=list(args.security_group_ids),
                )
            ],
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=True),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags={**tags, "Name": name}),
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="volume", tags={**tags, "Name": name}),
            ],
            tags=tags,
            opts=child,
        )

        labels = dict(args.labels)
        taints: list[tuple[str, str, str]] = []
        if is_gpu:
            labels[GPU_LABEL] = str(args.gpu_class)
            labels[ACCELERATOR_LABEL] = ACCELERATOR_TYPES[str(args.gpu_class)]
            taints.append((GPU_TAINT_KEY, "true", "NoSchedule"))
        template_tags = autoscaler_template_tags(labels, taints, args)

        self.node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=args.cluster_name,
            node_group_name_prefix=args.name_prefix or f"{name}-",
            node_role_arn=self.role.arn,
            subnet_ids=list(args.subnet_ids),
            instance_types=list(args.instance_types),
            capacity_type=args.capacity_type,
            ami_type=AMI_TYPES["gpu" if is_gpu else "cpu"],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=args.min_size, desired_size=args.desired_size, max_size=args.max_size),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable_percentage=33),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=self.launch_template.id, version=self.launch_template.latest_version.apply(str)),
            labels=labels,
            taints=[aws.eks.NodeGroupTaintArgs(key=k, value=v, effect="NO_SCHEDULE") for k, v, _ in taints],
            tags={**tags, **template_tags},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=attachments,
                # The autoscaler owns the running size; Pulumi only sets the bounds.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

        # Node-group tags do not reach its Auto Scaling group, where the autoscaler looks: tag the ASG itself.
        asg_name = self.node_group.resources.apply(lambda rs: str(rs[0].autoscaling_groups[0].name))  # type: ignore[index]
        for key, value in sorted(template_tags.items()):
            suffix = key.removeprefix("k8s.io/cluster-autoscaler/node-template/").replace("/", "-").replace(".", "-")
            aws.autoscaling.Tag(
                f"{name}-asg-{suffix}",
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=child,
            )
        self.register_outputs({"node_group_name": self.node_group.node_group_name, "role_arn": self.role.arn})
