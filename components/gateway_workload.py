"""`GatewayWorkload`: the OpenAI-compatible gateway on the cluster's CPU nodes.

Deployment (spread over AZs, hardened, probes on `/health/live` and `/health/ready`), its ServiceAccount (no
token), the `models.yaml` ConfigMap generated from the stack's catalog, secrets synced from Secrets Manager and
mounted as files, a ClusterIP Service, the TargetGroupBinding that puts pod IPs into the edge's ALB target group,
an HPA on CPU, a PDB and a ServiceMonitor. The container contract is in DESIGN.md ("The gateway container").

Shutdown: the pod first sleeps in `preStop` for `ALB_DEREGISTRATION_SECONDS`, the time from its endpoint's removal
to the ALB no longer routing new requests to it, then SIGTERM starts the gateway's drain (`GATEWAY_DRAIN_TIMEOUT_S`);
the grace period covers both plus a margin, so Kubernetes never kills a draining gateway. New pods take traffic only
once the ALB reports them healthy: the `gateway` namespace carries the load balancer controller's
`elbv2.k8s.aws/pod-readiness-gate-inject` label (components/namespaces.py), so each gateway pod gets a target-health
readiness gate and a rollout never removes the last healthy target before its replacement is registered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.irsa import ServiceAccountIdentity, service_account_role
from components.kube import (
    PROVIDER_AWAIT_SECONDS,
    RESTRICTED_CONTAINER_SECURITY,
    Manifest,
    apply_manifest,
    checkov_skips,
    metadata,
    pod_security,
    startup_budget_seconds,
)
from components.namespaces import GATEWAY_METRICS_PORT, GATEWAY_PORT
from components.secrets_sync import SecretSource, external_secret, namespace_secret_reader

APP = "gateway"
SECRET_NAME = "gateway-secrets"
MODELS_CONFIGMAP = "gateway-models"
# From a terminating pod's endpoint removal to the ALB no longer sending it new requests: the controller's reconcile,
# DeregisterTargets and the ALB's propagation take seconds to tens of seconds
# (kubernetes-sigs/aws-load-balancer-controller#3270). The preStop sleep lasts this long.
ALB_DEREGISTRATION_SECONDS = 30
# Prometheus scrapes the gateway this often: a request for a model at zero reaches KEDA's demand trigger one
# scrape plus one KEDA poll later (components/model_server.py WAKE_POLLING_SECONDS).
METRICS_SCRAPE_SECONDS = 5
GRACE_MARGIN_SECONDS = 15
# A small image (Python slim): a cold pull from same-region ECR takes seconds; this is the bound.
IMAGE_PULL_SECONDS = 120
DIGEST_REASON = "pinned by version tag in an ECR repository with immutable tags; the digest is recorded beside the tag"


@dataclass
class DatabaseSource:
    """Postgres: endpoint plus the Secrets Manager secret holding `username`/`password` (RDS-managed format)."""

    secret: SecretSource
    """Secret whose JSON has the two properties below."""
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    database: str
    username_property: str = "username"
    password_property: str = "password"
    iam_user: str | None = None
    """The gateway's own database role, authenticating with IAM tokens (the secret's master user then only runs
    migrations and creates that role); None = the gateway runs as the secret's user."""
    iam_connect_arn: pulumi.Input[str] | None = None
    """`arn:<partition>:rds-db:<region>:<account>:dbuser:<DbiResourceId>/<iam_user>`: what the gateway's IAM role may connect as."""


