"""`EksCluster`: the EKS control plane, locked down by default.

Secrets envelope-encrypted with a rotated KMS key; every control-plane log type to a log group with retention;
private endpoint always on, public endpoint off unless a CIDR allowlist is given; access entries (authentication
mode API, no aws-auth ConfigMap) for the configured admin roles; an OIDC provider for IRSA; the managed add-ons
with pinned versions (vpc-cni with network policy enforcement, and IRSA roles instead of node-role permissions);
a Kubernetes provider whose kubeconfig uses exec auth (`aws eks get-token`), never a static token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.irsa import service_trust_policy, trust_policy
from components.kms import EncryptionKey, EncryptionKeyArgs

CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
# Add-ons that must exist before nodes can become Ready (networking) vs. ones that need nodes to run on.
NETWORK_ADDONS = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
COMPUTE_ADDONS = ("coredns", "aws-ebs-csi-driver")
ADMIN_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
VIEW_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"


@dataclass
class EksClusterArgs:
    cluster_name: str
    """EKS cluster name (unique per account and region)."""
    version: str
    """Kubernetes minor version, e.g. `1.33`."""
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets for the control-plane ENIs."""
    addon_versions: Mapping[str, str]
    """Managed add-on name -> version (vpc-cni, coredns, kube-proxy, aws-ebs-csi-driver, eks-pod-identity-agent)."""
    public_access_cidrs: Sequence[str] = ()
    """Empty: the API endpoint is private only. Else the public endpoint is on for exactly these CIDRs."""
    admin_role_arns: Sequence[str] = ()
    """IAM roles given cluster-admin through access entries (duplicates and the deployer are entered once)."""
    view_role_arns: Sequence[pulumi.Input[str]] = ()
    """IAM roles given read-only Kubernetes access (AmazonEKSViewPolicy, cluster scope: no Secrets), e.g. CI previews."""
    api_access_cidrs: Sequence[str] = ()
    """CIDRs admitted on 443 to the API endpoint's ENIs through the cluster security group: the VPC of a CI runner
    (this VPC, or a peered one: a private-only endpoint's name resolves to its private IPs from anywhere)."""
    deployer_principal_arn: str | None = None
    """The IAM role (or user) running `pulumi up`, as an IAM ARN, not the STS assumed-role session ARN. The cluster
    creator gets no implicit admin entry (`bootstrap_cluster_creator_admin_permissions` is off, so a listed creator
    cannot collide with it); this explicit entry is what lets the deployer apply the workloads."""
    log_retention_days: int = 90
    tags: dict[str, str] = field(default_factory=dict)


