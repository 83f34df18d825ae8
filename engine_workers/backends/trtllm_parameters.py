"""The profile of a `trtllm` replica group (backend layer, pure: pydantic only).

`frugal up` validates every group's profile against this model before anything starts, so it
imports nothing heavy. The fields are the knobs the ScaleLLM paper tunes on TensorRT-LLM
(arXiv 2408.00008: TP vs replicas, TP x EP for MoE, fp8, in-flight batching) and map onto the
TensorRT-LLM 1.2 LLM API (PyTorch backend) in `engine_workers.backends.trtllm.llm_arguments`.
Defaults are TensorRT-LLM's own (tensorrt_llm/llmapi/llm_args.py) unless said otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class TrtllmParameters(BaseModel):
    """One replica group's TensorRT-LLM settings; `model` is the only required field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A Hugging Face model directory (or hub id), or a TensorRT-LLM checkpoint directory.
    model: str = Field(min_length=1)
    tokenizer: str | None = None
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    # MoE experts are split over the TP ranks: TensorRT-LLM requires
    # tensor_parallel_size == moe_tensor_parallel_size * moe_expert_parallel_size
    # (tensorrt_llm/mapping.py, Mapping.__init__); the one left unset is derived from the other.
    moe_expert_parallel_size: int | None = Field(default=None, ge=1)
    moe_tensor_parallel_size: int | None = Field(default=None, ge=1)
    # The PyTorch backend does not quantize at load time: it reads the quantization that the
    # checkpoint declares. "fp8-prequantized" says the checkpoint holds fp8 weights (ModelOpt's
    # hf_quant_config.json with quant_algo FP8, or a config.json quantization_config with
    # quant_method fp8); the worker checks a local checkpoint says so before loading it.
    weights: Literal["auto", "fp8-prequantized"] = "auto"
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    free_gpu_memory_fraction: float = Field(default=0.9, gt=0, le=1)
    enable_block_reuse: bool = True
    tokens_per_block: int = Field(default=32, ge=1)
    scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = "guaranteed_no_evict"
    max_batch_size: int = Field(default=2048, ge=1)
    max_num_tokens: int = Field(default=8192, ge=1)
    # OpenAI requests may omit max_tokens; TensorRT-LLM's SamplingParams would then stop at 32.
    default_max_tokens: int = Field(default=2048, ge=1)
    # How often the worker drains the engine's iteration stats for its load gauges.
    stats_interval_s: float = Field(default=0.5, gt=0)

    @field_validator("moe_expert_parallel_size")
    @classmethod
    def _expert_split_divides_tp(cls, value: int | None, info: ValidationInfo) -> int | None:
        tp = info.data.get("tensor_parallel_size")
        if value is not None and tp is not None and tp % value:
            raise ValueError(f"must divide tensor_parallel_size ({tp}), got {value}")
        return value

    @field_validator("moe_tensor_parallel_size")
    @classmethod
    def _moe_split_is_tp(cls, value: int | None, info: ValidationInfo) -> int | None:
        tp = info.data.get("tensor_parallel_size")
        if value is None or tp is None:
            return value
        ep = info.data.get("moe_expert_parallel_size")
        if ep is not None and value * ep != tp:
            raise ValueError(
                f"moe_tensor_parallel_size ({value}) x moe_expert_parallel_size ({ep}) "
                f"must equal tensor_parallel_size ({tp})"
            )
        if tp % value:
            raise ValueError(f"must divide tensor_parallel_size ({tp}), got {value}")
        return value