@dataclass
class GatewayWorkloadArgs:
    namespace: str
    image: str
    """Image reference with a pinned tag, e.g. `<account>.dkr.ecr.<region>.amazonaws.com/llm-platform/gateway:1.4.2`."""
    models_yaml: str
    """The model catalog file, already validated by the gateway's own loader."""
    region: str
    identity: ServiceAccountIdentity
    """OIDC provider for the namespace's secrets-reader role."""
    replicas_min: int
    replicas_max: int
    requests: dict[str, str]
    """`{"cpu": ..., "memory": ...}`."""
    limits: dict[str, str]
    target_cpu_percent: int = 70
    drain_seconds: int = 25
    run_as_user: int = 10001
    """UID of the gateway image's non-root user."""
    redis_url: pulumi.Input[str] | None = None
    """`rediss://host:port/0`; None = the gateway runs on its local (degraded) limiter only."""
    redis_cluster: bool = False
    redis_auth: SecretSource | None = None
    database: DatabaseSource | None = None
    admin_token: SecretSource | None = None
    """Existing admin-token secret; None with `admin_token_kms_key_arn` set = generate one."""
    admin_token_kms_key_arn: pulumi.Input[str] | None = None
    """CMK for a generated admin-token secret (Secrets Manager); the value never leaves Pulumi's encrypted state."""
    secret_kms_key_arns: Sequence[pulumi.Input[str]] = ()
    """CMKs encrypting those secrets (the reader may decrypt through Secrets Manager only)."""
    target_group_arn: pulumi.Input[str] | None = None
    """The edge's ALB target group (target type ip); None = no TargetGroupBinding (no public entry yet)."""
    keep_alive_seconds: int | None = None
    """HTTP keep-alive of the gateway; must exceed the ALB's idle timeout (None = the gateway's default)."""
    max_body_bytes: int | None = None
    """Largest request body the gateway accepts, 413 above (None = the gateway's default)."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Namespaces and add-ons (CRDs) that must exist first."""
    tags: dict[str, str] = field(default_factory=dict)


def selector_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "gateway"}


def secret_files(args: GatewayWorkloadArgs) -> tuple[dict[str, SecretSource], dict[str, pulumi.Input[str]]]:
    """ExternalSecret data entries and the template that shapes the mounted files."""
    data: dict[str, SecretSource] = {}
    template: dict[str, pulumi.Input[str]] = {}
    if args.redis_auth is not None:
        data["redis_password"] = args.redis_auth
        template["redis_password"] = "{{ .redis_password }}"
    if args.database is not None:
        db = args.database
        data["db_username"] = SecretSource(db.secret.arn, db.username_property)
        data["db_password"] = SecretSource(db.secret.arn, db.password_property)
        template["database_url"] = pulumi.Output.concat(
            "postgresql://{{ .db_username | urlquery }}:{{ .db_password | urlquery }}@",
            db.host, ":", pulumi.Output.from_input(db.port).apply(lambda p: str(int(p))), f"/{db.database}?sslmode=require",
        )
    if args.admin_token is not None:
        data["admin_token"] = args.admin_token
        template["admin_token"] = "{{ .admin_token }}"
    return data, template


def environment(args: GatewayWorkloadArgs, secret_keys: Sequence[str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "GATEWAY_PORT", "value": str(GATEWAY_PORT)},
        {"name": "GATEWAY_METRICS_PORT", "value": str(GATEWAY_METRICS_PORT)},
        {"name": "GATEWAY_MODELS_FILE", "value": "/etc/gateway/models.yaml"},
        {"name": "GATEWAY_SPILL_DIR", "value": "/var/lib/gateway/spill"},
        {"name": "GATEWAY_EXPECTED_REPLICAS", "value": str(args.replicas_min)},
        {"name": "GATEWAY_DRAIN_TIMEOUT_S", "value": str(args.drain_seconds)},
        {"name": "GATEWAY_REDIS_CLUSTER", "value": "true" if args.redis_cluster else "false"},
    ]
    if args.redis_url is not None:
        env.append({"name": "GATEWAY_REDIS_URL", "value": args.redis_url})
    if args.keep_alive_seconds is not None:
        env.append({"name": "GATEWAY_KEEP_ALIVE_S", "value": str(args.keep_alive_seconds)})
    if args.max_body_bytes is not None:
        env.append({"name": "GATEWAY_MAX_BODY_BYTES", "value": str(args.max_body_bytes)})
    if args.database is not None and args.database.iam_user is not None:
        env += [{"name": "GATEWAY_DATABASE_IAM_USER", "value": args.database.iam_user},
                {"name": "GATEWAY_DATABASE_IAM_REGION", "value": args.region}]
    files = {"redis_password": "GATEWAY_REDIS_PASSWORD_FILE", "database_url": "GATEWAY_DATABASE_URL_FILE",
             "admin_token": "GATEWAY_ADMIN_TOKEN_FILE"}
    env += [{"name": var, "value": f"/etc/gateway/secrets/{key}"} for key, var in files.items() if key in secret_keys]
    return env


