"""Guards over every stack's rendered cluster half: what the Pulumi provider, Kubernetes, the pinned charts,
Alertmanager and checkov will judge on the first `pulumi up`.

- Await budget: a rollout that may outlast the provider's await has a timeout that covers it, or skips the await.
- Ordering: every custom resource, and every chart that creates one, waits for whatever installs its CRD.
- Service links: no pod gets `<SERVICE>_PORT`-style variables (vLLM reads `VLLM_*`).
- checkov: its Kubernetes checks pass on every object, or the object waives a check with a stated reason.
- Alertmanager: critical alerts reach a person, secrets stay out of the manifests.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from components.kube import NODE_SCALE_UP_SECONDS, PROVIDER_AWAIT_SECONDS, SKIP_AWAIT_ANNOTATION, manifest_from_inputs, startup_budget_seconds
from infra.manifests import write_manifests
from infra.render import ROOT_DIR, Rendering, RenderedResource, known_stacks, unwrap_secrets
from tests.workloads.k8s_support import _ints

STACKS = known_stacks()
Rendered = Callable[[str], Rendering]
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
WORKLOAD_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
POD_TEMPLATE_TYPES = (*WORKLOAD_TYPES, "kubernetes:apps/v1:DaemonSet", "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")
MON = "monitoring.coreos.com"
# API groups the API server serves itself (the pulumi-kubernetes type token says `core` for the legacy group).
BUILTIN_GROUPS = {"core", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "storage.k8s.io",
                  "rbac.authorization.k8s.io", "scheduling.k8s.io", "admissionregistration.k8s.io"}

# API group -> the chart whose release installs that CRD (each chart's crds/ directory, or its installCRDs switch):
# prometheus-community/helm-charts kube-prometheus-stack charts/crds/crds; kedacore/charts keda/templates/crds;
# external-secrets deploy/charts/external-secrets (installCRDs); aws/eks-charts aws-load-balancer-controller/crds.
CRD_SOURCE = {MON: "kube-prometheus-stack", "keda.sh": "keda", "external-secrets.io": "external-secrets",
              "elbv2.k8s.aws": "aws-load-balancer-controller"}
# Chart -> the custom resources its templates create: (values path that switches the template on, its default at the
# pinned chart version, API group). Read from each chart's templates/ and values.yaml at the pinned tag:
# dcgm-exporter deployment/templates/service-monitor.yaml (serviceMonitor.enabled: true by default);
# aws-load-balancer-controller 1.14.0 templates/ingressclass.yaml (IngressClassParams) and servicemonitor.yaml;
# cluster-autoscaler-chart-9.50.1 templates/servicemonitor.yaml, prometheusrule.yaml, vpa.yaml;
# metrics-server-helm-chart-3.13.0 templates/servicemonitor.yaml; keda v2.18.0 templates/{manager,metrics-server,
# webhooks}/{servicemonitor,podmonitor,prometheusrules}.yaml; external-secrets helm-chart-0.20.4
# templates/servicemonitor.yaml; kube-prometheus-stack always creates ServiceMonitors and PrometheusRules;
# nvidia-device-plugin creates none with gfd/nfd off.
CHART_CUSTOM_RESOURCES: dict[str, list[tuple[str | None, bool, str]]] = {
    "dcgm-exporter": [("serviceMonitor.enabled", True, MON)],
    "aws-load-balancer-controller": [("ingressClassParams.create", True, "elbv2.k8s.aws"), ("serviceMonitor.enabled", False, MON)],
    "cluster-autoscaler": [("serviceMonitor.enabled", False, MON), ("prometheusRule.enabled", False, MON),
                           ("vpa.enabled", False, "autoscaling.k8s.io")],
    "metrics-server": [("serviceMonitor.enabled", False, MON)],
    "keda": [(f"prometheus.{part}.{kind}.enabled", False, MON)
             for part, kinds in (("metricServer", ("serviceMonitor", "podMonitor")),
                                 ("operator", ("serviceMonitor", "podMonitor", "prometheusRules")),
                                 ("webhooks", ("serviceMonitor", "prometheusRules")))
             for kind in kinds],
    "external-secrets": [("serviceMonitor.enabled", False, MON)],
    "kube-prometheus-stack": [(None, True, MON)],
    "nvidia-device-plugin": [("gfd.enabled", False, "nfd.k8s-sigs.io"), ("nfd.enabled", False, "nfd.k8s-sigs.io")],
}


def _duration_seconds(value: str) -> int:
    """A Go duration as Pulumi's customTimeouts carry it (`3605s`, `1h2m`, `45m`)."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
    if not value or parts is None:
        raise ValueError(f"not a Go duration: {value!r}")
    h, m, s = (int(x or 0) for x in parts.groups())
    return h * 3600 + m * 60 + s


