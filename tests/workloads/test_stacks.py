"""Every stack's cluster workloads, rendered through the real program: schema-valid, schedulable, observable.

Kubernetes built-in objects are validated with `kubernetes-validate --strict` for the stack's Kubernetes version;
custom resources (KEDA, Prometheus Operator, External Secrets, AWS Load Balancer Controller) against the CRD
schemas vendored in tests/workloads/crds (published upstream schemas, unknown fields rejected).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import kubernetes_validate
import pytest
import yaml

from components.observability import DCGM_METRICS, KUBE_STATE_METRICS, PROMETHEUS_BUILTIN_METRICS, VLLM_METRICS, alert_rules, dashboards
from infra.cli import stack_platform_config
from infra.config import PlatformConfig
from infra.manifests import write_manifests
from infra.render import Rendering, known_stacks
from infra.workload_config import gateway_importable
from tests.workloads.k8s_support import family, is_custom, kubernetes_objects, metric_names, validate_custom

gateway_importable()
from llm_gateway.catalog import load_catalog  # noqa: E402  (the gateway's own loader: one schema)
from llm_gateway.metrics import METRIC_NAMES, REGISTRY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STACKS = known_stacks()
Rendered = Callable[[str], Rendering]


def cfg_of(stack: str) -> PlatformConfig:
    return stack_platform_config(stack)


def objs(rendered: Rendered, stack: str, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
    return [o for o in kubernetes_objects(rendered(stack))
            if (kind is None or o["kind"] == kind) and (namespace is None or o["metadata"].get("namespace") == namespace)]


def by_name(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in items:
        out.setdefault(o["metadata"]["name"], []).append(o)
    return out


def test_every_stack_has_workloads() -> None:
    assert set(STACKS) >= {"dev", "small", "prod", "global"}
    for stack in STACKS:
        cfg = cfg_of(stack)
        assert cfg.workloads is not None and cfg.models, stack


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_is_schema_valid(rendered: Rendered, stack: str) -> None:
    version = f"{cfg_of(stack).cluster.version}.0"
    items = objs(rendered, stack)
    assert len(items) > 40
    builtin = 0
    for obj in items:
        where = f"{stack}: {obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        try:
            if is_custom(obj):
                validate_custom(obj)
            else:
                kubernetes_validate.validate(obj, version, strict=True)
                builtin += 1
        except Exception as err:  # noqa: BLE001 - report which object failed and why
            pytest.fail(f"{where}: {err}")
    assert builtin > 30


@pytest.mark.parametrize("stack", STACKS)
def test_namespaced_objects_live_in_declared_namespaces(rendered: Rendered, stack: str) -> None:
    declared = {o["metadata"]["name"] for o in objs(rendered, stack, "Namespace")} | {"kube-system"}
    assert {"gateway", "models", "monitoring"} <= declared
    for obj in objs(rendered, stack):
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in ("Namespace", "StorageClass"):  # cluster-scoped
            assert ns is None
        else:
            assert ns in declared, f"{obj['kind']} {obj['metadata']['name']} in undeclared namespace {ns}"
    for release in rendered(stack).of_type("kubernetes:helm.sh/v3:Release"):
        assert release.inputs["namespace"] in declared


def _node_groups(rendering: Rendering) -> list[dict[str, Any]]:
    """Rendered EKS node groups: labels and taints as the kubelet will register them, plus their GPU count."""
    out = []
    for r in rendering.of_type("aws:eks/nodeGroup:NodeGroup"):
        gpus = [t for t in r.inputs.get("tags", {}) if t == "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"]
        out.append({
            "name": r.name, "labels": dict(r.inputs.get("labels") or {}),
            "taints": [(t["key"], t.get("effect")) for t in r.inputs.get("taints") or []],
            "gpus": int(r.inputs["tags"][gpus[0]]) if gpus else 0,
            "max": int(r.inputs["scalingConfig"]["maxSize"]),
        })
    return out


def _schedulable(pod: dict[str, Any], group: dict[str, Any]) -> bool:
    labels = group["labels"]
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    terms = (((pod.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
    if terms:
        def term_ok(term: dict[str, Any]) -> bool:
            for e in term.get("matchExpressions", []):
                present = e["key"] in labels
                if e["operator"] == "DoesNotExist" and present:
                    return False
                if e["operator"] == "Exists" and not present:
                    return False
                if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
                    return False
            return True
        if not any(term_ok(t) for t in terms):
            return False
    tolerated = {(t["key"], t.get("effect")) for t in pod.get("tolerations") or []}
    return all((k, eff.replace("NO_SCHEDULE", "NoSchedule")) in tolerated for k, eff in group["taints"])


@pytest.mark.parametrize("stack", STACKS)
def test_gpu_requests_match_catalog_and_land_only_on_their_gpu_class(rendered: Rendered, stack: str) -> None:
    cfg = cfg_of(stack)
    rendering = rendered(stack)
    groups = _node_groups(rendering)
    deployments = by_name(objs(rendered, stack, "Deployment", "models"))
    assert set(deployments) == {m.name for m in cfg.models}
    for model in cfg.models:
        for dep in deployments[model.name]:  # one per region
            pod = dep["spec"]["template"]["spec"]
            res = pod["containers"][0]["resources"]
            assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == str(model.gpus_per_replica)
            fits = [g for g in groups if _schedulable(pod, g)]
            assert fits, f"{stack}: {model.name} fits no node group"
            for g in fits:
                assert g["labels"].get("llm-platform/gpu") == model.gpu, f"{model.name} could land on {g['name']}"
                sliced = g["labels"].get("nvidia.com/device-plugin.config")
                assert sliced == (f"time-sliced-{model.gpu_share}" if model.gpu_share > 1 else None)
                assert g["gpus"] * model.gpu_share >= model.gpus_per_replica
            config_groups = {g.name for g in cfg.node_groups if g.gpu == model.gpu}
            assert all(any(g["name"].endswith(f"-{n}-ng") for n in config_groups) for g in fits)
    gateway = objs(rendered, stack, "Deployment", "gateway")[0]["spec"]["template"]["spec"]
    assert not any(g["labels"].get("llm-platform/gpu") for g in groups if _schedulable(gateway, g))


@pytest.mark.parametrize("stack", STACKS)
def test_autoscaling_follows_the_catalog(rendered: Rendered, stack: str) -> None:
    cfg = cfg_of(stack)
    scaled = by_name(objs(rendered, stack, "ScaledObject", "models"))
    for model in cfg.models:
        for so in scaled[model.name]:
            spec = so["spec"]
            assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (model.replicas.min, model.replicas.max)
            queue = next(t for t in spec["triggers"] if t["name"] == "queue-depth")
            assert "vllm:num_requests_waiting" in queue["metadata"]["query"]
            assert queue["metadata"]["threshold"] == str(model.queue_threshold)
    assert cfg.workloads is not None
    for hpa in objs(rendered, stack, "HorizontalPodAutoscaler", "gateway"):
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (cfg.workloads.gateway.replicas.min, cfg.workloads.gateway.replicas.max)
    if stack == "dev":
        assert all(m.replicas.min == 0 for m in cfg.models)  # dev idles at zero GPUs


@pytest.mark.parametrize("stack", STACKS)
def test_generated_models_yaml_loads_with_the_gateway_loader(rendered: Rendered, stack: str, tmp_path: Path) -> None:
    cfg = cfg_of(stack)
    services = {o["metadata"]["name"] for o in objs(rendered, stack, "Service", "models")}
    for i, cm in enumerate(o for o in objs(rendered, stack, "ConfigMap", "gateway") if o["metadata"]["name"] == "gateway-models"):
        path = tmp_path / f"models-{i}.yaml"
        path.write_text(cm["data"]["models.yaml"])
        catalog = load_catalog(path)
        assert [e.name for e in catalog.models] == [m.name for m in cfg.models]
        for entry, model in zip(catalog.models, cfg.models):
            assert entry.kind == model.kind and entry.max_context == model.max_model_len
            assert entry.backends == [f"http://{model.name}.models.svc:8000"] and model.name in services
            assert entry.prices.prompt_per_1k == model.prices.prompt_per_1k
            assert list(entry.fallbacks) == model.fallbacks and list(entry.aliases) == model.aliases


@pytest.mark.parametrize("stack", STACKS)
def test_our_workloads_are_hardened_probed_and_sized(rendered: Rendered, stack: str) -> None:
    deployments = objs(rendered, stack, "Deployment")
    assert deployments
    for dep in deployments:
        name = f"{stack}: {dep['metadata']['namespace']}/{dep['metadata']['name']}"
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] not in ("", "default"), name
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert c["readinessProbe"] and c["livenessProbe"] and c["startupProbe"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"], name
            assert ":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest"), name


@pytest.mark.parametrize("stack", STACKS)
def test_no_generated_secret_in_clear_text(rendered: Rendered, stack: str) -> None:
    rendering = rendered(stack)
    dumped = json.dumps([r.to_json() for r in rendering.resources if r.type.startswith("kubernetes:")])
    assert rendering.generated_secrets
    for value in rendering.generated_secrets:
        assert value not in dumped


def allowed_metrics() -> set[str]:
    gateway_registry = {m.name for m in REGISTRY.collect()}
    known = (set(METRIC_NAMES) | gateway_registry | set(VLLM_METRICS) | set(DCGM_METRICS) | set(KUBE_STATE_METRICS)
             | set(PROMETHEUS_BUILTIN_METRICS))
    # prometheus_client reports counter families without `_total`; exposition adds it.
    return known | {f"{n}_total" for n in gateway_registry}


def test_metric_name_extraction_sees_every_selector() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(gateway_request_duration_seconds_bucket{model=~"a|b"}[5m]))) / clamp_min(x_total, 1e-9)'
    assert metric_names(expr) == {"gateway_request_duration_seconds_bucket", "x_total"}
    assert metric_names('sum by (model_name) (vllm:num_requests_waiting{model_name="m"}) > 100') == {"vllm:num_requests_waiting"}


def test_dashboards_are_grafana_json_using_exported_metrics() -> None:
    known = allowed_metrics()
    boards = dashboards()
    assert set(boards) == {"overview", "gpu", "usage", "backends", "vllm"}
    uids = set()
    for stem, board in boards.items():
        assert isinstance(board["title"], str) and board["uid"] not in uids and len(board["uid"]) <= 40
        uids.add(board["uid"])
        assert isinstance(board["schemaVersion"], int) and board["panels"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), stem
        for panel in board["panels"]:
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["targets"], f"{stem}: {panel['title']}"
            for target in panel["targets"]:
                for name in metric_names(target["expr"]):
                    assert family(name, known) in known, f"{stem}/{panel['title']}: {name} is exported by nothing we run"
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                for name in metric_names(var["query"]["query"].replace("label_values(", "(").split(",")[0] + ")"):
                    assert family(name, known) in known, f"{stem} variable {var['name']}: {name}"


def test_dashboards_cover_what_on_call_needs() -> None:
    text = {stem: json.dumps(board) for stem, board in dashboards().items()}
    for metric in ("gateway_requests_total", "gateway_request_duration_seconds_bucket"):
        assert metric in text["overview"]
    for metric in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP"):
        assert metric in text["gpu"]
    for metric in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total"):
        assert metric in text["vllm"]
    for metric in ("gateway_backend_healthy", "vllm:num_requests_waiting"):
        assert metric in text["backends"]
    assert "gateway_rejections_total" in text["usage"] and "gateway_tokens_total" in text["usage"]


@pytest.mark.parametrize("stack", STACKS)
def test_alerts_use_exported_metrics_and_link_existing_runbooks(rendered: Rendered, stack: str) -> None:
    known = allowed_metrics()
    rules = [rule for pr in objs(rendered, stack, "PrometheusRule", "monitoring") for g in pr["spec"]["groups"] for rule in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"GatewayBackendUnhealthy", "GPUMemoryHigh", "GatewayErrorRateHigh", "ModelQueueDepthHigh", "RateLimitRejectionsHigh",
            "GatewayLatencyP99High", "PodDown", "RedisUnreachable"} <= names
    for rule in rules:
        for name in metric_names(rule["expr"]):
            assert family(name, known) in known, f"{rule['alert']}: {name} is exported by nothing we run"
        runbook = rule["annotations"]["runbook_url"].rsplit("/", 1)[-1]
        assert (ROOT / "docs" / "runbooks" / runbook).is_file(), f"{rule['alert']}: missing runbook {runbook}"
    cfg = cfg_of(stack)
    backend = next(r for r in rules if r["alert"] == "GatewayBackendUnhealthy")
    for model in cfg.models:
        assert (model.name in backend["expr"]) == (model.replicas.min >= 1)  # idle-at-zero models are not "down"


def test_alert_thresholds_are_the_ones_on_call_agreed() -> None:
    from components.observability import ObservabilityArgs

    rules = {r["alert"]: r for r in alert_rules(ObservabilityArgs("monitoring", "gateway", "models", "https://x/runbooks", ["m"]))}
    assert rules["GatewayBackendUnhealthy"]["for"] == "2m"
    assert rules["GPUMemoryHigh"]["for"] == "5m" and rules["GPUMemoryHigh"]["expr"].endswith("> 0.97")  # 0.9 reserved + headroom
    assert rules["GatewayErrorRateHigh"]["for"] == "2m" and rules["GatewayErrorRateHigh"]["expr"].endswith("> 0.05")
    assert rules["ModelQueueDepthHigh"]["for"] == "1m" and rules["ModelQueueDepthHigh"]["expr"].endswith("> 100")
    assert rules["RateLimitRejectionsHigh"]["expr"].endswith("[1m])) > 100")
    assert rules["GatewayLatencyP99High"]["expr"].endswith("> 10")


def test_dashboards_are_shipped_as_sidecar_configmaps(rendered: Rendered) -> None:
    cms = [o for o in objs(rendered, "prod", "ConfigMap", "monitoring") if o["metadata"]["name"].startswith("dashboard-")]
    assert len(cms) == len(dashboards())
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, body), = cm["data"].items()
        assert key.endswith(".json") and json.loads(body)["uid"].startswith("llmp-")
    values = rendered("prod").one("kubernetes:helm.sh/v3:Release", "-kube-prometheus-stack").inputs["values"]
    assert values["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"


def test_manifests_command_writes_every_object(rendered: Rendered, tmp_path: Path) -> None:
    rendering = rendered("dev")
    files = write_manifests(rendering, tmp_path)
    docs = [yaml.safe_load(f.read_text()) for f in files]
    helm = [d for f, d in zip(files, docs) if f.parent.name == "helm"]
    plain = [d for f, d in zip(files, docs) if f.parent.name != "helm"]
    assert len(plain) == len(kubernetes_objects(rendering))
    assert {h["releaseName"] for h in helm} == {r.inputs["name"] for r in rendering.of_type("kubernetes:helm.sh/v3:Release")}
    assert all(h["chart"] and h["version"] and h["namespace"] and isinstance(h["values"], dict) for h in helm)
    for doc in plain:
        if not is_custom(doc):
            kubernetes_validate.validate(doc, "1.33.0", strict=True)
    secret = next(d for d in plain if d["kind"] == "Secret")
    assert secret["stringData"] == {"admin-user": "[secret]", "admin-password": "[secret]"}
    text = "\n".join(f.read_text() for f in files)
    for value in rendering.generated_secrets:
        assert value not in text


def test_manifests_cli_refuses_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli import main

    (tmp_path / "keep.txt").write_text("mine")
    assert main(["manifests", "dev", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().out
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("stack", STACKS)
def test_weights_come_from_the_model_bucket_through_a_read_only_role(rendered: Rendered, stack: str) -> None:
    cfg = cfg_of(stack)
    rendering = rendered(stack)
    deployments = by_name(objs(rendered, stack, "Deployment", "models"))
    for model in cfg.models:
        for dep in deployments[model.name]:
            args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            source = args[args.index("--model") + 1]
            if model.s3_prefix is not None:
                bucket, _, key = source.removeprefix("s3://").partition("/")
                assert source.startswith("s3://") and key == model.s3_prefix.rstrip("/") + "/"
                assert bucket and "None" not in bucket and "<" not in bucket, source  # the model bucket's resolved name
                assert args[args.index("--load-format") + 1] == "runai_streamer"
            else:
                assert source == model.hf_model and "--load-format" not in args
    for sa in objs(rendered, stack, "ServiceAccount", "models"):
        if sa["metadata"]["name"] == "model-server":
            role_arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            role = next(r for r in rendering.of_type("aws:iam/role:Role") if role_arn.endswith(f"/{r.name}"))
            assert "system:serviceaccount:models:model-server" in role.inputs["assumeRolePolicy"]
            policy = next(p for p in rendering.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role.name}-policy")
            actions = {a for s in json.loads(policy.inputs["policy"])["Statement"] for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
            assert actions and all(a.startswith(("s3:Get", "s3:List", "kms:Decrypt")) for a in actions), actions


def test_manifests_cli_writes_a_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli import main

    out = tmp_path / "dev"
    assert main(["manifests", "dev", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "wrote" in said and "Helm releases" in said
    deployments = sorted(p.name for p in out.rglob("deployment-*.yaml"))
    assert deployments == sorted(["deployment-gateway.yaml", *(f"deployment-{m.name}.yaml" for m in cfg_of("dev").models)])
    release = yaml.safe_load(next(out.rglob("helm/keda.yaml")).read_text())
    assert release["chart"] == "keda" and release["repository"] == "https://kedacore.github.io/charts"


def _dockerfile_uid(path: Path) -> int:
    users = [line.split()[1] for line in path.read_text().splitlines() if line.startswith("USER ")]
    return int(users[-1].split(":")[0])


def test_pods_run_as_the_user_their_image_declares(rendered: Rendered) -> None:
    expected = {"gateway": _dockerfile_uid(ROOT / "images" / "gateway" / "Dockerfile"),
                "models": _dockerfile_uid(ROOT / "images" / "vllm" / "Dockerfile")}
    for dep in objs(rendered, "prod", "Deployment"):
        ns = dep["metadata"]["namespace"]
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == expected[ns], dep["metadata"]["name"]
