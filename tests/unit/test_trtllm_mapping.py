"""Unit tests of the `trtllm` backend's pure parts (no engine, no double): LLM arguments,
SamplingParams arguments, finish reasons, load and step tallies from iteration stats,
checkpoint checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine_workers.backends.trtllm import (
    StepTally,
    checkpoint_declares_fp8,
    fold_iteration,
    llm_arguments,
    load_snapshot,
    openai_finish_reason,
    sampling_arguments,
    token_ids_of,
)
from engine_workers.backends.trtllm_parameters import TrtllmParameters
from engine_workers.engine import DecodeSteps, GenerationRequest, LoadSnapshot, PrefillSteps
from engine_workers.errors import EngineFaultError, EngineUnavailableError


def test_llm_arguments_leave_unset_options_to_tensorrt_llm() -> None:
    arguments = llm_arguments(TrtllmParameters(model="/models/m"))
    assert dict(arguments.options) == {
        "model": "/models/m",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "max_batch_size": 2048,
        "max_num_tokens": 8192,
        "enable_iter_perf_stats": True,
    }
    assert dict(arguments.kv_cache) == {
        "free_gpu_memory_fraction": 0.9,
        "enable_block_reuse": True,
        "dtype": "auto",
        "tokens_per_block": 32,
    }
    assert arguments.capacity_scheduler_policy == "GUARANTEED_NO_EVICT"


def test_llm_arguments_carry_a_tp_ep_hybrid_with_fp8_kv() -> None:
    parameters = TrtllmParameters(
        model="/models/m",
        tokenizer="/models/t",
        tensor_parallel_size=8,
        moe_expert_parallel_size=8,
        kv_cache_dtype="fp8",
        scheduler_policy="max_utilization",
    )
    arguments = llm_arguments(parameters)
    assert arguments.options["tokenizer"] == "/models/t"
    assert arguments.options["moe_expert_parallel_size"] == 8
    assert "moe_tensor_parallel_size" not in arguments.options  # TensorRT-LLM derives it
    assert arguments.kv_cache["dtype"] == "fp8"
    assert arguments.capacity_scheduler_policy == "MAX_UTILIZATION"


def _request(**fields: Any) -> GenerationRequest:
    return GenerationRequest(request_id="r", prompt="p", prompt_tokens=1, **fields)


def test_sampling_arguments_default_max_tokens_and_drop_unset_fields() -> None:
    assert sampling_arguments(_request(), 512) == {"max_tokens": 512}
    request = _request(max_tokens=7, stop=("a", "b"), seed=3, temperature=0.0, top_p=0.9)
    assert sampling_arguments(request, 512) == {
        "max_tokens": 7,
        "stop": ["a", "b"],
        "seed": 3,
        "temperature": 0.0,
        "top_p": 0.9,
    }


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_answers_keep_their_finish_reason(reason: str) -> None:
    assert openai_finish_reason(reason) == reason


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("cancelled", EngineUnavailableError),
        ("timeout", EngineFaultError),
        ("not_finished", EngineFaultError),
    ],
)
def test_other_finish_reasons_are_errors(reason: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        openai_finish_reason(reason)


STATS = {
    "numActiveRequests": 5,
    "numQueuedRequests": 2,
    "inflightBatchingStats": {"numPausedRequests": 1},
    "kvCacheStats": {"usedNumBlocks": 30, "maxNumBlocks": 120, "cacheHitRate": 0.5},
}


def test_load_snapshot_reads_the_camelcase_iteration_stats() -> None:
    load = load_snapshot(STATS, in_flight=8, tokens_generated_total=99)
    assert load == LoadSnapshot(
        running=5, waiting=3, kv_cache_usage=0.25, tokens_generated_total=99
    )


def test_load_snapshot_is_idle_without_sequences_or_stats() -> None:
    idle = LoadSnapshot(0, 0, 0.0, 7)
    assert load_snapshot(STATS, in_flight=0, tokens_generated_total=7) == idle
    assert load_snapshot(None, in_flight=3, tokens_generated_total=7) == idle


def test_load_snapshot_survives_missing_sections() -> None:
    load = load_snapshot({"numActiveRequests": 1}, in_flight=1, tokens_generated_total=0)
    assert load == LoadSnapshot(1, 0, 0.0, 0)


def _iteration(latency_ms: float, context: int, generation: int, ctx_tokens: int) -> dict[str, Any]:
    return {
        "iterLatencyMS": latency_ms,
        "inflightBatchingStats": {
            "numContextRequests": context,
            "numGenRequests": generation,
            "numScheduledRequests": context + generation,
            "numCtxTokens": ctx_tokens,
        },
    }


def test_iterations_fold_into_decode_and_prefill_steps() -> None:
    tally = StepTally()
    for stats in (
        _iteration(500.0, 2, 1, 900),  # two prompts prefilled beside one decoding sequence
        _iteration(125.0, 0, 3, 0),
        _iteration(250.0, 0, 3, 0),
        _iteration(250.0, 1, 3, 300),
    ):
        tally = fold_iteration(tally, stats)
    # (Binary fractions of a second: the sums are exact.)
    assert tally.decode == DecodeSteps(steps=2, seconds=0.375, sequences=6)
    assert tally.prefill == PrefillSteps(steps=2, seconds=0.75, sequences=7, tokens=1200)


def test_iterations_without_a_time_or_a_batch_are_left_out() -> None:
    tally = StepTally()
    for stats in (_iteration(0.0, 0, 3, 0), _iteration(5.0, 0, 0, 0), {"iter": 3}):
        tally = fold_iteration(tally, stats)
    assert tally == StepTally()


def test_load_snapshot_carries_the_tally_when_idle_too() -> None:
    tally = fold_iteration(StepTally(), _iteration(125.0, 0, 2, 0))
    idle = load_snapshot(None, in_flight=0, tokens_generated_total=4, tally=tally)
    assert idle.decode_steps == DecodeSteps(1, 0.125, 2)
    assert idle.prefill_steps == PrefillSteps()
    busy = load_snapshot(STATS, in_flight=8, tokens_generated_total=4, tally=tally)
    assert (busy.running, busy.decode_steps) == (5, tally.decode)


def test_token_ids_of_accepts_a_list_or_a_batch_encoding() -> None:
    assert token_ids_of([1, 2, 3]) == (1, 2, 3)
    assert token_ids_of({"input_ids": [4, 5], "attention_mask": [1, 1]}) == (4, 5)
    with pytest.raises(EngineFaultError):
        token_ids_of("<|user|> hi")


def test_checkpoint_declares_fp8_in_modelopt_or_hf_format(tmp_path: Path) -> None:
    assert not checkpoint_declares_fp8(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not checkpoint_declares_fp8(tmp_path)
    hf = {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert checkpoint_declares_fp8(tmp_path)
    modelopt = {"quantization": {"quant_algo": "NVFP4"}}
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(modelopt))
    assert not checkpoint_declares_fp8(tmp_path)  # ModelOpt's file says what it is
    (tmp_path / "hf_quant_config.json").write_text(
        json.dumps({"quantization": {"quant_algo": "FP8"}})
    )
    assert checkpoint_declares_fp8(tmp_path)