def test_duration_parser() -> None:
    assert _duration_seconds("3605s") == 3605 and _duration_seconds("1h2m3s") == 3723 and _duration_seconds("45m") == 2700
    with pytest.raises(ValueError):
        _duration_seconds("")


def _object(r: RenderedResource) -> dict[str, Any]:
    return dict(_ints(unwrap_secrets(manifest_from_inputs(r.inputs))))


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


# --- Await budget -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_every_rollout_outlasting_the_provider_await_has_a_timeout_or_skips_it(rendered: Rendered, stack: str) -> None:
    long_ones = 0
    for r in rendered(stack).resources:
        if r.type not in WORKLOAD_TYPES:
            continue
        obj = _object(r)
        where = f"{stack}: {obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        # Lower bound of a new replica's time to Ready: a node scale-up, the init waits and the probes (pull not counted).
        budget = startup_budget_seconds(_pod_spec(obj), image_pull_seconds=0)
        # Kubernetes' own rollout deadline must not call a replica that is still loading a failure.
        assert obj["spec"].get("progressDeadlineSeconds", PROVIDER_AWAIT_SECONDS) >= budget, where
        if budget <= PROVIDER_AWAIT_SECONDS:
            continue
        long_ones += 1
        if (obj["metadata"].get("annotations") or {}).get(SKIP_AWAIT_ANNOTATION) == "true":
            assert not r.custom_timeouts, f"{where}: skips the await, so a timeout would mean nothing"
            continue
        for op in ("create", "update"):
            assert op in r.custom_timeouts, f"{where}: startup budget {budget}s > the provider's {PROVIDER_AWAIT_SECONDS}s await, no {op} timeout"
            assert _duration_seconds(r.custom_timeouts[op]) >= budget, (where, r.custom_timeouts, budget)
    assert long_ones, f"{stack}: no rollout outlasts the provider's await (every model server should)"


def test_the_70b_model_waits_for_node_pull_and_load(rendered: Rendered) -> None:
    r = next(r for r in rendered("prod").of_type("kubernetes:apps/v1:Deployment") if r.name.endswith("-chat-70b-deployment"))
    # 600 s for a GPU node + 600 s for the ~10 GB image + 2400 s startup_seconds + one 5 s readiness period.
    assert r.custom_timeouts == {"create": "3605s", "update": "3605s"}
    assert _object(r)["spec"]["progressDeadlineSeconds"] == 3605


def test_models_idling_at_zero_skip_the_await_and_always_on_ones_wait(rendered: Rendered) -> None:
    from infra.cli import stack_platform_config

    for stack in ("dev", "prod"):
        minimum = {m.name: m.replicas.min for m in stack_platform_config(stack).models}
        for r in rendered(stack).of_type("kubernetes:apps/v1:Deployment"):
            obj = _object(r)
            if obj["metadata"]["namespace"] != "models":
                continue
            skips = (obj["metadata"].get("annotations") or {}).get(SKIP_AWAIT_ANNOTATION) == "true"
            assert skips == (minimum[obj["metadata"]["name"]] == 0), (stack, obj["metadata"]["name"])
            assert skips != bool(r.custom_timeouts)


def test_startup_budget_counts_node_pull_init_wait_and_probes() -> None:
    pod = {"initContainers": [{"name": "w", "env": [{"name": "WAIT_BOUND_SECONDS", "value": "300"}]}],
           "containers": [{"name": "c", "startupProbe": {"periodSeconds": 10, "failureThreshold": 12},
                           "readinessProbe": {"periodSeconds": 5}}]}
    assert startup_budget_seconds(pod, image_pull_seconds=100) == NODE_SCALE_UP_SECONDS + 100 + 300 + 120 + 5


# --- Ordering -----------------------------------------------------------------------------------------------------

def _installers(rendering: Rendering, provider: str | None) -> dict[str, RenderedResource]:
    """Releases of one cluster (one Kubernetes provider), by chart release name."""
    return {str(r.inputs["name"]): r for r in rendering.of_type(HELM_RELEASE) if r.provider == provider}


def _value(values: dict[str, Any], path: str, default: bool) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return bool(node)


