"""The model servers against vLLM at the pinned release (infra/pins.py VLLM_VERSION).

Flags, their choices and metric names are vendored from the release itself (infra/vllm_cli/v<version>.json, read from
the PyPI wheel's vllm/engine/arg_utils.py, vllm/entrypoints/common/cli_args.py and vllm/v1/metrics/). Guards over every
stack: each argument a model-server container passes is a flag of that vLLM (with an allowed value where vLLM
restricts it), and each `vllm:` series a dashboard, alert or KEDA query reads is one that vLLM exposes.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from components.observability import VLLM_METRICS
from infra.config import ConfigError, parse_platform_config
from infra.pins import VLLM_VERSION, vllm_cli, vllm_exposed_metrics
from infra.render import Rendering, read_stack_config
from tests.workloads.k8s_support import kubernetes_objects, metric_names

ROOT = Path(__file__).resolve().parents[1]
STACKS = ("dev", "small", "prod", "global")
Rendered = Callable[[str], Rendering]


def test_image_and_stacks_run_the_pinned_vllm_release() -> None:
    froms = [line.split()[1] for line in (ROOT / "images" / "vllm" / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    assert froms == [f"vllm/vllm-openai:v{VLLM_VERSION}"]
    for stack in STACKS:
        tag = read_stack_config(stack)["llm-platform:workloads"]["vllm_image"]["tag"]
        assert re.fullmatch(rf"v{re.escape(VLLM_VERSION)}-\d+", tag), (stack, tag)
    assert vllm_cli()["vllm_version"] == VLLM_VERSION


def test_vendored_cli_has_the_flag_changes_of_the_release() -> None:
    flags = set(vllm_cli()["flags"])  # type: ignore[call-overload]
    assert {"--runner", "--convert", "--tensor-parallel-size", "-tp", "--load-format", "--host", "--port"} <= flags
    assert "--task" not in flags  # replaced by --runner/--convert in 0.10.1


def model_server_args(rendering: Rendering) -> list[tuple[str, list[str]]]:
    out = []
    for obj in kubernetes_objects(rendering):
        if obj["kind"] == "Deployment" and obj["metadata"].get("namespace") == "models":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                out.append((obj["metadata"]["name"], [str(a) for a in container.get("args", [])]))
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_every_model_server_argument_is_a_flag_of_the_pinned_vllm(rendered: Rendered, stack: str) -> None:
    cli = vllm_cli()
    flags, choices = set(cli["flags"]), cli["choices"]  # type: ignore[call-overload]
    assert isinstance(choices, dict)
    servers = model_server_args(rendered(stack))
    assert servers
    for name, args in servers:
        assert args and args[0] == "--model", name
        for i, arg in enumerate(args):
            if not re.match(r"^--?[A-Za-z]", arg):
                continue
            flag = arg.split("=", 1)[0]
            assert flag in flags or "--" + flag.removeprefix("--no-") in flags, f"{stack}/{name}: {flag} is not a flag of vLLM {VLLM_VERSION}"
            if flag in choices:
                value = arg.split("=", 1)[1] if "=" in arg else args[i + 1]
                assert value in choices[flag], f"{stack}/{name}: {flag} {value}; vLLM {VLLM_VERSION} allows {choices[flag]}"


def _query_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in ("expr", "query", "definition") and isinstance(v, str)] + [
            s for v in node.values() for s in _query_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _query_strings(v)]
    return []


def used_vllm_series(rendering: Rendering) -> set[str]:
    exprs: list[str] = []
    for path in sorted((ROOT / "components" / "dashboards").glob("*.json")):
        exprs += _query_strings(json.loads(path.read_text()))
    for obj in kubernetes_objects(rendering):
        if obj["kind"] == "PrometheusRule":
            exprs += [str(rule["expr"]) for group in obj["spec"]["groups"] for rule in group["rules"]]
        if obj["kind"] == "ScaledObject":
            exprs += [str(t["metadata"]["query"]) for t in obj["spec"]["triggers"] if t["type"] == "prometheus"]
    names: set[str] = set()
    for expr in exprs:
        expr = re.sub(r"label_values\(([^,)]+)(,[^)]*)?\)", r"(\1)", expr)
        names |= {n for n in metric_names(expr) if n.startswith("vllm:")}
    return names


@pytest.mark.parametrize("stack", STACKS)
def test_every_vllm_series_read_by_dashboards_alerts_and_keda_is_exposed(rendered: Rendered, stack: str) -> None:
    exposed = vllm_exposed_metrics()
    used = used_vllm_series(rendered(stack))
    assert {"vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket"} <= used
    missing = sorted(used - exposed)
    assert not missing, f"not exposed by vLLM {VLLM_VERSION}: {missing}"


def test_the_documented_vllm_metric_list_matches_the_release() -> None:
    exposed = vllm_exposed_metrics()
    assert not sorted(set(VLLM_METRICS) - exposed)


def test_counter_and_histogram_series_names_follow_prometheus_exposition() -> None:
    exposed = vllm_exposed_metrics()
    assert "vllm:prefix_cache_hits_total" in exposed and "vllm:prefix_cache_hits" not in exposed
    assert {"vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_count"} <= exposed


def prod_raw() -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in read_stack_config("prod").items() if k.startswith("llm-platform:")}


@pytest.mark.parametrize(("extra", "expected"), [
    (["--no-such-flag"], "'--no-such-flag' is not a flag of vLLM"),
    (["--task", "embed"], "'--task' is not a flag of vLLM"),
    (["-tp", "2"], "'-tp' is derived from the model entry"),
    (["--load-format", "safetensors"], "'--load-format' is derived from the model entry"),
])
def test_extra_args_must_be_flags_of_the_pinned_vllm(extra: list[str], expected: str) -> None:
    raw = copy.deepcopy(prod_raw())
    raw["models"][0]["extra_args"] = extra
    with pytest.raises(ConfigError) as err:
        parse_platform_config(raw, "stacks/Pulumi.prod.yaml")
    assert "models[0].extra_args" in str(err.value) and expected in str(err.value)


def test_extra_args_accept_real_flags_and_their_negations() -> None:
    raw = copy.deepcopy(prod_raw())
    raw["models"][0]["extra_args"] = ["--max-num-seqs", "128", "--no-enable-log-requests", "--kv-cache-dtype=fp8"]
    parse_platform_config(raw, "stacks/Pulumi.prod.yaml")
