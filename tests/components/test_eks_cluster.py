"""`EksCluster` rendered alone under the mocks."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.eks_cluster import CONTROL_PLANE_LOG_TYPES, EksCluster, EksClusterArgs
from infra.render import Rendering, render_function

ADDONS = {
    "vpc-cni": "v1.20.4-eksbuild.1", "coredns": "v1.12.3-eksbuild.1", "kube-proxy": "v1.33.3-eksbuild.6",
    "aws-ebs-csi-driver": "v1.48.0-eksbuild.2", "eks-pod-identity-agent": "v1.3.8-eksbuild.2",
}


def render_cluster(public_cidrs: tuple[str, ...] = (), admins: tuple[str, ...] = (), deployer: str | None = None) -> Rendering:
    def program() -> None:
        provider = aws.Provider("aws-us-west-2", region="us-west-2")
        cluster = EksCluster(
            "c",
            EksClusterArgs(cluster_name="llmp-test", version="1.33", vpc_id="vpc-1", subnet_ids=["subnet-a", "subnet-b"],
                           addon_versions=ADDONS, public_access_cidrs=public_cidrs, admin_role_arns=admins,
                           deployer_principal_arn=deployer),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        cluster.install_compute_addons([])
        pulumi.export("kubeconfig", cluster.kubeconfig)
        pulumi.export("issuer", cluster.oidc_issuer)

    return render_function(program)


def test_private_endpoint_encryption_logs_and_access_mode() -> None:
    r = render_cluster()
    c = r.one("aws:eks/cluster:Cluster").inputs
    assert c["version"] == "1.33"
    assert c["vpcConfig"]["endpointPrivateAccess"] is True and c["vpcConfig"]["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in c["vpcConfig"]
    assert c["encryptionConfig"]["resources"] == ["secrets"]
    key_arns = {k.urn: k for k in r.of_type("aws:kms/key:Key")}
    assert c["encryptionConfig"]["provider"]["keyArn"].startswith("arn:aws:kms:us-west-2:")
    assert sorted(c["enabledClusterLogTypes"]) == sorted(CONTROL_PLANE_LOG_TYPES)
    assert c["accessConfig"]["authenticationMode"] == "API"
    for key in key_arns.values():
        assert key.inputs["enableKeyRotation"] is True and key.inputs["deletionWindowInDays"] >= 7
        assert key.inputs["bypassPolicyLockoutSafetyCheck"] is False
    log_group = r.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert log_group["name"] == "/aws/eks/llmp-test/cluster" and log_group["retentionInDays"] == 90 and log_group["kmsKeyId"]
    logs_key = next(k for k in key_arns.values() if "logs" in k.name)
    policy = json.loads(logs_key.inputs["policy"])
    logs = [s for s in policy["Statement"] if s.get("Principal", {}).get("Service") == "logs.us-west-2.amazonaws.com"]
    assert len(logs) == 1  # CloudWatch Logs may use the key, only for this account's log groups
    assert logs[0]["Condition"] == {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-west-2:123456789012:log-group:*"}}


def test_public_endpoint_only_with_allowlist() -> None:
    r = render_cluster(public_cidrs=("198.51.100.0/24",))
    vpc = r.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["publicAccessCidrs"] == ["198.51.100.0/24"]


def test_admin_access_entries() -> None:
    admin = "arn:aws:iam::123456789012:role/platform-admins"
    r = render_cluster(admins=(admin,))
    entry = r.one("aws:eks/accessEntry:AccessEntry").inputs
    assert entry["principalArn"] == admin and entry["type"] == "STANDARD"
    assoc = r.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation").inputs
    assert assoc["policyArn"].endswith("AmazonEKSClusterAdminPolicy") and assoc["accessScope"]["type"] == "cluster"


DEPLOYER = "arn:aws:iam::123456789012:role/ci/llm-platform-ci-deploy"


def test_creator_gets_no_implicit_entry_and_the_deployer_an_explicit_one() -> None:
    """With the creator's implicit entry on, listing CI in admin_role_arns collided (ResourceInUseException)."""
    r = render_cluster(admins=("arn:aws:iam::123456789012:role/platform-admins",), deployer=DEPLOYER)
    assert r.one("aws:eks/cluster:Cluster").inputs["accessConfig"]["bootstrapClusterCreatorAdminPermissions"] is False
    principals = sorted(e.inputs["principalArn"] for e in r.of_type("aws:eks/accessEntry:AccessEntry"))
    assert principals == [DEPLOYER, "arn:aws:iam::123456789012:role/platform-admins"]
    assert sorted(a.inputs["principalArn"] for a in r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")) == principals
    # The Kubernetes provider (everything applied to the cluster) waits for the deployer's admin access.
    k8s_provider = r.one("pulumi:providers:kubernetes")
    deployer_assoc = next(a for a in r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
                          if a.inputs["principalArn"] == DEPLOYER)
    assert deployer_assoc.urn in k8s_provider.dependencies


def test_deployer_listed_in_config_or_twice_gets_one_entry() -> None:
    r = render_cluster(admins=(DEPLOYER, "arn:aws:iam::123456789012:role/platform-admins", DEPLOYER), deployer=DEPLOYER)
    principals = [e.inputs["principalArn"] for e in r.of_type("aws:eks/accessEntry:AccessEntry")]
    assert sorted(principals) == sorted(set(principals)) and len(principals) == 2
    # The config entry keeps its index name (no replacement when the deployer starts being listed).
    assert {e.name for e in r.of_type("aws:eks/accessEntry:AccessEntry")} == {"c-admin-0", "c-admin-1"}


def test_addons_pinned_cni_network_policy_and_irsa() -> None:
    r = render_cluster()
    addons = {a.inputs["addonName"]: a.inputs for a in r.of_type("aws:eks/addon:Addon")}
    assert {k: v["addonVersion"] for k, v in addons.items()} == ADDONS
    assert json.loads(addons["vpc-cni"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    assert addons["vpc-cni"]["serviceAccountRoleArn"].startswith("arn:aws:iam::")
    assert addons["aws-ebs-csi-driver"]["serviceAccountRoleArn"].startswith("arn:aws:iam::")
    oidc = r.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"] and oidc["url"].startswith("https://oidc.eks.us-west-2")
    cni_role = next(x for x in r.of_type("aws:iam/role:Role") if x.name.endswith("irsa-vpc-cni"))
    trust = json.loads(cni_role.inputs["assumeRolePolicy"])["Statement"][0]
    issuer = r.outputs["issuer"]
    assert trust["Condition"]["StringEquals"] == {f"{issuer}:sub": "system:serviceaccount:kube-system:aws-node",
                                                  f"{issuer}:aud": "sts.amazonaws.com"}


def test_kubeconfig_is_secret_and_uses_exec_auth() -> None:
    r = render_cluster()
    assert "kubeconfig" in r.secret_outputs
    kubeconfig = json.loads(r.outputs["kubeconfig"])
    user = kubeconfig["users"][0]["user"]
    assert "token" not in user and user["exec"]["command"] == "aws"
    assert user["exec"]["args"][:2] == ["eks", "get-token"] and "us-west-2" in user["exec"]["args"]
    provider = r.one("pulumi:providers:kubernetes")
    assert provider.to_json()["inputs"]["kubeconfig"] == "[secret]"  # passed to the provider as a secret