@pytest.mark.parametrize("stack", STACKS)
def test_custom_resources_wait_for_the_release_installing_their_crd(rendered: Rendered, stack: str) -> None:
    rendering = rendered(stack)
    checked = 0
    for r in rendering.resources:
        if not r.custom or not r.type.startswith("kubernetes:") or r.type.startswith(("kubernetes:helm.sh/", "pulumi:")):
            continue
        group = r.type.split(":")[1].rsplit("/", 1)[0]
        if group in BUILTIN_GROUPS:
            continue
        assert group in CRD_SOURCE, f"{stack}: {r.type} {r.name}: no release installs its CRD"
        installer = _installers(rendering, r.provider).get(CRD_SOURCE[group])
        assert installer is not None, f"{stack}: {r.name} needs {CRD_SOURCE[group]} in its cluster"
        assert installer.urn in rendering.waits_for(r), f"{stack}: {r.type} {r.name} does not wait for {CRD_SOURCE[group]}"
        checked += 1
    assert checked >= 8, f"{stack}: expected ServiceMonitors, ScaledObjects, ExternalSecrets, a TargetGroupBinding"


@pytest.mark.parametrize("stack", STACKS)
def test_charts_creating_custom_resources_wait_for_the_release_installing_their_crd(rendered: Rendered, stack: str) -> None:
    rendering = rendered(stack)
    dependent = 0
    for release in rendering.of_type(HELM_RELEASE):
        chart = str(release.inputs["name"])
        assert chart in CHART_CUSTOM_RESOURCES, f"{chart}: read its templates and list the custom resources it creates"
        values = unwrap_secrets(release.inputs.get("values") or {})
        for path, default, group in CHART_CUSTOM_RESOURCES[chart]:
            if path is not None and not _value(values, path, default):
                continue
            assert group in CRD_SOURCE, f"{stack}: {chart} creates {group} resources ({path}) but nothing installs that CRD"
            if CRD_SOURCE[group] == chart:
                continue  # Helm installs a chart's own crds/ before its templates
            installer = _installers(rendering, release.provider)[CRD_SOURCE[group]]
            assert installer.urn in rendering.waits_for(release), f"{stack}: {chart} ({path}) does not wait for {CRD_SOURCE[group]}"
            dependent += 1
    assert dependent, f"{stack}: dcgm-exporter's ServiceMonitor should make it wait for kube-prometheus-stack"


# --- Service links --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_no_pod_gets_service_link_variables(rendered: Rendered, stack: str) -> None:
    pods = [(_object(r), r) for r in rendered(stack).resources if r.type in POD_TEMPLATE_TYPES]
    assert pods
    for obj, _ in pods:
        assert _pod_spec(obj).get("enableServiceLinks") is False, f"{stack}: {obj['kind']} {obj['metadata']['name']}"


# --- checkov --------------------------------------------------------------------------------------------------------

CHECKOV = ROOT_DIR / ".tools" / "checkov" / "bin" / "checkov"
SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
SKIP_VALUE = re.compile(r"^CKV_K8S_\d+=(?P<reason>.+)$")


def _unsafe_control(prod_dir: Path) -> dict[str, Any]:
    """The prod gateway Deployment with its waivers removed and a pull policy checkov rejects: must be flagged."""
    doc = yaml.safe_load(next(prod_dir.rglob("gateway/deployment-gateway.yaml")).read_text())
    doc["metadata"]["name"] = "unsafe-control"
    doc["metadata"].pop("annotations", None)
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    return dict(doc)


@pytest.fixture(scope="module")
def checkov_report(rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not CHECKOV.exists():
        # Normally installed by `make setup` (its own venv: its pins conflict with the program's); same pinned version.
        subprocess.run(["make", "tools"], cwd=ROOT_DIR, check=True, capture_output=True, timeout=900)
    root = tmp_path_factory.mktemp("manifests")
    for stack in STACKS:
        write_manifests(rendered(stack), root / stack)
    (root / "control").mkdir()
    (root / "control" / "deployment-unsafe.yaml").write_text(yaml.safe_dump(_unsafe_control(root / "prod")))
    # One run over every stack; no network (the guideline download is skipped).
    result = subprocess.run([str(CHECKOV), "-d", str(root), "--framework", "kubernetes", "--skip-download", "--compact", "-o", "json"],
                            capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(root)})
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return dict(report[0] if isinstance(report, list) else report)


def _file_stack(check: dict[str, Any]) -> str:
    return str(check["file_path"]).lstrip("/").split("/", 1)[0]


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_kubernetes_checks_pass_or_are_waived_with_a_reason(checkov_report: dict[str, Any], stack: str) -> None:
    results = checkov_report["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"] if _file_stack(c) == stack]
    assert not failed, f"{stack}: checkov fails\n" + "\n".join(failed)
    passed = [c for c in results["passed_checks"] if _file_stack(c) == stack]
    assert len(passed) > 300, f"{stack}: checkov ran only {len(passed)} checks"
    for c in results["skipped_checks"]:
        if _file_stack(c) == stack:
            assert len(str(c["check_result"].get("suppress_comment") or "").strip()) >= 20, f"{stack}: {c['check_id']} {c['resource']} waived without a reason"


