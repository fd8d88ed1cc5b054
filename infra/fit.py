"""Fit check: does a catalog model start on the GPUs its node groups offer?

vLLM refuses to start when the weights plus the KV cache of one `max_model_len` sequence do not fit in
`gpu_memory_utilization` x GPU memory (it profiles the weights and the peak activations, then sizes the KV cache from
what is left and fails when that is less than one full sequence). The same sum, per GPU of a tensor-parallel replica:

    weights  = parameters x bytes per weight / TP
    KV cache = 2 (K and V) x layers x max(KV heads / TP, 1) x head dim x KV bytes x max_model_len
    reserve  = ACTIVATION_RESERVE_GIB (peak activations of the profiling batch, CUDA graphs, NCCL/cuBLAS workspaces)
    need     = weights + KV cache + reserve  <=  gpu_memory_utilization x GPU memory (infra/instances.py)

Encoder-only models (BERT/XLM-R embedders and rerankers) keep no KV cache (vLLM's EncoderOnlyAttentionSpec
reserves 0 bytes). A float32 checkpoint runs in 16-bit under `--dtype auto` (vLLM downcasts float32 configs).

The architecture facts come from each model's config.json on its Hugging Face model card (KNOWN_ARCHITECTURES cites
each); a model not listed there states them under `architecture:` in its catalog entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from infra.configkit import Strict
from infra.instances import GPU_FAMILIES, INSTANCE_SPECS, family

if TYPE_CHECKING:
    from infra.config import PlatformConfig
    from infra.workload_config import ModelConfig

GIB = 1024**3
# Stated reserve per GPU for what vLLM holds besides weights and KV cache. vLLM measures these at start; 2 GiB
# covers its profiling batch (default max_num_batched_tokens), CUDA graph capture and NCCL buffers for 7B-70B
# dense models, and the difference between the nominal and the CUDA-visible GPU memory.
ACTIVATION_RESERVE_GIB = 2.0
CHECKPOINT_DTYPE_BYTES = {"float32": 2, "bfloat16": 2, "float16": 2}
"""Bytes per weight under `--dtype auto`: vLLM downcasts float32 checkpoints to 16-bit."""
DTYPE_ARG_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
"""Bytes per weight for an explicit `--dtype` in extra_args."""
KV_DTYPE_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "bfloat16": 2, "float16": 2}


class ModelArchitecture(Strict):
    """What the memory of a model depends on, from its config.json."""

    params_b: Annotated[float, Field(gt=0, le=2000, description="parameters, billions (model card / safetensors total)")]
    layers: Annotated[int, Field(ge=1, le=512, description="num_hidden_layers")]
    kv_heads: Annotated[int, Field(ge=1, le=512, description="num_key_value_heads (num_attention_heads without GQA)")]
    head_dim: Annotated[int, Field(ge=8, le=1024, description="head_dim, or hidden_size / num_attention_heads")]
    dtype: Literal["float32", "bfloat16", "float16"] = Field(description="torch_dtype of the checkpoint")
    attention: Literal["decoder", "encoder"] = Field(default="decoder", description="encoder = encoder-only model, no KV cache")
    bits_per_weight: Annotated[float | None, Field(gt=0, le=32, description="quantised checkpoints (e.g. 4 for AWQ/GPTQ int4)")] = None
    source: str = Field("catalog entry", description="where the facts come from (config.json URL)")


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


KNOWN_ARCHITECTURES: dict[str, ModelArchitecture] = {
    # hidden_size 3584 / 28 heads = 128; 4 KV heads; 7.61B parameters (model card)
    "Qwen/Qwen2.5-7B-Instruct": ModelArchitecture(params_b=7.61, layers=28, kv_heads=4, head_dim=128, dtype="bfloat16",
                                                  source=_hf("Qwen/Qwen2.5-7B-Instruct")),
    # Llama-3-8B architecture: 32 layers, 32 heads / 8 KV heads of 128; 8.03B parameters
    "defog/llama-3-sqlcoder-8b": ModelArchitecture(params_b=8.03, layers=32, kv_heads=8, head_dim=128, dtype="float16",
                                                   source=_hf("defog/llama-3-sqlcoder-8b")),
    # XLM-RoBERTa large: 24 layers, hidden 1024 / 16 heads; 568M parameters; float32 checkpoint; encoder-only
    "BAAI/bge-m3": ModelArchitecture(params_b=0.568, layers=24, kv_heads=16, head_dim=64, dtype="float32", attention="encoder",
                                     source=_hf("BAAI/bge-m3")),
    "BAAI/bge-reranker-v2-m3": ModelArchitecture(params_b=0.568, layers=24, kv_heads=16, head_dim=64, dtype="float32",
                                                 attention="encoder", source=_hf("BAAI/bge-reranker-v2-m3")),
    # 80 layers, hidden 8192 / 64 heads = 128, 8 KV heads; 70.6B parameters
    "meta-llama/Llama-3.3-70B-Instruct": ModelArchitecture(params_b=70.6, layers=80, kv_heads=8, head_dim=128, dtype="bfloat16",
                                                           source=_hf("meta-llama/Llama-3.3-70B-Instruct")),
}


@dataclass(frozen=True)
class MemoryNeed:
    weights_gib: float
    kv_gib: float
    reserve_gib: float
    budget_gib: float

    @property
    def need_gib(self) -> float:
        return self.weights_gib + self.kv_gib + self.reserve_gib

    @property
    def fits(self) -> bool:
        return self.need_gib <= self.budget_gib + 1e-9


def _arg_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def memory_need(arch: ModelArchitecture, tensor_parallel: int, max_model_len: int, gpu_memory_utilization: float,
                gpu_memory_gib: float, extra_args: list[str] | None = None) -> MemoryNeed:
    """Per-GPU memory of one replica (see the module docstring for the sum)."""
    args = extra_args or []
    dtype_bytes = DTYPE_ARG_BYTES.get(_arg_value(args, "--dtype") or "auto") or CHECKPOINT_DTYPE_BYTES[arch.dtype]
    weight_bytes = arch.bits_per_weight / 8 if arch.bits_per_weight else dtype_bytes
    kv_bytes = KV_DTYPE_BYTES.get(_arg_value(args, "--kv-cache-dtype") or "", dtype_bytes)
    weights = arch.params_b * 1e9 * weight_bytes / tensor_parallel
    kv = 0.0
    if arch.attention == "decoder":
        kv_heads_per_gpu = max(arch.kv_heads / tensor_parallel, 1.0)
        kv = 2 * arch.layers * kv_heads_per_gpu * arch.head_dim * kv_bytes * max_model_len
    return MemoryNeed(weights / GIB, kv / GIB, ACTIVATION_RESERVE_GIB, gpu_memory_utilization * gpu_memory_gib)


def architecture_of(model: ModelConfig) -> ModelArchitecture | None:
    return model.architecture or (KNOWN_ARCHITECTURES.get(model.hf_model) if model.hf_model else None)


def _options(model: ModelConfig, arch: ModelArchitecture, gpu_class: str, gpu_memory_gib: float, per_node: int) -> list[str]:
    out: list[str] = []
    for tp in (2, 4, 8):
        if model.gpus_per_replica < tp <= per_node:
            need = memory_need(arch, tp, model.max_model_len, model.gpu_memory_utilization, gpu_memory_gib, model.extra_args)
            if need.fits:
                out.append(f"gpus_per_replica {tp} ({need.need_gib:.1f} GiB)")
                break
    bigger = sorted({(s.gpu_memory_gib, t) for t, s in INSTANCE_SPECS.items()
                     if s.gpu_class == gpu_class and s.gpu_memory_gib > gpu_memory_gib and family(t) in GPU_FAMILIES[gpu_class]})
    for mem, itype in bigger:
        need = memory_need(arch, model.gpus_per_replica, model.max_model_len, model.gpu_memory_utilization, mem, model.extra_args)
        if need.fits:
            out.append(f"a node group of {mem} GiB GPUs ({itype}, {need.need_gib:.1f} of {need.budget_gib:.1f} GiB)")
            break
    base = memory_need(arch, model.gpus_per_replica, 1, model.gpu_memory_utilization, gpu_memory_gib, model.extra_args)
    per_token = base.kv_gib
    room = base.budget_gib - base.weights_gib - base.reserve_gib
    if per_token > 0 and room > per_token * 128:
        out.append(f"max_model_len <= {int(math.floor(room / per_token / 256) * 256)}")
    if model.gpu_share == 1 and model.gpu_memory_utilization < 0.95 and memory_need(
            arch, model.gpus_per_replica, model.max_model_len, 0.95, gpu_memory_gib, model.extra_args).fits:
        out.append("gpu_memory_utilization 0.95 (little KV cache left for concurrency)")
    out.append("quantised weights (architecture.bits_per_weight)")
    return out


def check_models_fit_gpu_memory(cfg: PlatformConfig) -> None:
    """Every catalog model fits the smallest GPU of the node groups it can land on; ValueError naming the model."""
    from infra.workload_config import matching_node_groups

    for i, model in enumerate(cfg.models):
        arch = architecture_of(model)
        if arch is None:
            known = ", ".join(sorted(KNOWN_ARCHITECTURES))
            raise ValueError(f"models[{i}].architecture: got nothing for {model.name} (hf_model {model.hf_model!r}); allowed: "
                             "params_b, layers, kv_heads, head_dim, dtype from the model's config.json, or an hf_model with "
                             f"known facts ({known})")
        groups = matching_node_groups(model, list(cfg.node_groups))
        if not groups:
            continue  # check_models_fit_node_groups names that error
        gpu_memory_gib, itype = min((INSTANCE_SPECS[t].gpu_memory_gib, t) for g in groups for t in g.instance_types)
        need = memory_need(arch, model.gpus_per_replica, model.max_model_len, model.gpu_memory_utilization, gpu_memory_gib,
                           model.extra_args)
        if need.fits:
            continue
        per_node = max(g.gpus_per_node for g in groups)
        raise ValueError(
            f"models[{i}]: {model.name} does not fit {itype} ({gpu_memory_gib} GiB {model.gpu}): needs {need.need_gib:.1f} GiB "
            f"per GPU (weights {need.weights_gib:.1f} + KV cache for max_model_len {model.max_model_len} {need.kv_gib:.1f} "
            f"+ reserve {need.reserve_gib:.1f}) at gpus_per_replica {model.gpus_per_replica}, but gpu_memory_utilization "
            f"{model.gpu_memory_utilization} x {gpu_memory_gib} GiB = {need.budget_gib:.1f} GiB; allowed: "
            + ", ".join(_options(model, arch, model.gpu, gpu_memory_gib, per_node))
        )
