"""A compliant reference platform, declared with the real pulumi-aws / pulumi-kubernetes SDKs and rendered through
`infra.render.render_function`: every resource type the pack checks, with the wire names, secrets and property
dependencies the engine would hand the policies. Rule tests mutate one of these resources and expect exactly
that rule to fire; the reference itself must pass every rule (mandatory and advisory) under the prod config.

Independent of the components being built in parallel, so a component change cannot hide a rule regression;
the stacks themselves are checked in test_stacks_policy.py.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

ACCOUNT = "123456789012"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-2222-4333-8444-555555555555"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/reference"
ECR = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
VISIBILITY = {"cloudwatch_metrics_enabled": True, "metric_name": "ref", "sampled_requests_enabled": True}


def _managed_rule(name: str, priority: int) -> dict[str, object]:
    return {
        "name": name, "priority": priority, "override_action": {"none": {}},
        "statement": {"managed_rule_group_statement": {"name": name, "vendor_name": "AWS"}},
        "visibility_config": {**VISIBILITY, "metric_name": name},
    }


def restricted_pod(name: str, image: str, gpu: bool = False) -> dict[str, object]:
    container: dict[str, object] = {
        "name": name,
        "image": image,
        "ports": [{"container_port": 8080}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"memory": "1Gi", **({"nvidia.com/gpu": "1"} if gpu else {})}},
        "security_context": {"allow_privilege_escalation": False, "read_only_root_filesystem": True,
                             "capabilities": {"drop": ["ALL"]}, "run_as_non_root": True},
        "readiness_probe": {"http_get": {"path": "/health/ready", "port": 8080}},
        "liveness_probe": {"http_get": {"path": "/health/live", "port": 8080}},
    }
    spec: dict[str, object] = {
        "service_account_name": name,
        "automount_service_account_token": False,
        "security_context": {"run_as_non_root": True, "run_as_user": 10001, "seccomp_profile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        spec["node_selector"] = {"llm-platform/gpu-class": "a10g"}
    return spec


def reference_program() -> None:
    # --- network ---------------------------------------------------------------------------------------------
    vpc = aws.ec2.Vpc("ref-vpc", cidr_block="10.0.0.0/16", enable_dns_hostnames=True)
    aws.ec2.FlowLog("ref-flow-log", vpc_id=vpc.id, traffic_type="ALL", log_destination_type="cloud-watch-logs",
                    log_destination=f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:flow", iam_role_arn=ROLE_ARN)
    aws.ec2.DefaultSecurityGroup("ref-default-sg", vpc_id=vpc.id)
    private = [aws.ec2.Subnet(f"ref-private-{i}", vpc_id=vpc.id, cidr_block=f"10.0.{i * 16}.0/20",
                              map_public_ip_on_launch=False, tags={"kubernetes.io/role/internal-elb": "1"}) for i in range(2)]
    public = [aws.ec2.Subnet(f"ref-public-{i}", vpc_id=vpc.id, cidr_block=f"10.0.{128 + i * 16}.0/20",
                             map_public_ip_on_launch=False, tags={"kubernetes.io/role/elb": "1"}) for i in range(2)]
    alb_sg = aws.ec2.SecurityGroup("ref-alb-sg", vpc_id=vpc.id, description="Public ALB: HTTPS and HTTP redirect from anywhere")
    for port in (443, 80):
        aws.vpc.SecurityGroupIngressRule(f"ref-alb-in-{port}", security_group_id=alb_sg.id, ip_protocol="tcp",
                                         from_port=port, to_port=port, cidr_ipv4="0.0.0.0/0",
                                         description=f"clients on {port}")
    data_sg = aws.ec2.SecurityGroup(
        "ref-data-sg", vpc_id=vpc.id, description="Redis and Postgres: only from the cluster",
        ingress=[{"protocol": "tcp", "from_port": 6379, "to_port": 6379, "cidr_blocks": ["10.0.0.0/16"],
                  "description": "Redis from the VPC"}],
        egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["10.0.0.0/16"],
                 "description": "replies inside the VPC"}],
    )
    aws.ec2.SecurityGroupRule("ref-alb-to-pods", type="egress", security_group_id=alb_sg.id, protocol="tcp",
                              from_port=8080, to_port=8080, cidr_blocks=["10.0.0.0/16"], description="to the gateway pods")

    # --- KMS, secrets -----------------------------------------------------------------------------------------
    key = aws.kms.Key("ref-key", description="platform key", enable_key_rotation=True, deletion_window_in_days=30)
    secret = aws.secretsmanager.Secret("ref-secret", kms_key_id=key.arn, description="gateway admin token")
    aws.secretsmanager.SecretRotation("ref-secret-rotation", secret_id=secret.id,
                                      rotation_lambda_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotate",
                                      rotation_rules={"automatically_after_days": 30})

    # --- EKS --------------------------------------------------------------------------------------------------
    cluster = aws.eks.Cluster(
        "ref-cluster", role_arn=ROLE_ARN, version="1.33",
        vpc_config={"subnet_ids": [s.id for s in private], "endpoint_private_access": True,
                    "endpoint_public_access": True, "public_access_cidrs": ["198.51.100.0/24"]},
        encryption_config={"provider": {"key_arn": key.arn}, "resources": ["secrets"]},
        enabled_cluster_log_types=["api", "audit", "authenticator", "controllerManager", "scheduler"],
        access_config={"authentication_mode": "API"},
    )
    template = aws.ec2.LaunchTemplate(
        "ref-launch-template",
        metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
        block_device_mappings=[{"device_name": "/dev/xvda",
                                "ebs": {"encrypted": "true", "kms_key_id": key.arn, "volume_size": 100, "volume_type": "gp3"}}],
        network_interfaces=[{"associate_public_ip_address": "false"}],
    )
    for name, types, max_size in (("ref-system", ["m6i.xlarge"], 3), ("ref-gpu", ["g5.2xlarge"], 4)):
        aws.eks.NodeGroup(
            name, cluster_name=cluster.name, node_role_arn=ROLE_ARN, subnet_ids=[s.id for s in private],
            instance_types=types, capacity_type="ON_DEMAND",
            scaling_config={"min_size": 0 if "gpu" in name else 1, "desired_size": 1, "max_size": max_size},
            launch_template={"id": template.id, "version": "1"},
        )

    # --- Redis, Postgres --------------------------------------------------------------------------------------
    token = random.RandomPassword("ref-redis-token", length=32, special=False)
    aws.elasticache.ReplicationGroup(
        "ref-redis", description="gateway state", engine="redis", node_type="cache.r7g.large", num_cache_clusters=2,
        at_rest_encryption_enabled=True, transit_encryption_enabled=True, transit_encryption_mode="required",
        auth_token=token.result, kms_key_id=key.arn, automatic_failover_enabled=True, multi_az_enabled=True,
        snapshot_retention_limit=7, auto_minor_version_upgrade=True, subnet_group_name="ref-redis-subnets",
        security_group_ids=[data_sg.id],
    )
    params = aws.rds.ParameterGroup("ref-pg-params", family="postgres16", description="TLS only",
                                    parameters=[{"name": "rds.force_ssl", "value": "1"}])
    aws.rds.Instance(
        "ref-postgres", engine="postgres", engine_version="16.4", instance_class="db.r6g.large", allocated_storage=50,
        username="platform", manage_master_user_password=True, master_user_secret_kms_key_id=key.arn,
        parameter_group_name=params.name, publicly_accessible=False, storage_encrypted=True, kms_key_id=key.arn,
        backup_retention_period=14, multi_az=True, deletion_protection=True, iam_database_authentication_enabled=True,
        enabled_cloudwatch_logs_exports=["postgresql", "upgrade"], monitoring_interval=60, monitoring_role_arn=ROLE_ARN,
        performance_insights_enabled=True, performance_insights_kms_key_id=key.arn, auto_minor_version_upgrade=True,
        copy_tags_to_snapshot=True, vpc_security_group_ids=[data_sg.id],
    )

    # --- S3 ---------------------------------------------------------------------------------------------------
    bucket = aws.s3.Bucket("ref-models")
    aws.s3.BucketPublicAccessBlock("ref-models-pab", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
                                   ignore_public_acls=True, restrict_public_buckets=True)
    aws.s3.BucketOwnershipControls("ref-models-owner", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"})
    aws.s3.BucketServerSideEncryptionConfiguration(
        "ref-models-sse", bucket=bucket.id,
        rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms", "kms_master_key_id": key.arn},
                "bucket_key_enabled": True}])
    aws.s3.BucketVersioning("ref-models-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"})
    aws.s3.BucketLifecycleConfiguration(
        "ref-models-lifecycle", bucket=bucket.id,
        rules=[{"id": "old-versions", "status": "Enabled", "filter": {},
                "noncurrent_version_expiration": {"noncurrent_days": 30}}])
    aws.s3.BucketPolicy("ref-models-policy", bucket=bucket.id, policy=bucket.arn.apply(lambda arn: json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                       "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}],
    })))

    # --- ALB, WAF ---------------------------------------------------------------------------------------------
    alb = aws.lb.LoadBalancer(
        "ref-alb", internal=False, load_balancer_type="application", security_groups=[alb_sg.id],
        subnets=[s.id for s in public], drop_invalid_header_fields=True, desync_mitigation_mode="defensive",
        enable_deletion_protection=True, access_logs={"bucket": bucket.bucket, "enabled": True, "prefix": "alb"},
    )
    aws.lb.Listener("ref-listener-tls", load_balancer_arn=alb.arn, port=443, protocol="HTTPS",
                    ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                    certificate_arn=f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/ref",
                    default_actions=[{"type": "fixed-response",
                                      "fixed_response": {"content_type": "text/plain", "status_code": "404"}}])
    aws.lb.Listener("ref-listener-redirect", load_balancer_arn=alb.arn, port=80, protocol="HTTP",
                    default_actions=[{"type": "redirect",
                                      "redirect": {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}])
    acl = aws.wafv2.WebAcl(
        "ref-acl", scope="REGIONAL", default_action={"allow": {}}, visibility_config=VISIBILITY,
        rules=[_managed_rule("AWSManagedRulesCommonRuleSet", 1), _managed_rule("AWSManagedRulesKnownBadInputsRuleSet", 2)],
    )
    aws.wafv2.WebAclAssociation("ref-acl-alb", resource_arn=alb.arn, web_acl_arn=acl.arn)
    aws.wafv2.WebAclLoggingConfiguration("ref-acl-logs", resource_arn=acl.arn,
                                         log_destination_configs=[f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:aws-waf-logs-ref"])

    # --- Kubernetes -------------------------------------------------------------------------------------------
    provider = k8s.Provider("ref-k8s", kubeconfig="{}")
    opts = pulumi.ResourceOptions(provider=provider)
    namespace = k8s.core.v1.Namespace("ref-ns", metadata={"name": "llm-gateway"}, opts=opts)
    ns = namespace.metadata.name
    k8s.networking.v1.NetworkPolicy("ref-default-deny", metadata={"name": "default-deny", "namespace": ns},
                                    spec={"pod_selector": {}, "policy_types": ["Ingress", "Egress"]}, opts=opts)
    k8s.core.v1.ServiceAccount("ref-gateway-sa", metadata={"name": "gateway", "namespace": ns},
                               automount_service_account_token=False, opts=opts)
    labels = {"app.kubernetes.io/name": "gateway"}
    k8s.apps.v1.Deployment(
        "ref-gateway", metadata={"name": "gateway", "namespace": ns},
        spec={"replicas": 3, "selector": {"match_labels": labels},
              "template": {"metadata": {"labels": labels}, "spec": restricted_pod("gateway", f"{ECR}/llm-gateway:1.4.2")}},
        opts=opts,
    )
    k8s.apps.v1.Deployment(
        "ref-vllm", metadata={"name": "vllm-chat", "namespace": ns},
        spec={"replicas": 2, "selector": {"match_labels": {"app.kubernetes.io/name": "vllm-chat"}},
              "template": {"metadata": {"labels": {"app.kubernetes.io/name": "vllm-chat"}},
                           "spec": restricted_pod("vllm-chat", "docker.io/vllm/vllm-openai:v0.11.0", gpu=True)}},
        opts=opts,
    )
    for app in ("gateway", "vllm-chat"):
        k8s.policy.v1.PodDisruptionBudget(
            f"ref-{app}-pdb", metadata={"name": app, "namespace": ns},
            spec={"max_unavailable": 1, "selector": {"match_labels": {"app.kubernetes.io/name": app}}}, opts=opts)
    k8s.core.v1.Service("ref-gateway-svc", metadata={"name": "gateway", "namespace": ns},
                        spec={"type": "ClusterIP", "selector": labels, "ports": [{"port": 80, "target_port": 8080}]}, opts=opts)
    k8s.rbac.v1.Role("ref-gateway-role", metadata={"name": "gateway-config", "namespace": ns},
                     rules=[{"api_groups": [""], "resources": ["configmaps"], "verbs": ["get", "watch"]}], opts=opts)
    k8s.rbac.v1.RoleBinding("ref-gateway-binding", metadata={"name": "gateway-config", "namespace": ns},
                            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": "gateway-config"},
                            subjects=[{"kind": "ServiceAccount", "name": "gateway", "namespace": "llm-gateway"}], opts=opts)
    k8s.rbac.v1.ClusterRole("ref-node-reader", metadata={"name": "node-reader"},
                            rules=[{"api_groups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}], opts=opts)
    k8s.helm.v3.Release("ref-autoscaler", chart="cluster-autoscaler", version="9.43.2", namespace="kube-system",
                        repository_opts={"repo": "https://kubernetes.github.io/autoscaler"},
                        values={"service": {"type": "ClusterIP"}}, opts=opts)
