"""`models` and `workloads` config: bad input stops with one line naming the key, the value and what is allowed."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from infra.config import ConfigError, parse_platform_config
from infra.pins import VLLM_VERSION
from infra.render import read_stack_config

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "stacks/Pulumi.prod.yaml"


def prod_raw() -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in read_stack_config("prod").items() if k.startswith("llm-platform:")}


def error_for(change: Callable[[dict[str, Any]], None]) -> str:
    raw = copy.deepcopy(prod_raw())
    change(raw)
    with pytest.raises(ConfigError) as err:
        parse_platform_config(raw, SOURCE)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{SOURCE}: llm-platform")
    return message


def model(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in raw["models"] if m["name"] == name)


def test_prod_config_is_valid_as_shipped() -> None:
    cfg = parse_platform_config(prod_raw(), SOURCE)
    assert {m.name for m in cfg.models} == {"chat-7b", "sql-7b", "embed-small", "rerank-small", "chat-70b"}


def test_gpu_class_must_exist_as_a_node_group() -> None:
    def drop_a100(raw: dict[str, Any]) -> None:
        raw["node_groups"] = [g for g in raw["node_groups"] if g.get("gpu") != "a100"]

    message = error_for(drop_a100)
    assert "models[4].gpu: got 'a100'" in message and "node_groups have: a10g" in message


def test_gpus_per_replica_must_fit_one_node() -> None:
    message = error_for(lambda raw: model(raw, "chat-7b").update(gpus_per_replica=2))
    assert "models[0].gpus_per_replica: got 2; allowed: <= 1" in message and "gpu-a10g" in message


def test_max_replicas_times_gpus_must_fit_the_group_max_size() -> None:
    message = error_for(lambda raw: model(raw, "chat-70b").update(replicas={"min": 2, "max": 5}))
    assert "models[4].replicas.max: got 5" in message and "need 20 GPU slots" in message and "gives 16" in message


def test_models_sharing_a_group_are_counted_together() -> None:
    # chat-7b (6) + sql-7b (3) fit the 12-node A10G group; 10 + 3 do not.
    message = error_for(lambda raw: model(raw, "sql-7b").update(replicas={"min": 2, "max": 7}))
    assert "models[1].replicas.max: got 7" in message and "need 13 GPU slots" in message


def test_shared_gpu_needs_a_time_sliced_group() -> None:
    def unlabel(raw: dict[str, Any]) -> None:
        for g in raw["node_groups"]:
            g.get("labels", {}).pop("nvidia.com/device-plugin.config", None)

    message = error_for(unlabel)
    assert "models[2].gpu" in message and "time-sliced-2" in message


def test_shared_gpu_caps_memory_utilisation() -> None:
    message = error_for(lambda raw: model(raw, "embed-small").update(gpu_memory_utilization=0.6))
    assert "gpu_memory_utilization: got 0.6" in message and "<= 0.45" in message


def test_catalog_is_checked_by_the_gateway_loader() -> None:
    message = error_for(lambda raw: model(raw, "chat-70b").update(fallbacks=["embed-small"]))
    # The wording is the gateway's own (its loader judged the file); we check it names the key and the culprit.
    assert "llm-platform:models:" in message and "'chat-70b'" in message and "'embed-small'" in message and "embedding" in message
    message = error_for(lambda raw: model(raw, "sql-7b").update(aliases=["gpt-4o"]))
    assert "llm-platform:models:" in message and "'gpt-4o'" in message


def test_weights_need_one_source_and_one_s3_location() -> None:
    message = error_for(lambda raw: model(raw, "chat-7b").update(s3_uri="s3://models-bucket/qwen/"))
    assert "models[0]" in message and "allowed: one S3 source" in message

    def no_source(raw: dict[str, Any]) -> None:
        for key in ("hf_model", "s3_prefix"):
            model(raw, "chat-7b").pop(key, None)

    message = error_for(no_source)
    assert "models[0]: got no weights source" in message


def test_derived_vllm_flags_cannot_be_overridden() -> None:
    message = error_for(lambda raw: model(raw, "chat-7b").update(extra_args=["--tensor-parallel-size=2"]))
    assert "models[0].extra_args" in message and "'--tensor-parallel-size' is derived" in message


def test_images_must_be_pinned() -> None:
    message = error_for(lambda raw: raw["workloads"]["gateway"]["image"].update(tag="latest"))
    assert "workloads.gateway.image.tag" in message and "pinned" in message


def test_models_need_a_workloads_section() -> None:
    message = error_for(lambda raw: raw.pop("workloads"))
    assert "workloads: got nothing" in message


def test_unknown_chart_is_rejected() -> None:
    message = error_for(lambda raw: raw["workloads"].update(charts={"istio": {"repo": "https://x.example", "version": "1.0.0"}}))
    assert "workloads.charts" in message


def test_duplicate_model_names() -> None:
    message = error_for(lambda raw: raw["models"].append(copy.deepcopy(model(raw, "sql-7b"))))
    assert "models[5].name: got 'sql-7b' twice" in message


def test_vllm_dockerfile_is_pinned_non_root_and_lint_clean() -> None:
    dockerfile = ROOT / "images" / "vllm" / "Dockerfile"
    text = dockerfile.read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == [f"vllm/vllm-openai:v{VLLM_VERSION}"]
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every stack runs the image built from this Dockerfile: same upstream vLLM version in the tag.
    for stack in ("dev", "small", "prod", "global"):
        tag = read_stack_config(stack)["llm-platform:workloads"]["vllm_image"]["tag"]
        assert tag.startswith(f"v{VLLM_VERSION}-"), (stack, tag)


def test_alerting_needs_a_receiver() -> None:
    message = error_for(lambda raw: raw["workloads"].pop("alerting"))
    assert "llm-platform:workloads.alerting" in message
    message = error_for(lambda raw: raw["workloads"].update(alerting={"slack_channel": "#x"}))
    assert "at least one of pagerduty_routing_key_secret, slack_webhook_secret, sns_topic_arn" in message


def test_alerting_secrets_are_names_or_full_arns() -> None:
    message = error_for(lambda raw: raw["workloads"]["alerting"].update(slack_webhook_secret="https://hooks.slack.com/services/T/B/x"))
    assert "llm-platform:workloads.alerting.slack_webhook_secret" in message and "allowed" in message
    assert "hooks.slack.com" not in message  # a credential pasted by mistake is not echoed into CI logs