def deployment(args: GatewayWorkloadArgs, secret_keys: Sequence[str]) -> Manifest:
    labels = selector_labels()
    checksum = hashlib.sha256(args.models_yaml.encode()).hexdigest()[:16]
    volumes: list[dict[str, Any]] = [
        {"name": "models", "configMap": {"name": MODELS_CONFIGMAP}},
        # Usage records that Postgres could not take yet; survives container restarts within the pod.
        {"name": "spill", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": "/etc/gateway/models.yaml", "subPath": "models.yaml", "readOnly": True},
        {"name": "spill", "mountPath": "/var/lib/gateway/spill"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if secret_keys:
        volumes.append({"name": "secrets", "secret": {"secretName": SECRET_NAME, "defaultMode": 0o440}})
        mounts.append({"name": "secrets", "mountPath": "/etc/gateway/secrets", "readOnly": True})
    container = {
        "name": APP,
        "image": args.image,
        "imagePullPolicy": "Always",
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": GATEWAY_METRICS_PORT, "protocol": "TCP"}],
        "env": environment(args, secret_keys),
        "resources": {"requests": dict(args.requests), "limits": dict(args.limits)},
        "startupProbe": {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 2, "failureThreshold": 30},
        "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        # Keep serving while the ALB deregisters this pod; SIGTERM (and the gateway's drain) comes after.
        "lifecycle": {"preStop": {"sleep": {"seconds": ALB_DEREGISTRATION_SECONDS}}},
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    dep: Manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(APP, args.namespace, labels,
                             checkov_skips({} if "@sha256:" in args.image else {"CKV_K8S_43": DIGEST_REASON})),
        "spec": {
            # No `replicas`: the HPA owns the count; Pulumi setting it would undo every scale event.
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"llm-platform/models-checksum": checksum}},
                "spec": {
                    "serviceAccountName": APP,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,  # no `<SERVICE>_PORT`-style variables from the namespace's Services
                    "securityContext": pod_security(args.run_as_user),
                    "terminationGracePeriodSeconds": termination_grace_seconds(args),
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                         "labelSelector": {"matchLabels": labels}},
                        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": labels}},
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    # A surge pod may wait for a new node; Kubernetes' default rollout deadline (600 s) would call that a failure.
    dep["spec"]["progressDeadlineSeconds"] = startup_budget(dep)
    return dep


def termination_grace_seconds(args: GatewayWorkloadArgs) -> int:
    """preStop (ALB deregistration) + the gateway's drain + a margin: Kubernetes never kills a draining gateway."""
    return ALB_DEREGISTRATION_SECONDS + args.drain_seconds + GRACE_MARGIN_SECONDS


def startup_budget(deployment_manifest: Manifest) -> int:
    """Longest a new replica may take to be Ready (a new node, the pull, startup), at least the provider's default."""
    return max(PROVIDER_AWAIT_SECONDS, startup_budget_seconds(deployment_manifest["spec"]["template"]["spec"], IMAGE_PULL_SECONDS))


def deploy_timeouts(deployment_manifest: Manifest) -> pulumi.CustomTimeouts:
    """`pulumi up` waits for the gateway's rollout as long as a new replica may take."""
    timeout = f"{startup_budget(deployment_manifest)}s"
    return pulumi.CustomTimeouts(create=timeout, update=timeout)


def manifests(args: GatewayWorkloadArgs, secret_keys: Sequence[str], role_arn: pulumi.Input[str] | None = None) -> list[Manifest]:
    ns, labels = args.namespace, selector_labels()
    account = metadata(APP, ns, labels)
    if role_arn is not None:  # IRSA: the pod gets this role's credentials (IAM database authentication)
        account["annotations"] = {**account.get("annotations", {}), "eks.amazonaws.com/role-arn": role_arn}
    objs: list[Manifest] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account, "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(MODELS_CONFIGMAP, ns, labels), "data": {"models.yaml": args.models_yaml}},
        deployment(args, secret_keys),
        {
            "apiVersion": "v1", "kind": "Service", "metadata": metadata(APP, ns, labels),
            "spec": {"type": "ClusterIP", "selector": labels, "ports": [
                {"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": GATEWAY_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ]},
        },
        {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata(APP, ns, labels),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                "minReplicas": args.replicas_min, "maxReplicas": args.replicas_max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": args.target_cpu_percent}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "policies": [{"type": "Percent", "value": 25, "periodSeconds": 60}]}},
            },
        },
        {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(APP, ns, labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
        {
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": metadata(APP, ns, labels),
            "spec": {"selector": {"matchLabels": labels}, "namespaceSelector": {"matchNames": [ns]},
                     "endpoints": [{"port": "metrics", "path": "/metrics", "interval": f"{METRICS_SCRAPE_SECONDS}s",
                                    "scrapeTimeout": f"{METRICS_SCRAPE_SECONDS - 1}s"}]},
        },
    ]
    if args.target_group_arn is not None:
        objs.append({
            "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding", "metadata": metadata(APP, ns, labels),
            "spec": {"serviceRef": {"name": APP, "port": GATEWAY_PORT}, "targetGroupARN": args.target_group_arn, "targetType": "ip"},
        })
    return objs


class GatewayWorkload(pulumi.ComponentResource):
    def __init__(self, name: str, args: GatewayWorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:workloads:GatewayWorkload", name, None, opts)
        self.admin_token_secret_arn: pulumi.Output[str] | None = None
        if args.admin_token is None and args.admin_token_kms_key_arn is not None:
            args = dataclasses.replace(args, admin_token=self._generated_admin_token(name, args))
        data, template = secret_files(args)
        secret_objects: list[pulumi.Resource] = []
        if data:
            arns = list({id(s.arn): s.arn for s in data.values()}.values())
            secret_objects = namespace_secret_reader(name, args.namespace, args.region, args.identity, arns,
                                                     args.secret_kms_key_arns, self, args.depends_on, args.tags)
            secret_objects.append(apply_manifest(
                f"{name}-externalsecret", external_secret(SECRET_NAME, args.namespace, data, template),
                pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *secret_objects]),
            ))
        role_arn = self._database_role(name, args)
        for obj in manifests(args, list(template), role_arn):
            depends = [*args.depends_on, *secret_objects] if obj["kind"] == "Deployment" else list(args.depends_on)
            timeouts = deploy_timeouts(obj) if obj["kind"] == "Deployment" else None
            apply_manifest(f"{name}-{obj['kind'].lower()}", obj,
                           pulumi.ResourceOptions(parent=self, depends_on=depends, custom_timeouts=timeouts))
        self.service_url = f"http://{APP}.{args.namespace}.svc:{GATEWAY_PORT}"
        self.register_outputs({"service_url": self.service_url, "admin_token_secret_arn": self.admin_token_secret_arn})

    def _database_role(self, name: str, args: GatewayWorkloadArgs) -> pulumi.Output[str] | None:
        """IRSA role allowed to connect to Postgres as the gateway's own database role, and nothing else."""
        db = args.database
        if db is None or db.iam_user is None:
            return None
        if db.iam_connect_arn is None:
            raise ValueError("database.iam_connect_arn: got None with an iam_user; allowed: the rds-db:connect ARN of that user")
        policy = pulumi.Output.from_input(db.iam_connect_arn).apply(lambda arn: json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Sid": "ConnectAsGatewayRole", "Effect": "Allow", "Action": "rds-db:connect", "Resource": arn}]}))
        return service_account_role(f"{name}-db", args.identity, args.namespace, APP, policy, self, args.tags).arn

    def _generated_admin_token(self, name: str, args: GatewayWorkloadArgs) -> SecretSource:
        token = random.RandomPassword(f"{name}-admin-token", length=48, special=False, opts=pulumi.ResourceOptions(parent=self))
        secret = aws.secretsmanager.Secret(
            f"{name}-admin-token",
            description="llm-platform gateway admin API token (read it with aws secretsmanager get-secret-value)",
            kms_key_id=args.admin_token_kms_key_arn,
            recovery_window_in_days=7,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.secretsmanager.SecretVersion(f"{name}-admin-token-value", secret_id=secret.id,
                                         secret_string=token.result, opts=pulumi.ResourceOptions(parent=secret))
        self.admin_token_secret_arn = secret.arn
        return SecretSource(arn=secret.arn)
