"""Fresh-account preconditions: the service-linked roles a stack relies on, derived from what it renders.

A service-linked role (SLR) is an account-wide IAM role that an AWS service assumes. Most services create theirs on
first use, when the caller may `iam:CreateServiceLinkedRole` (the bootstrap's deploy role may). Two cannot wait:

- a policy that names an SLR as principal fails while the role does not exist (KMS: MalformedPolicyDocumentException).
  The EBS key names `AWSServiceRoleForAutoScaling`, which appears only with the account's first Auto Scaling group;
- `AWSServiceRoleForEC2Spot`: EC2 creates it for Spot requests made in the console only ("If you use the AWS CLI or
  an API to request a Spot Instance, you must first make sure that this role exists", EC2 User Guide, "Service-linked
  role for Spot Instance requests").

The program (`infra/program.py`, `ensure_service_linked_role`) creates those two where missing and makes their users
wait for them; preflight (`infra/preflight.py`) reports every SLR of the stack. `required_service_linked_roles` reads
them off a rendering, so a new resource type is classified here or the guard (tests/test_fresh_account.py) fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from infra.render import RenderedResource, Rendering


@dataclass(frozen=True)
class ServiceLinkedRole:
    name: str
    service: str
    """`aws iam create-service-linked-role --aws-service-name <service>`."""
    created_on_first_use: bool
    """True: the service creates it when first used (needs `iam:CreateServiceLinkedRole`); False: it must exist first."""
    source: str


EKS = ServiceLinkedRole("AWSServiceRoleForAmazonEKS", "eks.amazonaws.com", True,
                        "https://docs.aws.amazon.com/eks/latest/userguide/using-service-linked-roles-eks.html")
EKS_NODEGROUP = ServiceLinkedRole("AWSServiceRoleForAmazonEKSNodegroup", "eks-nodegroup.amazonaws.com", True,
                                  "https://docs.aws.amazon.com/eks/latest/userguide/using-service-linked-roles-eks-nodegroups.html")
AUTOSCALING = ServiceLinkedRole("AWSServiceRoleForAutoScaling", "autoscaling.amazonaws.com", True,
                                "https://docs.aws.amazon.com/autoscaling/ec2/userguide/autoscaling-service-linked-role.html")
EC2_SPOT = ServiceLinkedRole("AWSServiceRoleForEC2Spot", "spot.amazonaws.com", False,
                             "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/service-linked-roles-spot-instance-requests.html")
ELB = ServiceLinkedRole("AWSServiceRoleForElasticLoadBalancing", "elasticloadbalancing.amazonaws.com", True,
                        "https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/elb-service-linked-roles.html")
ELASTICACHE = ServiceLinkedRole("AWSServiceRoleForElastiCache", "elasticache.amazonaws.com", True,
                                "https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/using-service-linked-roles.html")
RDS = ServiceLinkedRole("AWSServiceRoleForRDS", "rds.amazonaws.com", True,
                        "https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAM.ServiceLinkedRoles.html")
WAFV2_LOGGING = ServiceLinkedRole("AWSServiceRoleForWAFV2Logging", "wafv2.amazonaws.com", True,
                                  "https://docs.aws.amazon.com/waf/latest/developerguide/using-service-linked-roles.html")
ECR_REPLICATION = ServiceLinkedRole("AWSServiceRoleForECRReplication", "replication.ecr.amazonaws.com", True,
                                    "https://docs.aws.amazon.com/AmazonECR/latest/userguide/slr-replication.html")
ALL_ROLES = (EKS, EKS_NODEGROUP, AUTOSCALING, EC2_SPOT, ELB, ELASTICACHE, RDS, WAFV2_LOGGING, ECR_REPLICATION)
BY_SERVICE = {r.service: r for r in ALL_ROLES}


def _spot(resource: RenderedResource) -> list[ServiceLinkedRole]:
    return [EC2_SPOT] if resource.inputs.get("capacityType") == "SPOT" else []


# Resource type -> the SLRs its creation (or what AWS launches for it) uses.
ROLES_BY_TYPE: dict[str, Callable[[RenderedResource], list[ServiceLinkedRole]]] = {
    "aws:eks/cluster:Cluster": lambda r: [EKS],
    # A managed node group is an Auto Scaling group that EKS manages; SPOT capacity launches Spot Instances.
    "aws:eks/nodeGroup:NodeGroup": lambda r: [EKS_NODEGROUP, AUTOSCALING, *_spot(r)],
    "aws:autoscaling/tag:Tag": lambda r: [AUTOSCALING],
    "aws:lb/loadBalancer:LoadBalancer": lambda r: [ELB],
    "aws:lb/targetGroup:TargetGroup": lambda r: [ELB],
    "aws:elasticache/replicationGroup:ReplicationGroup": lambda r: [ELASTICACHE],
    "aws:elasticache/globalReplicationGroup:GlobalReplicationGroup": lambda r: [ELASTICACHE],
    "aws:rds/instance:Instance": lambda r: [RDS],
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": lambda r: [WAFV2_LOGGING],
    "aws:ecr/replicationConfiguration:ReplicationConfiguration": lambda r: [ECR_REPLICATION],
}
# Types the stacks use whose creation needs no service-linked role (each checked against its service's docs).
NO_SERVICE_LINKED_ROLE = frozenset({
    "aws:acm/certificate:Certificate", "aws:acm/certificateValidation:CertificateValidation",
    "aws:cloudwatch/logGroup:LogGroup", "aws:cloudwatch/logResourcePolicy:LogResourcePolicy",
    "aws:cloudwatch/metricAlarm:MetricAlarm", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "aws:ec2/eip:Eip",
    "aws:ec2/flowLog:FlowLog", "aws:ec2/internetGateway:InternetGateway", "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:ec2/natGateway:NatGateway", "aws:ec2/route:Route", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/securityGroup:SecurityGroup", "aws:ec2/subnet:Subnet",
    "aws:ec2/vpc:Vpc", "aws:ec2/vpcEndpoint:VpcEndpoint", "aws:ec2/vpcPeeringConnection:VpcPeeringConnection",
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter",
    "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate", "aws:eks/accessEntry:AccessEntry",
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "aws:eks/addon:Addon",
    "aws:elasticache/parameterGroup:ParameterGroup", "aws:elasticache/subnetGroup:SubnetGroup",
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider", "aws:iam/policy:Policy", "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/serviceLinkedRole:ServiceLinkedRole", "aws:kms/alias:Alias", "aws:kms/key:Key", "aws:lb/listener:Listener",
    "aws:lb/listenerCertificate:ListenerCertificate", "aws:rds/parameterGroup:ParameterGroup",
    "aws:rds/subnetGroup:SubnetGroup", "aws:route53/healthCheck:HealthCheck", "aws:route53/record:Record",
    "aws:route53/zone:Zone", "aws:s3/bucket:Bucket", "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "aws:s3/bucketReplicationConfig:BucketReplicationConfig",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning", "aws:secretsmanager/secret:Secret",
    "aws:secretsmanager/secretVersion:SecretVersion", "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "aws:wafv2/webAcl:WebAcl",
    "aws:wafv2/webAclAssociation:WebAclAssociation",
})
SLR_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/aws-service-role/([a-z0-9.-]+)/([A-Za-z0-9+=,.@_-]+)")


def slr_path(role: ServiceLinkedRole) -> str:
    """The role's path and name after `role/` in its ARN."""
    return f"aws-service-role/{role.service}/{role.name}"


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@dataclass
class RequiredRole:
    role: ServiceLinkedRole
    used_by: list[str]
    """URNs of the resources that need it."""
    referenced_by: list[str]
    """URNs of resources whose inputs name the role's ARN (a policy principal): they fail while it does not exist."""

    @property
    def must_exist_first(self) -> bool:
        return bool(self.referenced_by) or not self.role.created_on_first_use


def unclassified_types(rendering: Rendering) -> list[str]:
    return sorted({r.type for r in rendering.resources if r.custom and r.type.startswith("aws:")}
                  - set(ROLES_BY_TYPE) - NO_SERVICE_LINKED_ROLE)


def required_service_linked_roles(rendering: Rendering) -> dict[str, RequiredRole]:
    """SLR name -> who needs it, from the rendered resources and the SLR ARNs their inputs name."""
    needed: dict[str, RequiredRole] = {}
    for res in rendering.resources:
        if not res.custom:
            continue
        for role in ROLES_BY_TYPE.get(res.type, lambda r: [])(res):
            needed.setdefault(role.name, RequiredRole(role, [], [])).used_by.append(res.urn)
        if res.type == "aws:iam/serviceLinkedRole:ServiceLinkedRole":
            continue
        for text in _strings(res.inputs):
            for service, name in SLR_ARN.findall(text):
                role = BY_SERVICE.get(service) or ServiceLinkedRole(name, service, True, "")
                entry = needed.setdefault(role.name, RequiredRole(role, [], []))
                if res.urn not in entry.referenced_by:
                    entry.referenced_by.append(res.urn)
    return needed