def test_checkov_does_flag_an_unwaived_unsafe_deployment(checkov_report: dict[str, Any]) -> None:
    flagged = {c["check_id"] for c in checkov_report["results"]["failed_checks"] if _file_stack(c) == "control"}
    assert {"CKV_K8S_15", "CKV_K8S_43"} <= flagged  # pull policy, image digest


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_waivers_are_well_formed(rendered: Rendered, stack: str) -> None:
    for r in rendered(stack).resources:
        if r.type.startswith("kubernetes:") and not r.type.startswith("kubernetes:helm.sh/"):
            for key, value in ((_object(r).get("metadata") or {}).get("annotations") or {}).items():
                if key.startswith("checkov.io/"):
                    assert SKIP_ANNOTATION.match(key), key
                    match = SKIP_VALUE.match(str(value))
                    assert match and len(match["reason"]) >= 20, f"{stack}: {r.name} {key}={value}"


# --- Alertmanager -------------------------------------------------------------------------------------------------

AMLINT = ROOT_DIR / ".venv" / "bin" / "amlint"


def _prometheus_values(rendering: Rendering) -> list[dict[str, Any]]:
    return [dict(unwrap_secrets(r.inputs["values"])) for r in rendering.of_type(HELM_RELEASE) if r.inputs["name"] == "kube-prometheus-stack"]


def _route(values_file: Path, *labels: str) -> dict[str, Any]:
    result = subprocess.run([str(AMLINT), "route", "--input-format", "helm", str(values_file), *labels, "--format", "json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("stack", STACKS)
def test_alertmanager_config_is_valid_and_pages_a_person_for_critical_alerts(rendered: Rendered, stack: str, tmp_path: Path) -> None:
    for i, values in enumerate(_prometheus_values(rendered(stack))):
        path = tmp_path / f"kps-{i}.yaml"
        path.write_text(yaml.safe_dump(values))
        check = subprocess.run([str(AMLINT), "check", "--input-format", "helm", str(path), "--format", "json"],
                               capture_output=True, text=True, timeout=60)
        findings = json.loads(check.stdout or "[]")
        errors = [f for f in findings if f["level"] in ("error", "warning")]
        assert check.returncode == 0 and not errors, errors
        receivers = {r["name"]: r for r in values["alertmanager"]["config"]["receivers"]}
        for severity, alert in (("critical", "PodDown"), ("warning", "GPUMemoryHigh")):
            routed = _route(path, f"severity={severity}", f"alertname={alert}", "namespace=models")
            assert not routed["inhibited"]
            for name in routed["receivers"]:
                integrations = [k for k in receivers[name] if k.endswith("_configs") and receivers[name][k]]
                assert integrations, f"{stack}: {severity} alerts reach receiver {name!r}, which notifies nobody"
        assert _route(path, "alertname=Watchdog", "severity=none")["receivers"] == ["null"]  # the heartbeat pages nobody


@pytest.mark.parametrize("stack", STACKS)
def test_receiver_credentials_are_files_synced_by_external_secrets(rendered: Rendered, stack: str) -> None:
    rendering = rendered(stack)
    synced = {e["secretKey"]: e["remoteRef"]["key"]
              for r in rendering.resources if r.type == "kubernetes:external-secrets.io/v1:ExternalSecret"
              for e in _object(r)["spec"]["data"] if _object(r)["metadata"]["name"] == "alertmanager-receivers"}
    for values in _prometheus_values(rendering):
        am = values["alertmanager"]
        assert am["alertmanagerSpec"]["secrets"] == ["alertmanager-receivers"]
        text = json.dumps(am["config"])
        assert not re.search(r'"(routing_key|service_key|api_url|url)":', text), "a credential inline in the Alertmanager config"
        files = re.findall(r'_file": "/etc/alertmanager/secrets/alertmanager-receivers/([a-z_]+)"', text)
        assert files and set(files) <= set(synced), (files, synced)
    assert synced and all(not str(v).startswith(("https://", "http://")) for v in synced.values())  # references, not values


@pytest.mark.parametrize("stack", STACKS)
def test_eks_managed_control_plane_targets_are_not_scraped(rendered: Rendered, stack: str) -> None:
    # kube-prometheus-stack 78.3.0 values.yaml: kubeControllerManager / kubeScheduler / kubeEtcd / kubeProxy
    # `enabled: true` by default; templates/prometheus/rules-1.14/kubernetes-system-{controller-manager,scheduler,
    # kube-proxy}.yaml and etcd.yaml are gated on the same keys, so their "down" alerts go too.
    for values in _prometheus_values(rendered(stack)):
        for target in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
            assert values[target] == {"enabled": False}, (stack, target)
