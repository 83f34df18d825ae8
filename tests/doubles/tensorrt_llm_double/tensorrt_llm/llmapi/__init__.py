"""TEST DOUBLE of `tensorrt_llm.llmapi` (tests only; this is not TensorRT-LLM).

The config classes keep the real field names and defaults (tensorrt_llm/llmapi/llm_args.py,
TensorRT-LLM 1.2) so a misspelt keyword fails here as it would there; they validate nothing
else. The real ones are pydantic models mirrored onto C++ bindings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .. import LLM, CompletionOutput, RequestOutput, SamplingParams

__all__ = [
    "LLM",
    "CapacitySchedulerPolicy",
    "CompletionOutput",
    "KvCacheConfig",
    "RequestOutput",
    "SamplingParams",
    "SchedulerConfig",
]


class CapacitySchedulerPolicy(StrEnum):
    MAX_UTILIZATION = "MAX_UTILIZATION"
    GUARANTEED_NO_EVICT = "GUARANTEED_NO_EVICT"
    STATIC_BATCH = "STATIC_BATCH"


@dataclass(frozen=True, kw_only=True)
class KvCacheConfig:
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    free_gpu_memory_fraction: float | None = 0.9
    dtype: str = "auto"
    tokens_per_block: int = 32


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    capacity_scheduler_policy: CapacitySchedulerPolicy = CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
