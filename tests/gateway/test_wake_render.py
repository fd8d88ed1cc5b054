"""The scale-from-zero path as every stack renders it: a model at zero is woken by a metric the gateway exports
under the requested model, within seconds of a request (scrape interval + KEDA poll), and a held request is
answered before the ALB's idle timeout; the gateway's readiness (probe and ALB health check) is not the
model-dependent endpoint."""

from __future__ import annotations

import re
from typing import Any, Callable

import pytest
import yaml

from infra.render import Rendering, known_stacks
from llm_gateway.metrics import METRIC_NAMES
from tests.workloads.k8s_support import kubernetes_objects

STACKS = known_stacks()
WAKE_SIGNAL_BUDGET_S = 15  # request → KEDA sees demand, worst case: one scrape interval plus one poll


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a whole-seconds duration, got {duration!r}"
    return int(match.group(1))


def objects(rendering: Rendering, kind: str, namespace: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in kubernetes_objects(rendering)
            if o["kind"] == kind and o["metadata"].get("namespace") == namespace}


@pytest.mark.parametrize("stack", STACKS)
def test_models_at_zero_wake_on_requested_model_demand_within_seconds(rendered: Callable[[str], Rendering],
                                                                     stack: str) -> None:
    rendering = rendered(stack)
    scaled = objects(rendering, "ScaledObject", "models")
    catalog = yaml.safe_load(objects(rendering, "ConfigMap", "gateway")["gateway-models"]["data"]["models.yaml"])
    monitor = objects(rendering, "ServiceMonitor", "gateway")["gateway"]["spec"]["endpoints"]
    assert len(monitor) == 1
    scrape_s = seconds(monitor[0]["interval"])
    assert seconds(monitor[0]["scrapeTimeout"]) < scrape_s  # Prometheus refuses a timeout above the interval
    idle_timeouts = [int(lb.inputs["idleTimeout"]) for lb in rendering.of_type("aws:lb/loadBalancer:LoadBalancer")]
    for entry in catalog["models"]:
        spec = scaled[entry["name"]]["spec"]
        if spec["minReplicaCount"] != 0:
            continue
        demand = [t for t in spec["triggers"] if "gateway_model_demand_total" in t["metadata"]["query"]]
        assert len(demand) == 1, entry["name"]
        meta = demand[0]["metadata"]
        assert demand[0]["type"] == "prometheus" and "gateway_model_demand_total" in METRIC_NAMES
        assert f'gateway_model_demand_total{{model="{entry["name"]}"}}' in meta["query"]
        assert meta["activationThreshold"] == "0"  # KEDA activates when the value is above this
        assert scrape_s + spec["pollingInterval"] <= WAKE_SIGNAL_BUDGET_S, entry["name"]
        # held, not refused at once; and answered before the ALB closes the idle connection
        assert entry["wake_timeout_s"] > 0, entry["name"]
        assert all(entry["wake_timeout_s"] < idle for idle in idle_timeouts), entry["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_readiness_is_not_the_model_dependent_endpoint(rendered: Callable[[str], Rendering],
                                                               stack: str) -> None:
    rendering = rendered(stack)
    pod = objects(rendering, "Deployment", "gateway")["gateway"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    groups = rendering.of_type("aws:lb/targetGroup:TargetGroup")
    assert groups
    for group in groups:  # the ALB registers targets by this check: it must not wait for a model to be up
        assert group.inputs["healthCheck"]["path"] in ("/health/ready", "/health/live"), group.name
