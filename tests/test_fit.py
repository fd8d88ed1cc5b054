"""Fit check (infra/fit.py): a catalog model must start on the GPUs of the node groups it lands on.

Known cases computed by hand from the models' config.json facts (infra/fit.py KNOWN_ARCHITECTURES):
- Qwen2.5-7B on one A10G (24 GiB) at 0.85, 16k context: weights 7.61e9 x 2 B = 14.17 GiB, KV 2 x 28 x 4 x 128 x 2 B x
  16384 = 0.875 GiB, reserve 2 GiB -> 17.05 GiB <= 20.4 GiB: fits.
- Llama-3.3-70B at TP 4 on 40 GiB A100s at 0.9, 32k: weights 70.6e9 x 2 / 4 = 32.87 GiB, KV 2 x 80 x 2 x 128 x 2 B x 32768
  = 2.5 GiB, reserve 2 -> 37.37 GiB > 36 GiB: vLLM would refuse to start (the shipped prod catalog until now).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra.config import ConfigError, parse_platform_config
from infra.fit import ACTIVATION_RESERVE_GIB, KNOWN_ARCHITECTURES, ModelArchitecture, architecture_of, memory_need
from infra.instances import INSTANCE_SPECS
from infra.preflight import load_stack_config
from infra.render import read_stack_config
from infra.workload_config import matching_node_groups

STACKS = ("dev", "small", "prod", "global")
GIB = 1024**3


def raw_config(stack: str) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in read_stack_config(stack).items() if k.startswith("llm-platform:")}


def test_7b_fits_one_a10g() -> None:
    need = memory_need(KNOWN_ARCHITECTURES["Qwen/Qwen2.5-7B-Instruct"], 1, 16384, 0.85, INSTANCE_SPECS["g5.xlarge"].gpu_memory_gib)
    assert need.weights_gib == pytest.approx(7.61e9 * 2 / GIB)
    assert need.kv_gib == pytest.approx(2 * 28 * 4 * 128 * 2 * 16384 / GIB)
    assert need.reserve_gib == ACTIVATION_RESERVE_GIB
    assert need.budget_gib == pytest.approx(0.85 * 24)
    assert need.fits


def test_70b_at_tp4_does_not_fit_40_gib_and_fits_at_tp8_or_on_80_gib() -> None:
    arch = KNOWN_ARCHITECTURES["meta-llama/Llama-3.3-70B-Instruct"]
    tp4 = memory_need(arch, 4, 32768, 0.9, INSTANCE_SPECS["p4d.24xlarge"].gpu_memory_gib)
    assert tp4.weights_gib == pytest.approx(70.6e9 * 2 / 4 / GIB)
    assert tp4.kv_gib == pytest.approx(2 * 80 * 2 * 128 * 2 * 32768 / GIB)  # 8 KV heads over 4 GPUs = 2 each
    assert tp4.need_gib > tp4.budget_gib == pytest.approx(36.0)
    assert not tp4.fits
    assert memory_need(arch, 8, 32768, 0.9, 40).fits
    assert memory_need(arch, 4, 32768, 0.9, INSTANCE_SPECS["p4de.24xlarge"].gpu_memory_gib).fits


def test_kv_heads_are_not_split_below_one_per_gpu() -> None:
    arch = ModelArchitecture(params_b=1.0, layers=10, kv_heads=2, head_dim=128, dtype="bfloat16")
    assert memory_need(arch, 8, 1000, 0.9, 80).kv_gib == pytest.approx(2 * 10 * 1 * 128 * 2 * 1000 / GIB)


def test_encoder_only_models_keep_no_kv_cache_and_float32_runs_in_16_bit() -> None:
    need = memory_need(KNOWN_ARCHITECTURES["BAAI/bge-m3"], 1, 8192, 0.4, 24)
    assert need.kv_gib == 0.0
    assert need.weights_gib == pytest.approx(0.568e9 * 2 / GIB)
    assert memory_need(KNOWN_ARCHITECTURES["BAAI/bge-m3"], 1, 8192, 0.4, 24, ["--dtype", "float32"]).weights_gib == pytest.approx(0.568e9 * 4 / GIB)


def test_fp8_kv_cache_and_quantised_weights_are_counted() -> None:
    arch = KNOWN_ARCHITECTURES["meta-llama/Llama-3.3-70B-Instruct"]
    assert memory_need(arch, 4, 32768, 0.9, 40, ["--kv-cache-dtype=fp8"]).kv_gib == pytest.approx(1.25)
    awq = arch.model_copy(update={"bits_per_weight": 4.0})
    assert memory_need(awq, 4, 32768, 0.9, 40).weights_gib == pytest.approx(70.6e9 * 0.5 / 4 / GIB)


def test_old_prod_catalog_is_a_one_line_config_error_with_the_numbers_and_options() -> None:
    raw = copy.deepcopy(raw_config("prod"))
    a100 = next(g for g in raw["node_groups"] if g.get("gpu") == "a100")
    a100["instance_types"] = ["p4d.24xlarge"]  # what prod shipped with: 40 GiB A100s, chat-70b at 4 GPUs
    with pytest.raises(ConfigError) as err:
        parse_platform_config(raw, "stacks/Pulumi.prod.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "llm-platform:models[4]: chat-70b does not fit p4d.24xlarge (40 GiB a100)" in message
    assert "needs 37.4 GiB per GPU (weights 32.9 + KV cache for max_model_len 32768 2.5 + reserve 2.0)" in message
    assert "0.9 x 40 GiB = 36.0 GiB" in message
    assert "gpus_per_replica 8" in message and "p4de.24xlarge" in message and "max_model_len <=" in message


def test_model_without_known_architecture_must_state_it() -> None:
    raw = copy.deepcopy(raw_config("dev"))
    raw["models"][0]["hf_model"] = "example/unknown-7b"
    with pytest.raises(ConfigError) as err:
        parse_platform_config(raw, "stacks/Pulumi.dev.yaml")
    assert "models[0].architecture: got nothing for chat-7b" in str(err.value)
    raw["models"][0]["architecture"] = {"params_b": 7.0, "layers": 28, "kv_heads": 4, "head_dim": 128, "dtype": "bfloat16",
                                        "source": "https://huggingface.co/example/unknown-7b/blob/main/config.json"}
    parse_platform_config(raw, "stacks/Pulumi.dev.yaml")


@pytest.mark.parametrize("stack", STACKS)
def test_fit_guard_every_catalog_model_fits_its_gpus_in_every_stack(stack: str) -> None:
    """Guard "Fit": the check runs in config validation; here each model's margin is recomputed and shown."""
    cfg = load_stack_config(stack)
    assert cfg.models
    for model in cfg.models:
        arch = architecture_of(model)
        assert arch is not None, model.name
        assert arch.source.startswith("https://huggingface.co/") and arch.source.endswith("/config.json"), model.name
        groups = matching_node_groups(model, list(cfg.node_groups))
        smallest = min(INSTANCE_SPECS[t].gpu_memory_gib for g in groups for t in g.instance_types)
        need = memory_need(arch, model.gpus_per_replica, model.max_model_len, model.gpu_memory_utilization, smallest, model.extra_args)
        assert need.fits, (stack, model.name, need)
