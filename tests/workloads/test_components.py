"""Workload components rendered on their own (no stack config): what each one declares and how it is locked down."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from components.cluster_addons import ClusterAddons, ClusterAddonsArgs, HelmChart
from components.gateway_workload import DatabaseSource, GatewayWorkload, GatewayWorkloadArgs
from components.irsa import ServiceAccountIdentity
from components.model_server import ModelServers, ModelServersArgs, ModelServerSpec, vllm_args
from components.namespaces import Namespaces, NamespacesArgs
from components.secrets_sync import SecretSource
from infra.render import Rendering, render_function
from infra.workload_config import DEFAULT_CHARTS
from tests.workloads.k8s_support import kubernetes_objects

ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF"
IDENTITY = ServiceAccountIdentity(f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}", ISSUER)
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/gw/0123456789abcdef"
BUCKET_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::models", "arn:aws:s3:::models/*"]}]})


def chat_spec(**over: Any) -> ModelServerSpec:
    base: dict[str, Any] = dict(name="chat-7b", kind="chat", weights="Qwen/Qwen2.5-7B-Instruct", gpu_class="a10g",
                                gpus_per_replica=1, gpu_share=1, gpu_memory_utilization=0.85, max_model_len=8192,
                                replicas_min=0, replicas_max=2, queue_threshold=5, startup_seconds=1200,
                                cpu="3000m", memory="12Gi", shm_size="1Gi")
    base.update(over)
    return ModelServerSpec(**base)


def build_all() -> None:
    ns = Namespaces("t-ns", NamespacesArgs(vpc_cidr="10.20.0.0/16", k8s_version="1.33"))
    addons = ClusterAddons("t-addons", ClusterAddonsArgs(
        cluster_name="llmp-test", region="us-east-1", vpc_id="vpc-0abc", k8s_version="1.33", identity=IDENTITY,
        charts={k: HelmChart(v.repo, v.version) for k, v in DEFAULT_CHARTS.items()},
        target_group_arns=[TG_ARN], gpu_share_ways=[2], depends_on=ns.ready))
    ModelServers("t-models", ModelServersArgs(
        namespace="models", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-platform/vllm:v0.11.0-1",
        models=[chat_spec(), chat_spec(name="embed", kind="embedding", gpu_share=2, gpu_memory_utilization=0.4, replicas_min=1),
                chat_spec(name="big", weights="s3://models-bucket/llama-70b/", from_s3=True, gpu_class="a100", gpus_per_replica=4, replicas_min=2)],
        region="us-east-1", identity=IDENTITY, prometheus_url=addons.prometheus_url,
        model_bucket_read_policy=BUCKET_POLICY, hf_token=SecretSource("arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-AbCdEf"),
        depends_on=addons.ready))
    GatewayWorkload("t-gw", GatewayWorkloadArgs(
        namespace="gateway", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-platform/gateway:1.2.3",
        models_yaml="models: []\n", region="us-east-1", identity=IDENTITY, replicas_min=2, replicas_max=6,
        requests={"cpu": "500m", "memory": "512Mi"}, limits={"cpu": "2", "memory": "1Gi"}, drain_seconds=25,
        redis_url="rediss://master.redis.example:6379/0",
        redis_auth=SecretSource("arn:aws:secretsmanager:us-east-1:123456789012:secret:redis-AbCdEf"),
        database=DatabaseSource(SecretSource("arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-AbCdEf"),
                                host="db.example.internal", port=5432, database="gateway"),
        admin_token=SecretSource("arn:aws:secretsmanager:us-east-1:123456789012:secret:admin-AbCdEf", "token"),
        secret_kms_key_arns=["arn:aws:kms:us-east-1:123456789012:key/abc"],
        target_group_arn=TG_ARN, depends_on=addons.ready))


@pytest.fixture(scope="module")
def rendering() -> Rendering:
    return render_function(build_all)


def objects(rendering: Rendering, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [o for o in kubernetes_objects(rendering) if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(rendering: Rendering, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(rendering, kind, namespace) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def role_trust(rendering: Rendering, service_account: str) -> dict[str, Any]:
    for r in rendering.of_type("aws:iam/role:Role"):
        doc = json.loads(r.inputs["assumeRolePolicy"])
        sub = doc["Statement"][0]["Condition"]["StringEquals"][f"{ISSUER}:sub"]
        if sub.endswith(f":{service_account}"):
            return {"role": r, "doc": doc, "sub": sub}
    raise LookupError(service_account)


def role_policy(rendering: Rendering, role_name: str) -> dict[str, Any]:
    found = [p for p in rendering.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role_name}-policy"]
    assert len(found) == 1
    return json.loads(found[0].inputs["policy"])


# --- add-ons ------------------------------------------------------------------------------------------------

def test_every_addon_is_a_pinned_helm_release_with_an_explicit_name(rendering: Rendering) -> None:
    releases = {r.inputs["name"]: r.inputs for r in rendering.of_type("kubernetes:helm.sh/v3:Release")}
    assert set(releases) == set(DEFAULT_CHARTS)
    for name, inputs in releases.items():
        pin = DEFAULT_CHARTS[name]  # type: ignore[index]
        assert inputs["version"] == pin.version
        if pin.repo.startswith("oci://"):
            assert inputs["chart"] == f"{pin.repo}/{name}" and "repositoryOpts" not in inputs
        else:
            assert inputs["chart"] == name and inputs["repositoryOpts"]["repo"] == pin.repo
        assert inputs["namespace"] not in ("default", "", None)


def test_irsa_roles_trust_exactly_one_service_account_and_sts_audience(rendering: Rendering) -> None:
    for namespace, account in [("kube-system", "aws-load-balancer-controller"), ("kube-system", "cluster-autoscaler"),
                               ("gateway", "secrets-reader"), ("models", "secrets-reader"), ("models", "model-server")]:
        trusts = [r for r in rendering.of_type("aws:iam/role:Role")
                  if json.loads(r.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"][f"{ISSUER}:sub"]
                  == f"system:serviceaccount:{namespace}:{account}"]
        assert len(trusts) == 1, (namespace, account)
        statement = json.loads(trusts[0].inputs["assumeRolePolicy"])["Statement"]
        assert len(statement) == 1
        assert statement[0]["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement[0]["Principal"] == {"Federated": IDENTITY.oidc_provider_arn}
        assert statement[0]["Condition"]["StringEquals"][f"{ISSUER}:aud"] == "sts.amazonaws.com"


def test_load_balancer_controller_may_register_only_in_the_gateway_target_group(rendering: Rendering) -> None:
    trust = role_trust(rendering, "aws-load-balancer-controller")
    policy = role_policy(rendering, trust["role"].name)
    writes = [s for s in policy["Statement"] if any(not a.split(":")[1].startswith("Describe") for a in s["Action"])]
    assert len(writes) == 1
    assert sorted(writes[0]["Action"]) == ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"]
    assert writes[0]["Resource"] == [TG_ARN]
    assert not any(a.startswith(("iam:", "elasticloadbalancing:Create", "ec2:Authorize", "wafv2:", "shield:"))
                   for s in policy["Statement"] for a in s["Action"])


def test_cluster_autoscaler_resizes_only_groups_tagged_for_its_cluster(rendering: Rendering) -> None:
    trust = role_trust(rendering, "cluster-autoscaler")
    policy = role_policy(rendering, trust["role"].name)
    mutating = [s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"]]
    assert len(mutating) == 1
    assert mutating[0]["Condition"] == {"StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/llmp-test": "owned"}}
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for s in policy["Statement"] if s is not mutating[0] for a in s["Action"])


def test_gpu_addons_run_only_on_gpu_nodes_and_tolerate_the_taint(rendering: Rendering) -> None:
    for name in ("nvidia-device-plugin", "dcgm-exporter"):
        values = rendering.one("kubernetes:helm.sh/v3:Release", f"-{name}").inputs["values"]
        terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [{"key": "llm-platform/gpu", "operator": "Exists"}]}]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]


def test_device_plugin_offers_whole_and_time_sliced_configs(rendering: Rendering) -> None:
    config = rendering.one("kubernetes:helm.sh/v3:Release", "-nvidia-device-plugin").inputs["values"]["config"]
    assert config["default"] == "whole-gpus"
    sliced = yaml.safe_load(config["map"]["time-sliced-2"])
    assert sliced["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert "sharing" not in yaml.safe_load(config["map"]["whole-gpus"])


def test_cluster_autoscaler_matches_the_cluster_minor(rendering: Rendering) -> None:
    values = rendering.one("kubernetes:helm.sh/v3:Release", "-cluster-autoscaler").inputs["values"]
    assert values["image"]["tag"].startswith("v1.33.")
    assert values["autoDiscovery"]["clusterName"] == "llmp-test"


def test_grafana_admin_password_is_generated_and_never_in_clear_text(rendering: Rendering) -> None:
    values = rendering.one("kubernetes:helm.sh/v3:Release", "-kube-prometheus-stack").inputs["values"]
    assert values["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    assert rendering.generated_secrets
    secret = rendering.one("kubernetes:core/v1:Secret", "grafana-admin")
    dumped = json.dumps([r.to_json() for r in rendering.resources])
    for value in rendering.generated_secrets:
        assert value not in dumped
    assert "[secret]" in json.dumps(secret.to_json())


# --- namespaces and network policies ------------------------------------------------------------------------

def test_workload_namespaces_enforce_restricted(rendering: Rendering) -> None:
    for name in ("gateway", "models"):
        labels = one(rendering, "Namespace", name)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.33"


def test_default_deny_then_only_the_serving_path(rendering: Rendering) -> None:
    for ns in ("gateway", "models"):
        deny = one(rendering, "NetworkPolicy", "default-deny", ns)["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    alb = one(rendering, "NetworkPolicy", "gateway-from-alb", "gateway")["spec"]
    assert alb["ingress"] == [{"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8080}]}]
    to_models = one(rendering, "NetworkPolicy", "gateway-to-models", "gateway")["spec"]["egress"][0]
    assert to_models["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert to_models["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "models"}}
    data = one(rendering, "NetworkPolicy", "gateway-to-data", "gateway")["spec"]["egress"]
    assert {p["port"] for rule in data for p in rule["ports"]} == {6379, 5432}
    from_gateway = one(rendering, "NetworkPolicy", "models-from-gateway", "models")["spec"]["ingress"][0]
    assert from_gateway["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}
    for ns in ("gateway", "models"):
        dns = one(rendering, "NetworkPolicy", "allow-dns", ns)["spec"]["egress"][0]
        assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    prom = one(rendering, "NetworkPolicy", "models-from-prometheus", "models")["spec"]["ingress"][0]
    assert prom["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


# --- model servers ------------------------------------------------------------------------------------------

def test_vllm_args_follow_the_model_kind() -> None:
    chat = vllm_args(chat_spec())
    assert chat[:4] == ["--model", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "chat-7b"]
    assert "--enable-prefix-caching" in chat and "--runner" not in chat
    embed = vllm_args(chat_spec(kind="embedding"))
    assert embed[embed.index("--runner") + 1] == "pooling" and embed[embed.index("--convert") + 1] == "embed"
    rerank = vllm_args(chat_spec(kind="rerank"))
    assert rerank[rerank.index("--convert") + 1] == "classify"
    assert "--load-format" not in chat and chat[chat.index("--download-dir") + 1] == "/models"
    big = vllm_args(chat_spec(weights="s3://b/m/", from_s3=True, gpus_per_replica=4, max_model_len=32768, extra_args=["--dtype", "bfloat16"]))
    assert big[big.index("--tensor-parallel-size") + 1] == "4"
    assert big[big.index("--max-model-len") + 1] == "32768"
    assert big[big.index("--load-format") + 1] == "runai_streamer"
    assert big[-2:] == ["--dtype", "bfloat16"]


def test_model_pods_request_their_gpus_and_select_their_class(rendering: Rendering) -> None:
    big = one(rendering, "Deployment", "big", "models")["spec"]["template"]["spec"]
    res = big["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "4"
    assert big["nodeSelector"] == {"llm-platform/gpu": "a100"}
    expr = big["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert expr == [{"key": "nvidia.com/device-plugin.config", "operator": "DoesNotExist"}]
    embed = one(rendering, "Deployment", "embed", "models")["spec"]["template"]["spec"]
    assert embed["nodeSelector"] == {"llm-platform/gpu": "a10g", "nvidia.com/device-plugin.config": "time-sliced-2"}
    assert "affinity" not in embed
    for spec in (big, embed):
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_model_pods_have_shm_probes_and_no_replica_count(rendering: Rendering) -> None:
    dep = one(rendering, "Deployment", "chat-7b", "models")
    assert "replicas" not in dep["spec"]  # KEDA owns it
    pod = dep["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    c = pod["containers"][0]
    assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1200
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}} in c["env"]


def test_model_service_account_reads_the_bucket_through_irsa(rendering: Rendering) -> None:
    sa = one(rendering, "ServiceAccount", "model-server", "models")
    trust = role_trust(rendering, "model-server")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == f"arn:aws:iam::123456789012:role/{trust['role'].name}"
    assert role_policy(rendering, trust["role"].name) == json.loads(BUCKET_POLICY)
    assert sa["automountServiceAccountToken"] is False


def test_keda_scales_on_vllm_queue_and_wakes_idle_models_on_gateway_demand(rendering: Rendering) -> None:
    chat = one(rendering, "ScaledObject", "chat-7b", "models")["spec"]
    assert chat["minReplicaCount"] == 0 and chat["maxReplicaCount"] == 2
    queue = next(t for t in chat["triggers"] if t["name"] == "queue-depth")
    assert queue["metadata"]["query"] == 'sum(vllm:num_requests_waiting{namespace="models",model_name="chat-7b"})'
    assert queue["metadata"]["threshold"] == "5"
    assert queue["metadata"]["serverAddress"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    demand = next(t for t in chat["triggers"] if t["name"] == "gateway-demand")
    assert 'gateway_model_demand_total{model="chat-7b"}' in demand["metadata"]["query"]
    assert demand["metadata"]["activationThreshold"] == "0"
    always_on = one(rendering, "ScaledObject", "big", "models")["spec"]
    assert [t["name"] for t in always_on["triggers"]] == ["queue-depth"]
    assert always_on["fallback"]["replicas"] == 2


# --- gateway ------------------------------------------------------------------------------------------------

def test_gateway_mounts_secrets_as_files_from_external_secrets(rendering: Rendering) -> None:
    es = one(rendering, "ExternalSecret", "gateway-secrets", "gateway")["spec"]
    assert es["secretStoreRef"] == {"name": "aws-secrets-manager", "kind": "SecretStore"}
    template = es["target"]["template"]["data"]
    assert set(template) == {"redis_password", "database_url", "admin_token"}
    assert template["database_url"] == ("postgresql://{{ .db_username | urlquery }}:{{ .db_password | urlquery }}"
                                        "@db.example.internal:5432/gateway?sslmode=require")
    pod = one(rendering, "Deployment", "gateway", "gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GATEWAY_REDIS_PASSWORD_FILE"] == "/etc/gateway/secrets/redis_password"
    assert env["GATEWAY_DATABASE_URL_FILE"] == "/etc/gateway/secrets/database_url"
    assert env["GATEWAY_ADMIN_TOKEN_FILE"] == "/etc/gateway/secrets/admin_token"
    assert env["GATEWAY_MODELS_FILE"] == "/etc/gateway/models.yaml"
    assert not any("valueFrom" in e for e in pod["containers"][0]["env"])  # files, not env secrets
    store = one(rendering, "SecretStore", "aws-secrets-manager", "gateway")["spec"]["provider"]["aws"]
    assert store["auth"] == {"jwt": {"serviceAccountRef": {"name": "secrets-reader"}}}


def test_gateway_secrets_reader_reads_only_its_secrets(rendering: Rendering) -> None:
    trusts = [r for r in rendering.of_type("aws:iam/role:Role")
              if "system:serviceaccount:gateway:secrets-reader" in r.inputs["assumeRolePolicy"]]
    policy = role_policy(rendering, trusts[0].name)
    read = policy["Statement"][0]
    assert sorted(read["Action"]) == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    assert sorted(read["Resource"]) == sorted([
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:redis-AbCdEf",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-AbCdEf",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin-AbCdEf",
    ])
    kms = policy["Statement"][1]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}


def test_gateway_grace_period_outlasts_prestop_and_drain(rendering: Rendering) -> None:
    pod = one(rendering, "Deployment", "gateway", "gateway")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int({e["name"]: e["value"] for e in c["env"]}["GATEWAY_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    zones = [t for t in pod["topologySpreadConstraints"] if t["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zones and zones[0]["whenUnsatisfiable"] == "DoNotSchedule"


def test_gateway_is_bound_to_the_edge_target_group_and_scaled_by_hpa(rendering: Rendering) -> None:
    tgb = one(rendering, "TargetGroupBinding", "gateway", "gateway")["spec"]
    assert tgb == {"serviceRef": {"name": "gateway", "port": 8080}, "targetGroupARN": TG_ARN, "targetType": "ip"}
    hpa = one(rendering, "HorizontalPodAutoscaler", "gateway", "gateway")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    pdb = one(rendering, "PodDisruptionBudget", "gateway", "gateway")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert one(rendering, "Service", "gateway", "gateway")["spec"]["type"] == "ClusterIP"


def test_gateway_without_edge_or_data_still_renders() -> None:
    def build() -> None:
        GatewayWorkload("solo", GatewayWorkloadArgs(
            namespace="gateway", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-platform/gateway:1.2.3",
            models_yaml="models: []\n", region="us-east-1", identity=IDENTITY, replicas_min=1, replicas_max=2,
            requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "1", "memory": "256Mi"}))

    r = render_function(build)
    kinds = sorted(o["kind"] for o in kubernetes_objects(r))
    assert "TargetGroupBinding" not in kinds and "ExternalSecret" not in kinds
    pod = one(r, "Deployment", "gateway")["spec"]["template"]["spec"]
    assert not any(v["name"] == "secrets" for v in pod["volumes"])


def test_prometheus_storage_uses_an_encrypted_gp3_class(rendering: Rendering) -> None:
    sc = one(rendering, "StorageClass", "gp3-encrypted")
    assert sc["provisioner"] == "ebs.csi.aws.com" and sc["parameters"] == {"type": "gp3", "encrypted": "true"}
    values = rendering.one("kubernetes:helm.sh/v3:Release", "-kube-prometheus-stack").inputs["values"]
    claim = values["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3-encrypted"
