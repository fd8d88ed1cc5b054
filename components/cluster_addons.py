"""`ClusterAddons`: the Helm-installed add-ons the serving path needs, pinned, with least-privilege AWS access.

| add-on | why | AWS access |
| --- | --- | --- |
| aws-load-balancer-controller | registers gateway pod IPs in the edge's ALB target group (TargetGroupBinding) | IRSA: describe + register/deregister on that target group only |
| nvidia-device-plugin | advertises `nvidia.com/gpu` on GPU nodes (whole or time-sliced) | none |
| dcgm-exporter | GPU utilisation, memory, temperature (`DCGM_FI_*`) | none |
| cluster-autoscaler | adds/removes nodes; discovers node groups by ASG tags; scales GPU groups from zero | IRSA: describe, and resize only ASGs tagged for this cluster |
| metrics-server | CPU/memory for the gateway's HPA | none |
| keda | scales model servers on vLLM queue depth, to zero where allowed | none (queries Prometheus) |
| kube-prometheus-stack | Prometheus, Alertmanager, Grafana, kube-state-metrics, node-exporter | none |
| external-secrets | syncs Secrets Manager secrets into Kubernetes Secrets | none itself: each namespace's SecretStore assumes its own IRSA role, scoped to that namespace's secrets |

Every release is a `helm.v3.Release` with an exact chart version and repository, and an explicit release name so
service names are stable (KEDA and the dashboards address `kube-prometheus-stack-prometheus.monitoring.svc`).

Order: Helm installs a chart's own CRDs before its templates, but releases declared side by side install in
parallel. A release whose templates create custom resources of another chart's CRDs waits for that release
(`CRD_INSTALLERS`): dcgm-exporter's ServiceMonitor needs kube-prometheus-stack; kube-prometheus-stack waits for the
ExternalSecret holding Alertmanager's receiver credentials, which needs external-secrets.

EKS runs the control plane: controller-manager, scheduler and etcd are not scrapeable, and kube-proxy binds its
metrics to 127.0.0.1, so those kube-prometheus-stack targets (and their always-firing "down" rules) are disabled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.irsa import ServiceAccountIdentity, policy_document, service_account_role
from components.kube import DASHBOARD_LABEL, GPU_CLASS_LABEL, GPU_TAINT_KEY, apply_manifest, metadata
from components.observability import ALERTMANAGER_SECRET, AlertReceivers, alertmanager_config, alertmanager_secret
from components.secrets_sync import namespace_secret_reader

PROMETHEUS_RELEASE = "kube-prometheus-stack"
PROMETHEUS_URL_TEMPLATE = "http://kube-prometheus-stack-prometheus.{namespace}.svc:9090"
GRAFANA_ADMIN_SECRET = "grafana-admin"
# EKS 1.30+ ships no default StorageClass: Prometheus' volume names this one explicitly.
STORAGE_CLASS = "gp3-encrypted"
# Cluster-autoscaler minor must match the cluster's; these patch releases are the ones tested per minor.
# Latest patch per Kubernetes minor (infra/pins.py AUTOSCALER_IMAGE_PINS lists the same, with its source).
AUTOSCALER_IMAGE_TAGS = {"1.33": "v1.33.6", "1.34": "v1.34.5", "1.35": "v1.35.2"}
# API group of each CRD -> the release that installs it (from the charts' crds/ directories or installCRDs).
CRD_INSTALLERS = {
    "monitoring.coreos.com": "kube-prometheus-stack",
    "keda.sh": "keda",
    "external-secrets.io": "external-secrets",
    "elbv2.k8s.aws": "aws-load-balancer-controller",
}
# kube-prometheus-stack targets that do not exist on EKS (values keys at the pinned chart; each also gates its rules).
EKS_MANAGED_TARGETS = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
GPU_NODES_ONLY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": GPU_CLASS_LABEL, "operator": "Exists"}]}]
        }
    }
}


@dataclass
class HelmChart:
    repo: str
    """Chart repository URL."""
    version: str
    """Exact chart version."""


@dataclass
class ClusterAddonsArgs:
    cluster_name: pulumi.Input[str]
    region: str
    vpc_id: pulumi.Input[str]
    k8s_version: str
    """Kubernetes minor version; picks the matching cluster-autoscaler image."""
    identity: ServiceAccountIdentity
    """The cluster's OIDC provider, trusted by the add-ons' IRSA roles."""
    charts: Mapping[str, HelmChart]
    """Chart pins by release name (all eight add-ons)."""
    monitoring_namespace: str = "monitoring"
    keda_namespace: str = "keda"
    external_secrets_namespace: str = "external-secrets"
    target_group_arns: Sequence[pulumi.Input[str]] = ()
    """ALB target groups the load balancer controller may register pods in (the edge's gateway target group)."""
    gpu_share_ways: Sequence[int] = ()
    """Time-slicing configs the device plugin offers (`time-sliced-<N>`), for node groups labelled with one."""
    prometheus_retention_days: int = 15
    prometheus_storage_gib: int = 50
    alert_receivers: AlertReceivers | None = None
    """Where Alertmanager sends alerts; None = nowhere (only for component tests: stacks must configure one)."""
    secret_kms_key_arns: Sequence[pulumi.Input[str]] = ()
    """CMKs encrypting the receiver secrets (read through Secrets Manager only)."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Namespaces (and anything else) that must exist first."""
    tags: dict[str, str] = field(default_factory=dict)


def load_balancer_controller_policy(target_group_arns: Sequence[pulumi.Input[str]]) -> pulumi.Output[str]:
    """TargetGroupBinding only: read the ALB/VPC layout, register pods in the given target groups. No ALB creation."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeListeners",
                "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags",
                "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:DescribeAvailabilityZones",
            ],
            "Resource": "*",  # Describe calls support no resource-level scoping
        }
    ]
    if target_group_arns:
        statements.append({
            "Sid": "RegisterGatewayPods",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            "Resource": list(target_group_arns),
        })
    return policy_document(statements)


def cluster_autoscaler_policy(cluster_name: pulumi.Input[str], region: str) -> pulumi.Output[str]:
    """Describe freely (no resource-level support); resize/terminate only ASGs tagged as owned by this cluster."""
    return pulumi.Output.from_input(cluster_name).apply(lambda name: json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
                ],
                "Resource": "*",
            },
            {
                "Sid": "DescribeOwnNodegroups",
                "Effect": "Allow",
                "Action": ["eks:DescribeNodegroup"],
                "Resource": f"arn:aws:eks:{region}:*:nodegroup/{name}/*",
            },
            {
                "Sid": "ResizeOwnGroups",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "Resource": "*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}": "owned"}},
            },
        ],
    }))


def device_plugin_config(share_ways: Sequence[int]) -> dict[str, str]:
    """Named device-plugin configs; a node picks one with the label nvidia.com/device-plugin.config."""
    configs = {"whole-gpus": "version: v1\nflags:\n  migStrategy: none\n"}
    for ways in sorted(set(share_ways)):
        configs[f"time-sliced-{ways}"] = (
            "version: v1\nflags:\n  migStrategy: none\nsharing:\n  timeSlicing:\n    resources:\n"
            f"      - name: nvidia.com/gpu\n        replicas: {ways}\n"
        )
    return configs


class ClusterAddons(pulumi.ComponentResource):
    """Helm releases of the cluster add-ons; `ready` is what workloads using their CRDs depend on."""

    releases: dict[str, k8s.helm.v3.Release]
    ready: list[pulumi.Resource]
    prometheus_url: str

    def __init__(self, name: str, args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:workloads:ClusterAddons", name, None, opts)
        self._name = name
        self._args = args
        self.releases = {}
        self.prometheus_url = PROMETHEUS_URL_TEMPLATE.format(namespace=args.monitoring_namespace)

        lbc_role = service_account_role(
            f"{name}-lbc", args.identity, "kube-system", "aws-load-balancer-controller",
            load_balancer_controller_policy(args.target_group_arns), self, args.tags,
        )
        self._release("aws-load-balancer-controller", "kube-system", {
            "clusterName": args.cluster_name,
            "region": args.region,
            "vpcId": args.vpc_id,  # given, so the controller never needs the node's instance metadata
            "replicaCount": 2,
            "serviceAccount": {"create": True, "name": "aws-load-balancer-controller",
                               "annotations": {"eks.amazonaws.com/role-arn": lbc_role.arn}},
            # Only TargetGroupBinding is used: no Service mutation, no WAF/Shield lookups (the edge owns those).
            "enableServiceMutatorWebhook": False,
            "enableShield": False, "enableWaf": False, "enableWafv2": False,
            "podDisruptionBudget": {"maxUnavailable": 1},
        })

        self._release("nvidia-device-plugin", "kube-system", {
            "affinity": GPU_NODES_ONLY,
            "tolerations": [GPU_TOLERATION],
            "priorityClassName": "system-node-critical",
            "config": {"map": device_plugin_config(args.gpu_share_ways), "default": "whole-gpus"},
            "gfd": {"enabled": False},
            "nfd": {"enabled": False},
        })

        # Its ServiceMonitor is a monitoring.coreos.com custom resource: created after the release installing that CRD.
        dcgm_values: dict[str, Any] = {
            "affinity": GPU_NODES_ONLY,
            "tolerations": [GPU_TOLERATION],
            "serviceMonitor": {"enabled": True, "interval": "15s", "honorLabels": False},
            # Pod/namespace labels on every GPU metric, so a GPU maps to the model server using it.
            "kubernetes": {"enablePodLabels": True},
        }

        ca_role = service_account_role(
            f"{name}-autoscaler", args.identity, "kube-system", "cluster-autoscaler",
            cluster_autoscaler_policy(args.cluster_name, args.region), self, args.tags,
        )
        self._release("cluster-autoscaler", "kube-system", {
            "cloudProvider": "aws",
            "awsRegion": args.region,
            # The chart's default discovery tags (k8s.io/cluster-autoscaler/enabled and .../<cluster>) are the
            # ones EKS managed node groups put on their ASGs.
            "autoDiscovery": {"clusterName": args.cluster_name},
            "image": {"tag": AUTOSCALER_IMAGE_TAGS[args.k8s_version]},
            "rbac": {"serviceAccount": {"create": True, "name": "cluster-autoscaler",
                                        "annotations": {"eks.amazonaws.com/role-arn": ca_role.arn}}},
            "extraArgs": {
                "balance-similar-node-groups": True,
                "expander": "least-waste",
                "skip-nodes-with-system-pods": False,
                "scale-down-unneeded-time": "10m",
                "scale-down-delay-after-add": "10m",
                # Scale-from-zero needs nothing here: GPU groups at zero have no node to inspect, so the
                # autoscaler reads their GPUs, labels and taints from the ASG node-template tags NodeGroup sets.
            },
            "podDisruptionBudget": {"maxUnavailable": 1},
        })

        self._release("metrics-server", "kube-system", {"replicas": 2, "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}})

        self._release("keda", args.keda_namespace, {})

        external_secrets = self._release("external-secrets", args.external_secrets_namespace, {"installCRDs": True})
        alertmanager_values, alertmanager_objects = self._alertmanager(name, args, external_secrets)

        storage_class = apply_manifest(f"{name}-storageclass", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": metadata(STORAGE_CLASS, None),
            "provisioner": "ebs.csi.aws.com",
            "parameters": {"type": "gp3", "encrypted": "true"},
            # Metrics history survives a `pulumi destroy` of the release; delete the volume deliberately.
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": True,
        }, pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)))
        grafana_password = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False,
                                                 opts=pulumi.ResourceOptions(parent=self))
        grafana_secret = apply_manifest(f"{name}-grafana-admin", {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata(GRAFANA_ADMIN_SECRET, args.monitoring_namespace),
            "type": "Opaque",
            "stringData": {"admin-user": "admin", "admin-password": grafana_password.result},
        }, pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)))
        self._release("kube-prometheus-stack", args.monitoring_namespace, {
            "fullnameOverride": PROMETHEUS_RELEASE,
            "prometheus": {"prometheusSpec": {
                # Select every ServiceMonitor/PrometheusRule in the cluster, not only the chart's own.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "retention": f"{args.prometheus_retention_days}d",
                "storageSpec": {"volumeClaimTemplate": {"spec": {
                    "storageClassName": STORAGE_CLASS,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{args.prometheus_storage_gib}Gi"}},
                }}},
            }},
            "grafana": {
                "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
                "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "labelValue": "1",
                                           "searchNamespace": args.monitoring_namespace}},
            },
            "alertmanager": alertmanager_values,
            **{target: {"enabled": False} for target in EKS_MANAGED_TARGETS},
        }, extra_depends=[grafana_secret, storage_class, *alertmanager_objects])

        self._release("dcgm-exporter", "kube-system", dcgm_values,
                      extra_depends=[self.releases[CRD_INSTALLERS["monitoring.coreos.com"]]])

        self.ready = list(self.releases.values())
        self.register_outputs({
            "releases": {n: r.version for n, r in self.releases.items()},
            "load_balancer_controller_role_arn": lbc_role.arn,
            "cluster_autoscaler_role_arn": ca_role.arn,
        })

    def _alertmanager(self, name: str, args: ClusterAddonsArgs,
                      external_secrets: pulumi.Resource) -> tuple[dict[str, Any], list[pulumi.Resource]]:
        """kube-prometheus-stack `alertmanager` values, and the objects Alertmanager needs before it starts."""
        receivers = args.alert_receivers
        if receivers is None:
            return {}, []
        values: dict[str, Any] = {"config": alertmanager_config(receivers, args.region)}
        objects: list[pulumi.Resource] = []
        secret = alertmanager_secret(args.monitoring_namespace, receivers)
        if secret is not None:
            after = [*args.depends_on, external_secrets]
            arns = list({id(s.arn): s.arn for s in receivers.secret_files().values()}.values())
            store = namespace_secret_reader(f"{name}-am", args.monitoring_namespace, args.region, args.identity,
                                            arns, args.secret_kms_key_arns, self, after, args.tags)
            objects = [*store, apply_manifest(f"{name}-alertmanager-receivers", secret,
                                              pulumi.ResourceOptions(parent=self, depends_on=[*after, *store]))]
            values["alertmanagerSpec"] = {"secrets": [ALERTMANAGER_SECRET]}
        if receivers.sns_topic_arn:
            role = service_account_role(f"{name}-am-sns", args.identity, args.monitoring_namespace,
                                        f"{PROMETHEUS_RELEASE}-alertmanager",
                                        policy_document([{"Sid": "PublishAlerts", "Effect": "Allow", "Action": ["sns:Publish"],
                                                          "Resource": [receivers.sns_topic_arn]}]), self, args.tags)
            values["serviceAccount"] = {"annotations": {"eks.amazonaws.com/role-arn": role.arn}}
        return values, objects

    def _release(self, chart: str, namespace: str, values: dict[str, Any],
                 extra_depends: Sequence[pulumi.Resource] = ()) -> k8s.helm.v3.Release:
        pin = self._args.charts[chart]
        oci = pin.repo.startswith("oci://")
        release = k8s.helm.v3.Release(
            f"{self._name}-{chart}",
            name=chart,
            # An OCI chart is addressed by its full reference; a classic repository by name + repository URL.
            chart=f"{pin.repo.rstrip('/')}/{chart}" if oci else chart,
            version=pin.version,
            repository_opts=None if oci else k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo),
            namespace=namespace,
            create_namespace=False,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._args.depends_on, *extra_depends]),
        )
        self.releases[chart] = release
        return release


