"""EKS control plane and managed node groups (POLICIES.md 1-6)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import MANDATORY, Res, Rule, Settings, Stack, as_list, truthy

CLUSTER = "aws:eks/cluster:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
SUBNET = "aws:ec2/subnet:Subnet"
WORLD = ("0.0.0.0/0", "::/0")
# Same list as infra.config.SUPPORTED_EKS_VERSIONS (a test keeps them equal); not imported so that the pack
# does not load the whole pydantic config model when the engine starts it.
SUPPORTED_EKS_VERSIONS = ("1.33", "1.34", "1.35")
LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")


def private_endpoint(r: Res, s: Settings) -> Iterator[str]:
    # AWS defaults: private endpoint off, public endpoint on, open to 0.0.0.0/0.
    if not truthy(r.get("vpcConfig", "endpointPrivateAccess")):
        yield "vpcConfig.endpointPrivateAccess is not true: nodes would reach the API over the internet"


def public_endpoint_restricted(r: Res, s: Settings) -> Iterator[str]:
    if not truthy(r.get("vpcConfig", "endpointPublicAccess", default=True)):
        return
    cidrs = [str(c) for c in as_list(r.get("vpcConfig", "publicAccessCidrs"))]
    if not cidrs:
        yield "public endpoint is on with no publicAccessCidrs (AWS default 0.0.0.0/0)"
    for cidr in cidrs:
        if cidr in WORLD:
            yield f"public endpoint allows {cidr}"


def secrets_encrypted(r: Res, s: Settings) -> Iterator[str]:
    enc = r.get("encryptionConfig")
    resources = [str(x) for x in as_list(r.get("encryptionConfig", "resources"))]
    if not enc or "secrets" not in resources:
        yield "encryptionConfig does not cover resources ['secrets']"
    elif not r.get("encryptionConfig", "provider", "keyArn"):
        yield "encryptionConfig.provider.keyArn is not set"


def control_plane_logs(r: Res, s: Settings) -> Iterator[str]:
    enabled = {str(x) for x in as_list(r.get("enabledClusterLogTypes"))}
    missing = [t for t in s["required_log_types"] if t not in enabled]
    if missing:
        yield f"enabledClusterLogTypes misses {missing}"


def supported_version(r: Res, s: Settings) -> Iterator[str]:
    version = r.get("version")
    if version is None:
        yield "version is not pinned (AWS would pick its default and upgrades would be unplanned)"
    elif str(version) not in s["supported_versions"]:
        yield f"version {version} is not in the supported list {list(s['supported_versions'])}"


def auth_mode(r: Res, s: Settings) -> Iterator[str]:
    mode = r.get("accessConfig", "authenticationMode", default="CONFIG_MAP")
    if str(mode) not in s["allowed_modes"]:
        yield f"accessConfig.authenticationMode is {mode}; allowed {list(s['allowed_modes'])}"


def no_remote_access(r: Res, s: Settings) -> Iterator[str]:
    if r.get("remoteAccess"):
        yield "remoteAccess (SSH) is configured; use SSM Session Manager instead"


def nodes_in_private_subnets(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    subnet_urns = subject.deps.get("subnetIds", [])
    for urn in subnet_urns:
        subnet = stack.by_urn(urn)
        if subnet is None or subnet.type != SUBNET:
            continue
        if truthy(subnet.get("mapPublicIpOnLaunch")):
            yield f"subnet {subnet.name} maps public IPs on launch (a public subnet)"
        tags = subnet.get("tags", default={})
        if s["public_subnet_tag"] in tags:
            yield f"subnet {subnet.name} carries the public tag {s['public_subnet_tag']}"


RULES = [
    Rule(
        id="eks-endpoint-private",
        controls=("FSBP EKS.1", "CIS EKS 5.4.1", "CIS EKS 5.4.2", "CKV_AWS_38", "CKV_AWS_39"),
        summary="EKS API endpoint is private; a public endpoint is allowed only with a CIDR allowlist without 0.0.0.0/0",
        remediation="Set vpcConfig.endpointPrivateAccess=true and endpointPublicAccess=false, or list office/VPN CIDRs in "
                    "publicAccessCidrs (llm-platform:cluster.public_access_cidrs).",
        enforcement=MANDATORY, types=(CLUSTER,), checks=(private_endpoint, public_endpoint_restricted), policies_md=(1,),
    ),
    Rule(
        id="eks-secrets-encryption",
        controls=("FSBP EKS.3", "CIS EKS 5.3.1", "CKV_AWS_58"),
        summary="EKS encrypts Kubernetes secrets with a customer-managed KMS key (envelope encryption)",
        remediation="Set encryptionConfig={resources: ['secrets'], provider: {keyArn: <KMS key ARN>}}.",
        enforcement=MANDATORY, types=(CLUSTER,), checks=(secrets_encrypted,), policies_md=(2,),
    ),
    Rule(
        id="eks-control-plane-logging",
        controls=("FSBP EKS.8", "CIS EKS 2.1.1", "CKV_AWS_37"),
        summary="EKS ships every control-plane log type, including audit, to CloudWatch",
        remediation="Set enabledClusterLogTypes to api, audit, authenticator, controllerManager, scheduler.",
        enforcement=MANDATORY, types=(CLUSTER,), checks=(control_plane_logs,), policies_md=(3,),
        config={"required_log_types": {"type": "array", "items": {"type": "string", "enum": list(LOG_TYPES)},
                                       "default": list(LOG_TYPES)}},
    ),
    Rule(
        id="eks-supported-version",
        controls=("FSBP EKS.2", "CKV_AWS_339"),
        summary="EKS runs a pinned Kubernetes version from the supported allowlist",
        remediation="Set llm-platform:cluster.version to a supported version (policy config supported_versions).",
        enforcement=MANDATORY, types=(CLUSTER,), checks=(supported_version,), policies_md=(4,),
        config={"supported_versions": {"type": "array", "items": {"type": "string"},
                                       "default": list(SUPPORTED_EKS_VERSIONS)}},
    ),
    Rule(
        id="eks-auth-mode-api",
        controls=("CIS EKS 4.1.7",),
        summary="EKS authenticates through access entries (authenticationMode API), not the aws-auth ConfigMap",
        remediation="Set accessConfig.authenticationMode='API' and grant admins with aws.eks.AccessEntry.",
        enforcement=MANDATORY, types=(CLUSTER,), checks=(auth_mode,), policies_md=(5,),
        config={"allowed_modes": {"type": "array", "items": {"type": "string", "enum": ["API", "API_AND_CONFIG_MAP"]},
                                  "default": ["API"]}},
    ),
    Rule(
        id="eks-nodegroup-no-remote-access",
        controls=("CIS EKS 5.4.3", "CKV_AWS_100"),
        summary="EKS node groups allow no SSH remote access",
        remediation="Remove remoteAccess from the node group; reach nodes with SSM Session Manager.",
        enforcement=MANDATORY, types=(NODE_GROUP,), checks=(no_remote_access,), policies_md=(6,),
    ),
    Rule(
        id="eks-nodegroup-private-subnets",
        controls=("CIS EKS 5.4.3",),
        summary="EKS node groups run only in private subnets (no public-IP mapping, no public ELB tag)",
        remediation="Pass the VPC's private subnet ids to the node group.",
        enforcement=MANDATORY, types=(NODE_GROUP,), stack_checks=(nodes_in_private_subnets,), policies_md=(6,),
        config={"public_subnet_tag": {"type": "string", "default": "kubernetes.io/role/elb"}},
    ),
]
