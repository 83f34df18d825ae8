"""Unit tests of the `trtllm` group profile: defaults, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine_workers.backends import validate_parameters
from engine_workers.backends.trtllm_parameters import TrtllmParameters


def _error_fields(**profile: Any) -> set[str]:
    with pytest.raises(ValidationError) as failure:
        TrtllmParameters.model_validate({"model": "/models/m", **profile})
    return {".".join(str(part) for part in error["loc"]) for error in failure.value.errors()}


def test_registry_validates_trtllm_profiles_with_tensorrt_llm_defaults() -> None:
    profile = validate_parameters("trtllm", {"model": "/models/mixtral"})
    assert profile == TrtllmParameters(model="/models/mixtral")
    assert isinstance(profile, TrtllmParameters)
    assert (profile.tensor_parallel_size, profile.pipeline_parallel_size) == (1, 1)
    assert (profile.kv_cache_dtype, profile.weights) == ("auto", "auto")
    assert profile.free_gpu_memory_fraction == 0.9
    assert profile.scheduler_policy == "guaranteed_no_evict"
    assert (profile.max_batch_size, profile.max_num_tokens, profile.tokens_per_block) == (
        2048,
        8192,
        32,
    )


def test_model_is_required() -> None:
    with pytest.raises(ValidationError) as failure:
        TrtllmParameters.model_validate({})
    assert [e["loc"] for e in failure.value.errors()] == [("model",)]


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"free_gpu_memory_fraction": 1.5}, "free_gpu_memory_fraction"),
        ({"free_gpu_memory_fraction": 0}, "free_gpu_memory_fraction"),
        ({"kv_cache_dtype": "int8"}, "kv_cache_dtype"),
        ({"weights": "fp8"}, "weights"),
        ({"scheduler_policy": "static_batch"}, "scheduler_policy"),
        ({"stats_interval_s": 0}, "stats_interval_s"),
        ({"profile_description": "fast"}, "profile_description"),
    ],
)
def test_bad_values_name_their_field(profile: dict[str, Any], field: str) -> None:
    assert _error_fields(**profile) == {field}


def test_moe_split_must_multiply_to_tensor_parallel_size() -> None:
    fields = _error_fields(
        tensor_parallel_size=8, moe_expert_parallel_size=4, moe_tensor_parallel_size=4
    )
    assert fields == {"moe_tensor_parallel_size"}
    ok = TrtllmParameters(
        model="m", tensor_parallel_size=8, moe_expert_parallel_size=4, moe_tensor_parallel_size=2
    )
    assert (ok.moe_expert_parallel_size, ok.moe_tensor_parallel_size) == (4, 2)


@pytest.mark.parametrize("field", ["moe_expert_parallel_size", "moe_tensor_parallel_size"])
def test_a_lone_moe_split_must_divide_tensor_parallel_size(field: str) -> None:
    assert _error_fields(tensor_parallel_size=4, **{field: 3}) == {field}
    profile = TrtllmParameters.model_validate({"model": "m", "tensor_parallel_size": 4, field: 4})
    assert getattr(profile, field) == 4