def kubeconfig_json(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` on every use (no token is ever stored)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        }
    )


class EksCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    cluster_name: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    k8s_provider: k8s.Provider
    secrets_key_arn: pulumi.Output[str]

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:eks:EksCluster", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region

        secrets_key = EncryptionKey(
            f"{name}-secrets",
            EncryptionKeyArgs(description=f"EKS {args.cluster_name} Kubernetes secrets envelope encryption", tags=tags),
            opts=child,
        )
        logs_key = EncryptionKey(
            f"{name}-logs",
            EncryptionKeyArgs(
                description=f"EKS {args.cluster_name} control-plane log group",
                service_principals=[region.apply(lambda r: f"logs.{r}.amazonaws.com")],
                tags=tags,
            ),
            opts=child,
        )
        self.logs_key_arn = logs_key.arn
        # EKS writes to this exact name; creating it first gives it retention and encryption.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane",
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=args.log_retention_days,
            kms_key_id=logs_key.arn,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),  # fixed name
        )

        role = aws.iam.Role(f"{name}-cluster", assume_role_policy=service_trust_policy("eks.amazonaws.com"), tags=tags, opts=child)
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy", role=role.name, policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=child
        )

        public = len(args.public_access_cidrs) > 0
        self.cluster = aws.eks.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            version=args.version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.subnet_ids),
                endpoint_private_access=True,
                endpoint_public_access=public,
                public_access_cidrs=list(args.public_access_cidrs) if public else None,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                # No implicit entry for the creator: every admin, the deployer included, is declared below, so an
                # admin listed in config that also created the cluster cannot collide (ResourceInUseException).
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            # Managed add-ons below replace the unmanaged defaults, with pinned versions.
            bootstrap_self_managed_addons=False,
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, attachment], delete_before_replace=True),  # fixed name
        )
        self.cluster_name = self.cluster.name
        self.cluster_security_group_id = self.cluster.vpc_config.apply(lambda c: str(c.cluster_security_group_id))
        self.secrets_key_arn = secrets_key.arn

        issuer_url = self.cluster.identities.apply(lambda ids: str(ids[0].oidcs[0].issuer))  # type: ignore[index]
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer_url, client_id_lists=["sts.amazonaws.com"], tags=tags, opts=child
        )
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer = issuer_url.apply(lambda u: u.removeprefix("https://"))

        # EKS allows one access entry per principal: each admin once, named by its first position in config (stable
        # names when the list grows); the deployer gets its own entry unless config already lists it.
        admins: dict[str, str] = {}
        for i, admin in enumerate(args.admin_role_arns):
            admins.setdefault(admin, f"{name}-admin-{i}")
        if args.deployer_principal_arn and args.deployer_principal_arn not in admins:
            admins[args.deployer_principal_arn] = f"{name}-deployer"
        self.admin_access: list[aws.eks.AccessPolicyAssociation] = []
        for admin, entry_name in admins.items():
            entry = aws.eks.AccessEntry(
                entry_name, cluster_name=self.cluster.name, principal_arn=admin, type="STANDARD", tags=tags, opts=child
            )
            self.admin_access.append(aws.eks.AccessPolicyAssociation(
                entry_name,
                cluster_name=self.cluster.name,
                principal_arn=admin,
                policy_arn=ADMIN_POLICY_ARN,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            ))

        for i, viewer in enumerate(args.view_role_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-view-{i}", cluster_name=self.cluster.name, principal_arn=viewer, type="STANDARD", tags=tags, opts=child
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-view-{i}",
                cluster_name=self.cluster.name,
                principal_arn=viewer,
                policy_arn=VIEW_POLICY_ARN,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )
        for i, cidr in enumerate(args.api_access_cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{i}",
                security_group_id=self.cluster_security_group_id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4=cidr,
                description="Kubernetes API from the CI runner's VPC",
                tags=tags,
                opts=child,
            )

        self._irsa: dict[str, pulumi.Output[str]] = {
            "vpc-cni": self.addon_role("vpc-cni", "kube-system", "aws-node", ["arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"]).arn,
            "aws-ebs-csi-driver": self.addon_role(
                "ebs-csi", "kube-system", "ebs-csi-controller-sa", ["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]
            ).arn,
        }
        self.network_addons = [self._addon(a) for a in NETWORK_ADDONS]

        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data, region).apply(
                lambda v: kubeconfig_json(str(v[0]), str(v[1]), str(v[2]), str(v[3]))
            )
        )
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            # Kubernetes calls need the network add-ons and the deployer's cluster-admin access entry in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.network_addons, *self.admin_access]),
        )
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "cluster_security_group_id": self.cluster_security_group_id,
                "oidc_provider_arn": self.oidc_provider_arn,
                "kubeconfig": self.kubeconfig,
            }
        )

    def addon_role(self, short_name: str, namespace: str, service_account: str, policy_arns: Sequence[str]) -> aws.iam.Role:
        """An IRSA role for one service account, with the given managed policies."""
        role = aws.iam.Role(
            f"{self._name}-irsa-{short_name}",
            assume_role_policy=pulumi.Output.all(self.oidc_provider_arn, self.oidc_issuer).apply(
                lambda v: trust_policy(str(v[0]), str(v[1]), namespace, service_account)
            ),
            tags=self._args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        for j, arn in enumerate(policy_arns):
            aws.iam.RolePolicyAttachment(f"{self._name}-irsa-{short_name}-{j}", role=role.name, policy_arn=arn, opts=pulumi.ResourceOptions(parent=self))
        return role

    def _addon(self, addon: str, depends_on: Sequence[pulumi.Resource] = ()) -> aws.eks.Addon:
        config = {"enableNetworkPolicy": "true"} if addon == "vpc-cni" else None
        return aws.eks.Addon(
            f"{self._name}-{addon}",
            cluster_name=self.cluster.name,
            addon_name=addon,
            addon_version=self._args.addon_versions[addon],
            configuration_values=json.dumps(config) if config else None,
            service_account_role_arn=self._irsa.get(addon),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=self._args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )

    def install_compute_addons(self, node_groups: Sequence[pulumi.Resource]) -> list[aws.eks.Addon]:
        """coredns and the EBS CSI driver run as pods: created after the node groups so they can become ACTIVE."""
        return [self._addon(a, depends_on=node_groups) for a in COMPUTE_ADDONS]
