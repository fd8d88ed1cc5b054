"""Every rule: a really rendered resource passes, the same resource with one setting weakened is flagged.

Sources: "stack" = the prod stack rendered through the real program (`rendered("prod")`, foundation resources),
"ref" = the compliant reference platform of policy_reference.py rendered through the same harness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from infra.render import Rendering
from policies.offline import evaluate, load_config
from policies.registry import RULES, RULES_BY_ID
from tests.policies.policy_support import DELETE, Mutation, Resources, drop, edit, run_rule, setter

CLUSTER = "aws:eks/cluster:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_IN = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
DB = "aws:rds/instance:Instance"
PG = "aws:rds/parameterGroup:ParameterGroup"
LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
ACL = "aws:wafv2/webAcl:WebAcl"
BUCKET = "aws:s3/bucket:Bucket"
KEY = "aws:kms/key:Key"
SECRET = "aws:secretsmanager/secret:Secret"
DEPLOY = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
POD = "spec.template.spec"
GW = f"{POD}.containers.0"


@dataclass(frozen=True)
class Case:
    rule: str
    source: str  # "stack" or "ref"
    mutation: Mutation
    expect: str  # part of the violation message
    # a tier whose policy config accepts the same change (threshold rules)
    passes_with: str | None = None
    # the tier whose policy config flags the change
    config: str = "prod"


def case(rule: str, source: str, mutation: Mutation, expect: str, passes_with: str | None = None,
         config: str = "prod") -> Case:
    return Case(rule, source, mutation, expect, passes_with, config)


def S(path: str, value: object) -> Callable[[dict[str, object]], None]:  # noqa: N802 - reads like a table
    return setter(path, value)


def rbac_edit(inputs: dict) -> None:  # type: ignore[type-arg]
    inputs["rules"][0]["verbs"] = ["get", "escalate"]


CASES = [
    # --- EKS (1-6) ------------------------------------------------------------------------------------------
    case("eks-endpoint-private", "stack", edit(CLUSTER, S("vpcConfig.endpointPrivateAccess", False)), "endpointPrivateAccess"),
    case("eks-endpoint-private", "ref", edit(CLUSTER, S("vpcConfig.publicAccessCidrs", ["0.0.0.0/0"])), "allows 0.0.0.0/0"),
    case("eks-endpoint-private", "ref", edit(CLUSTER, S("vpcConfig.publicAccessCidrs", DELETE)), "no publicAccessCidrs"),
    case("eks-secrets-encryption", "stack", edit(CLUSTER, S("encryptionConfig", DELETE)), "does not cover"),
    case("eks-secrets-encryption", "ref", edit(CLUSTER, S("encryptionConfig.provider", DELETE)), "keyArn"),
    case("eks-control-plane-logging", "stack", edit(CLUSTER, S("enabledClusterLogTypes", ["api"])), "audit"),
    case("eks-supported-version", "stack", edit(CLUSTER, S("version", "1.27")), "not in the supported list"),
    case("eks-supported-version", "ref", edit(CLUSTER, S("version", DELETE)), "not pinned"),
    case("eks-auth-mode-api", "stack", edit(CLUSTER, S("accessConfig.authenticationMode", "CONFIG_MAP")), "CONFIG_MAP"),
    case("eks-nodegroup-no-remote-access", "stack", edit(NODE_GROUP, S("remoteAccess", {"ec2SshKey": "ops"})), "SSH"),
    case("eks-nodegroup-private-subnets", "ref",
         edit(SUBNET, S("mapPublicIpOnLaunch", True), "ref-private-0", flag=(NODE_GROUP, "ref-system")), "maps public IPs"),
    # --- launch templates (7-9) -----------------------------------------------------------------------------
    case("launch-template-imdsv2", "stack", edit(LT, S("metadataOptions.httpTokens", "optional")), "IMDSv1"),
    case("launch-template-imdsv2", "stack", edit(LT, S("metadataOptions.httpPutResponseHopLimit", 2.0)), "HopLimit is 2"),
    case("launch-template-no-public-ip", "ref", edit(LT, S("networkInterfaces.0.associatePublicIpAddress", "true")), "associatePublicIpAddress"),
    case("launch-template-ebs-encrypted", "stack", edit(LT, S("blockDeviceMappings.0.ebs.encrypted", "false")), "encrypted is not true"),
    case("launch-template-ebs-encrypted", "ref", edit(LT, S("blockDeviceMappings.0.ebs.kmsKeyId", DELETE)), "kmsKeyId"),
    case("launch-template-ebs-encrypted", "ref", edit(LT, S("blockDeviceMappings", [])), "account default"),
    # --- network (10-14) ------------------------------------------------------------------------------------
    case("sg-no-public-ingress", "ref", edit(SG, S("ingress.0.cidrBlocks", ["0.0.0.0/0"]), "ref-data-sg"), "0.0.0.0/0"),
    case("sg-no-public-ingress", "ref", edit(SG_IN, lambda i: i.update(fromPort=22.0, toPort=22.0), "ref-alb-in-443"), "22-22"),
    case("sg-no-public-ingress", "ref", edit(LB, S("internal", True), flag=(SG_IN, "ref-alb-in-443")), "not a public ALB"),
    case("sg-descriptions", "ref", edit(SG, S("ingress.0.description", DELETE), "ref-data-sg"), "ingress[0] has no description"),
    case("sg-descriptions", "ref", edit(SG, S("description", "Managed by Pulumi"), "ref-alb-sg"), "no description of its own"),
    case("sg-no-mixed-rules", "ref", edit(SG, S("ingress", [{"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0,
                                                             "cidrBlocks": ["10.0.0.0/16"], "description": "x"}]), "ref-alb-sg"),
         "standalone rules"),
    case("vpc-flow-logs", "stack", drop("aws:ec2/flowLog:FlowLog", VPC), "no aws.ec2.FlowLog"),
    case("vpc-default-sg-closed", "ref", edit("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
                                              S("ingress", [{"protocol": "-1", "fromPort": 0.0, "toPort": 0.0, "self": True}]),
                                              flag=(VPC, "")), "keeps ingress"),
    case("vpc-default-sg-closed", "stack", drop("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", VPC), "not managed"),
    case("subnet-private-no-public-ip", "ref", edit(SUBNET, S("mapPublicIpOnLaunch", True), "ref-private-1"), "private subnet"),
    # --- ElastiCache (15-18) --------------------------------------------------------------------------------
    case("elasticache-encryption", "ref", edit(REDIS, S("atRestEncryptionEnabled", False)), "atRestEncryptionEnabled"),
    case("elasticache-encryption", "ref", edit(REDIS, S("transitEncryptionMode", "preferred")), "plaintext"),
    case("elasticache-encryption", "ref", edit(REDIS, S("authToken", DELETE)), "neither authToken"),
    case("elasticache-cmk", "ref", edit(REDIS, S("kmsKeyId", DELETE)), "kmsKeyId"),
    case("elasticache-multi-az", "ref", edit(REDIS, S("multiAzEnabled", False)), "multiAzEnabled", passes_with="dev"),
    case("elasticache-backups-upgrades", "ref", edit(REDIS, S("snapshotRetentionLimit", 0.0)), "snapshotRetentionLimit is 0"),
    case("elasticache-backups-upgrades", "ref", edit(REDIS, S("subnetGroupName", DELETE)), "subnetGroupName"),
    # --- RDS (19-26) ----------------------------------------------------------------------------------------
    case("rds-not-public", "ref", edit(DB, S("publiclyAccessible", True)), "publiclyAccessible"),
    case("rds-storage-encrypted", "ref", edit(DB, S("storageEncrypted", False)), "storageEncrypted"),
    case("rds-storage-encrypted", "ref", edit(DB, S("kmsKeyId", DELETE)), "kmsKeyId"),
    case("rds-backup-retention", "ref", edit(DB, S("backupRetentionPeriod", 7.0)), "at least 14", passes_with="dev"),
    case("rds-multi-az", "ref", edit(DB, S("multiAz", False)), "multiAz", passes_with="small"),
    case("rds-deletion-protection", "ref", edit(DB, S("deletionProtection", False)), "deletionProtection", passes_with="dev"),
    case("rds-iam-auth", "ref", edit(DB, S("iamDatabaseAuthenticationEnabled", DELETE)), "iamDatabaseAuthenticationEnabled"),
    case("rds-log-exports", "ref", edit(DB, S("enabledCloudwatchLogsExports", [])), "postgresql"),
    case("rds-monitoring", "ref", edit(DB, S("monitoringInterval", 0.0)), "enhanced monitoring"),
    case("rds-monitoring", "ref", edit(DB, S("performanceInsightsKmsKeyId", DELETE)), "performanceInsightsKmsKeyId"),
    case("rds-force-ssl", "ref", edit(PG, S("parameters.0.value", "0")), "rds.force_ssl is 0"),
    case("rds-hygiene", "ref", edit(DB, S("copyTagsToSnapshot", False)), "copyTagsToSnapshot"),
    # --- ALB, WAF (27-32) -----------------------------------------------------------------------------------
    case("lb-listener-https", "ref", edit(LISTENER, S("defaultActions", [{"type": "forward", "targetGroupArn": "arn:tg"}]),
                                          "ref-listener-redirect"), "instead of redirecting"),
    case("lb-listener-tls-policy", "ref", edit(LISTENER, S("sslPolicy", "ELBSecurityPolicy-2016-08"), "ref-listener-tls"), "allowlist"),
    case("lb-listener-tls-policy", "ref", edit(LISTENER, S("sslPolicy", DELETE), "ref-listener-tls"), "TLS 1.0"),
    case("lb-hardening", "ref", edit(LB, S("dropInvalidHeaderFields", False)), "dropInvalidHeaderFields"),
    case("lb-hardening", "ref", edit(LB, S("desyncMitigationMode", "monitor")), "desyncMitigationMode is monitor"),
    case("lb-hardening", "ref", edit(LB, lambda i: i.update(subnets=i["subnets"][:1])), "1 subnet(s)"),
    case("lb-access-logs", "ref", edit(LB, S("accessLogs.enabled", False)), "accessLogs"),
    case("lb-deletion-protection", "ref", edit(LB, S("enableDeletionProtection", False)), "enableDeletionProtection", passes_with="small"),
    case("alb-waf-association", "ref", drop("aws:wafv2/webAclAssociation:WebAclAssociation", LB), "no aws.wafv2.WebAclAssociation"),
    case("waf-managed-rules", "ref", edit(ACL, lambda i: i.update(rules=i["rules"][:1])), "KnownBadInputs"),
    case("waf-managed-rules", "ref", edit(ACL, S("rules.0.overrideAction", {"count": {}})), "only counts", passes_with="dev"),
    case("waf-managed-rules", "ref", edit(ACL, S("visibilityConfig.cloudwatchMetricsEnabled", False)), "cloudwatchMetricsEnabled"),
    case("waf-logging", "ref", drop("aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration", ACL), "no aws.wafv2.WebAclLoggingConfiguration"),
    # --- S3 (33-35) -----------------------------------------------------------------------------------------
    case("s3-public-access-block", "ref", edit("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                                              S("restrictPublicBuckets", False), flag=(BUCKET, "")), "restrictPublicBuckets"),
    case("s3-public-access-block", "ref", drop("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", BUCKET), "no aws.s3.BucketPublicAccessBlock"),
    case("s3-acls-disabled", "ref", edit("aws:s3/bucketOwnershipControls:BucketOwnershipControls",
                                         S("rule.objectOwnership", "BucketOwnerPreferred"), flag=(BUCKET, "")), "ACLs are not disabled"),
    case("s3-sse-kms", "ref", edit("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                                   S("rules.0.applyServerSideEncryptionByDefault.sseAlgorithm", "AES256"), flag=(BUCKET, "")), "not SSE-KMS"),
    case("s3-sse-kms", "ref", edit("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                                   S("rules.0.bucketKeyEnabled", False), flag=(BUCKET, "")), "bucketKeyEnabled"),
    case("s3-tls-only", "ref", drop("aws:s3/bucketPolicy:BucketPolicy", BUCKET), "aws:SecureTransport"),
    case("s3-versioning", "ref", edit("aws:s3/bucketVersioning:BucketVersioning", S("versioningConfiguration.status", "Suspended"),
                                      flag=(BUCKET, "")), "versioning is not enabled"),
    case("s3-lifecycle", "ref", edit("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", S("rules.0.status", "Disabled"),
                                     flag=(BUCKET, "")), "lifecycle rule"),
    # --- KMS, Secrets Manager (36-37) -----------------------------------------------------------------------
    case("kms-key-rotation", "stack", edit(KEY, S("enableKeyRotation", False)), "enableKeyRotation"),
    case("kms-key-safe-deletion", "ref", edit(KEY, S("bypassPolicyLockoutSafetyCheck", True)), "lock every admin out"),
    case("secrets-kms", "ref", edit(SECRET, S("kmsKeyId", DELETE)), "kmsKeyId"),
    case("secrets-rotation", "ref", drop("aws:secretsmanager/secretRotation:SecretRotation", SECRET), "SecretRotation"),
    # --- Kubernetes (38-45) ---------------------------------------------------------------------------------
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{GW}.securityContext.privileged", True), "ref-gateway"), "is privileged"),
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{POD}.hostNetwork", True), "ref-gateway"), "hostNetwork"),
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{GW}.securityContext.allowPrivilegeEscalation", DELETE), "ref-gateway"), "allowPrivilegeEscalation"),
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{GW}.securityContext.capabilities", {"add": ["SYS_ADMIN"]}), "ref-gateway"), "drop does not include ALL"),
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{GW}.securityContext.runAsUser", 0.0), "ref-gateway"), "uid 0"),
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{POD}.securityContext.seccompProfile", DELETE), "ref-gateway"), "seccompProfile"),
    case("k8s-pod-security", "ref", edit(DEPLOY, S(f"{GW}.securityContext.readOnlyRootFilesystem", False), "ref-gateway"), "readOnlyRootFilesystem"),
    case("k8s-resources", "ref", edit(DEPLOY, S(f"{GW}.resources.requests.memory", DELETE), "ref-gateway"), "requests.memory"),
    case("k8s-resources", "ref", edit(DEPLOY, S(f"{GW}.resources.limits", {"memory": "8Gi"}), "ref-vllm"), "GPU nodes"),
    case("k8s-probes", "ref", edit(DEPLOY, S(f"{GW}.livenessProbe", DELETE), "ref-gateway"), "livenessProbe"),
    case("k8s-image-pinned", "ref", edit(DEPLOY, S(f"{GW}.image", "docker.io/vllm/vllm-openai:latest"), "ref-vllm"), "not pinned"),
    case("k8s-image-pinned", "ref", edit(DEPLOY, S(f"{GW}.image", "ghcr.io/someone/gateway:1.0.0"), "ref-gateway"), "approved registry"),
    case("k8s-helm-pinned", "ref", edit(RELEASE, S("version", "9.x")), "exact version"),
    case("k8s-helm-pinned", "ref", edit(RELEASE, S("repositoryOpts.repo", "http://charts.example.com")), "plain HTTP"),
    case("k8s-own-namespace", "ref", edit(DEPLOY, S("metadata.namespace", DELETE), "ref-gateway"), "namespace default"),
    case("k8s-own-namespace", "ref", edit(RELEASE, S("namespace", "default")), "namespace default"),
    case("k8s-service-account", "ref", edit(DEPLOY, S(f"{POD}.automountServiceAccountToken", True), "ref-gateway"), "automountServiceAccountToken"),
    case("k8s-service-account", "ref", edit(DEPLOY, S(f"{POD}.serviceAccountName", DELETE), "ref-gateway"), "default ServiceAccount"),
    case("k8s-default-deny", "ref", drop("kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:core/v1:Namespace"), "default-deny"),
    case("k8s-default-deny", "ref", edit("kubernetes:networking.k8s.io/v1:NetworkPolicy",
                                         S("spec.podSelector", {"matchLabels": {"app": "x"}}), flag=("kubernetes:core/v1:Namespace", "")),
         "default-deny"),
    case("k8s-no-lb-service", "ref", edit("kubernetes:core/v1:Service", S("spec.type", "LoadBalancer")), "LoadBalancer"),
    case("k8s-no-lb-service", "ref", edit(RELEASE, S("values.service.type", "LoadBalancer")), "values.service.type"),
    case("k8s-replicas-pdb", "ref", edit(DEPLOY, S("spec.replicas", 1.0), "ref-gateway"), "at least 2", passes_with="dev"),
    case("k8s-replicas-pdb", "ref", drop(PDB, DEPLOY, "ref-gateway"), "no PodDisruptionBudget"),
    case("k8s-replicas-pdb", "ref", edit(PDB, S("spec.maxUnavailable", 0.0), "ref-gateway", flag=(DEPLOY, "ref-gateway")), "allows no disruption"),
    case("k8s-rbac-least-privilege", "ref", edit(ROLE, S("rules.0.verbs", ["*"])), "verbs contains '*'"),
    case("k8s-rbac-least-privilege", "ref", edit(ROLE, rbac_edit), "escalate"),
    case("k8s-rbac-least-privilege", "ref", edit("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", S("rules.0.resources", ["secrets"])),
         "secrets cluster-wide"),
    case("k8s-rbac-least-privilege", "ref", edit("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", S("roleRef.name", "cluster-admin")),
         "binds cluster-admin"),
    # --- tier budget (46) -----------------------------------------------------------------------------------
    case("tier-gpu-node-budget", "ref", edit(NODE_GROUP, S("scalingConfig.maxSize", 30.0), "ref-gpu"), "budget is 24"),
    case("tier-gpu-node-budget", "stack", edit(NODE_GROUP, S("scalingConfig.maxSize", 40.0), "gpu-a10g"), "budget is 24"),
    case("tier-instance-types", "ref", edit(NODE_GROUP, S("instanceTypes", ["p5.48xlarge"]), "ref-gpu"), "p5.48xlarge"),
    case("tier-instance-types", "ref", edit(NODE_GROUP, S("instanceTypes", ["p4d.24xlarge"]), "ref-gpu"), "p4d.24xlarge",
         passes_with="prod", config="dev"),
    case("tier-spot-capacity", "ref", edit(NODE_GROUP, S("capacityType", "SPOT"), "ref-gpu"), "SPOT", passes_with="dev"),
]



def sources(name: str, reference: Rendering, rendered: Callable[[str], Rendering]) -> Resources:
    return list(reference.resources if name == "ref" else rendered("prod").resources)


def test_reference_platform_passes_every_rule(reference: Rendering) -> None:
    assert evaluate(reference, "prod") == []


def test_every_rule_has_a_violation_case() -> None:
    assert {r.id for r in RULES} - {c.rule for c in CASES} == set()
    assert len(RULES) >= 40


@pytest.mark.parametrize("c", CASES, ids=[f"{c.rule}:{c.expect[:30]}" for c in CASES])
def test_rule_flags_weakened_resource(c: Case, reference: Rendering, rendered: Callable[[str], Rendering]) -> None:
    resources = sources(c.source, reference, rendered)
    mutated, target = c.mutation(resources)
    before = [v for v in run_rule(c.rule, resources, load_config(c.config)) if v.urn == target]
    after = [v for v in run_rule(c.rule, mutated, load_config(c.config)) if v.urn == target]
    assert before == [], f"compliant resource already flagged: {before}"
    assert after, f"{c.rule} did not flag {target}"
    assert any(c.expect in v.message for v in after), [v.message for v in after]
    assert {v.enforcement for v in after} == {RULES_BY_ID[c.rule].enforcement.value}
    if c.passes_with:
        tolerant = [v for v in run_rule(c.rule, mutated, load_config(c.passes_with)) if v.urn == target]
        assert tolerant == [], f"{c.passes_with} config should accept this: {tolerant}"


def test_rule_descriptions_cite_controls_and_remediation() -> None:
    for rule in RULES:
        assert rule.controls and all(c in rule.description for c in rule.controls), rule.id
        assert len(rule.remediation) > 20, rule.id
        assert rule.types and rule.policies_md, rule.id
