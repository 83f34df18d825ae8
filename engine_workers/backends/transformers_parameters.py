"""What a `transformers` replica group's profile may say (backend layer, pure: pydantic only).

Kept apart from the backend so that `frugal up` validates a config without importing torch.
transformers' continuous batching sizes its KV cache from free memory (on CPU: 60 % of RAM)
unless told; here the cache is always sized from `kv_cache_tokens`, so a worker's memory is
what its profile says.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DType = Literal["float32", "bfloat16", "float16"]


class TransformersParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # A built-in name (model_files.BUILTIN_MODELS) or a local directory `from_pretrained` loads.
    model: str = Field(default="smollm2-135m-instruct", min_length=1)
    dtype: DType = "float32"
    device: str = Field(default="cpu", min_length=1)  # "cpu", "cuda", "cuda:1", "mps"
    attn_implementation: Literal["sdpa", "paged|eager"] = "sdpa"
    # Torch's intra-op threads; None: torch's default (every core).
    threads: int | None = Field(default=None, ge=1, le=1024)
    # KV cache: tokens held at once over all sequences, in pages of `page_size` tokens.
    kv_cache_tokens: int = Field(default=16_384, ge=64)
    page_size: int = Field(default=256, ge=4)
    # Tokens one step may process (prefill chunks plus one per decoding sequence).
    max_batch_tokens: int = Field(default=512, ge=16)
    max_requests_per_batch: int = Field(default=32, ge=1)
    # A request without max_tokens gets this many at most (and never past the context).
    default_max_tokens: int = Field(default=512, ge=1)
    # Sampling defaults for requests that leave them out (OpenAI's defaults are 1.0 / 1.0;
    # a 135M model rambles at 1.0, so the built-in profile samples cooler).
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _cache_holds_a_batch(self) -> TransformersParameters:
        if self.kv_cache_tokens < self.max_batch_tokens:
            raise ValueError("kv_cache_tokens must be at least max_batch_tokens")
        return self

    @property
    def num_blocks(self) -> int:
        return -(-self.kv_cache_tokens // self.page_size)
