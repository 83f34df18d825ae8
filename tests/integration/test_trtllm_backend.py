"""Integration tests of the `trtllm` backend: a real EngineWorker and gRPC channel on loopback,
with the TensorRT-LLM test double (tests/doubles/tensorrt_llm_double) standing in for the
engine, which cannot run here. They prove the adapter's use of the LLM API surface, not
TensorRT-LLM itself (see the double's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from control_plane.load_sampler import engine_samples
from engine_workers.backends.trtllm import TrtllmStartError
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving
from tests.helpers.envoy_process import free_port

MODEL = "trtllm-test"
DOUBLE_ROOT = Path(__file__).resolve().parents[1] / "doubles" / "tensorrt_llm_double"
# The double's tokenizer gives one token per word of its chat template:
# "<|system|> Be brief. <|user|> Hello there <|assistant|>".
CHAT_PROMPT_TOKENS = 7
OUTPUT = "alpha bravo charlie delta echo foxtrot golf hotel alpha bravo"  # 10 tokens, then EOS


def _drop_double_modules() -> None:
    for name in [n for n in sys.modules if n == "tensorrt_llm" or n.startswith("tensorrt_llm.")]:
        del sys.modules[name]


@pytest.fixture
def trtllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The double importable as `tensorrt_llm` for one test, with fresh settings."""
    _drop_double_modules()
    monkeypatch.syspath_prepend(str(DOUBLE_ROOT))
    yield importlib.import_module("tensorrt_llm")
    _drop_double_modules()


@contextlib.asynccontextmanager
async def running_worker(metrics_port: int = 0, **parameters: Any) -> AsyncIterator[EngineWorker]:
    settings = EngineSettings(
        port=0,
        metrics_port=metrics_port,
        model=MODEL,
        group="tp2",
        backend="trtllm",
        parameters={"model": "/models/mixtral", "stats_interval_s": 0.01, **parameters},
    )
    async with serving(settings) as worker:
        yield worker


def chat_request(**fields: Any) -> Any:
    if "stop" in fields:
        fields["stop"] = proto_value(fields["stop"])
    messages = [
        pb.ChatMessage(role="system", content=proto_value("Be brief.")),
        pb.ChatMessage(role="user", content=proto_value("Hello there")),
    ]
    return pb.ChatCompletionRequest(model=MODEL, messages=messages, **fields)


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _gauges(worker: EngineWorker) -> tuple[int, int, float]:
    load = worker.backend.load()
    return load.running, load.waiting, load.kv_cache_usage


async def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_unary_chat_renders_the_template_and_reports_usage(trtllm: ModuleType) -> None:
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        body = _json(await stub.CreateChatCompletion(chat_request()))
    [choice] = body["choices"]
    assert choice["message"]["content"] == OUTPUT
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": CHAT_PROMPT_TOKENS,
        "completion_tokens": 10,
        "total_tokens": CHAT_PROMPT_TOKENS + 10,
    }


async def test_streamed_chat_yields_each_text_diff(trtllm: ModuleType) -> None:
    request = chat_request(stream_options=pb.StreamOptions(include_usage=True))
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        chunks = [_json(c) async for c in stub.StreamChatCompletion(request)]
        assert worker.backend.load().tokens_generated_total == 10
    _first, *tokens, final, usage = chunks
    pieces = [c["choices"][0]["delta"]["content"] for c in tokens]
    assert pieces == ["alpha", *(f" {word}" for word in OUTPUT.split()[1:])]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["completion_tokens"] == 10


async def test_max_tokens_ends_with_length(trtllm: ModuleType) -> None:
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        response = await stub.CreateChatCompletion(chat_request(max_tokens=3))
    assert response.choices[0].message.content == "alpha bravo charlie"
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


async def test_stop_string_ends_with_stop_and_is_left_out(trtllm: ModuleType) -> None:
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        response = await stub.CreateChatCompletion(chat_request(stop=["delta"]))
    assert response.choices[0].message.content == "alpha bravo charlie"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 3


async def test_completion_prompt_is_encoded_by_the_engine_tokenizer(trtllm: ModuleType) -> None:
    request = pb.CompletionRequest(
        model=MODEL, prompt=proto_value("Once upon a time"), max_tokens=2
    )
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        response = await stub.CreateCompletion(request)
    assert response.choices[0].text == "alpha bravo"
    assert response.usage.prompt_tokens == 4


async def test_llm_is_built_from_the_profile_off_the_event_loop(trtllm: ModuleType) -> None:
    profile: dict[str, Any] = {
        "tokenizer": "/models/mixtral-tokenizer",
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
        "moe_expert_parallel_size": 2,
        "moe_tensor_parallel_size": 2,
        "kv_cache_dtype": "fp8",
        "free_gpu_memory_fraction": 0.85,
        "enable_block_reuse": False,
        "tokens_per_block": 64,
        "scheduler_policy": "max_utilization",
        "max_batch_size": 256,
        "max_num_tokens": 4096,
    }
    async with running_worker(**profile):
        [llm] = trtllm.LLM.instances
    llmapi = trtllm.llmapi
    assert (llm.model, llm.tokenizer_path) == ("/models/mixtral", "/models/mixtral-tokenizer")
    assert not llm.built_on_main_thread
    assert llm.kwargs == {
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
        "moe_expert_parallel_size": 2,
        "moe_tensor_parallel_size": 2,
        "max_batch_size": 256,
        "max_num_tokens": 4096,
        "enable_iter_perf_stats": True,
        "kv_cache_config": llmapi.KvCacheConfig(
            free_gpu_memory_fraction=0.85,
            enable_block_reuse=False,
            dtype="fp8",
            tokens_per_block=64,
        ),
        "scheduler_config": llmapi.SchedulerConfig(
            capacity_scheduler_policy=llmapi.CapacitySchedulerPolicy.MAX_UTILIZATION
        ),
    }
    assert llm.shut_down


async def test_cancelling_a_stream_aborts_the_request_in_the_engine(trtllm: ModuleType) -> None:
    trtllm.settings.tokens_before_eos = 1_000_000
    trtllm.settings.step_seconds = 0.005
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        [llm] = trtllm.LLM.instances
        call = stub.StreamChatCompletion(chat_request())
        received = 0
        async for _ in call:
            received += 1
            if received == 4:
                break
        await _wait_until(lambda: worker.backend.load().running == 1)
        assert llm.unfinished_requests() == 1
        call.cancel()
        await _wait_until(lambda: llm.unfinished_requests() == 0)
        await _wait_until(lambda: worker.backend.load().running == 0)


async def test_the_backend_stops_when_the_stats_iterator_loses_the_cancel(
    trtllm: ModuleType,
) -> None:
    trtllm.settings.stats_iterator_loses_cancels = True
    trtllm.settings.tokens_before_eos = 1_000_000
    async with running_worker() as worker, inference_stub(worker.address) as stub:
        call = stub.StreamChatCompletion(chat_request())
        await call.read()
        await _wait_until(lambda: worker.backend.load().running == 1)
        # Stats arrive every engine step, so the stats task is waiting in the iterator.
        stopping = asyncio.ensure_future(worker.backend.stop())
        done, _ = await asyncio.wait({stopping}, timeout=30)
        trtllm.settings.stats_iterator_loses_cancels = False  # lets a failed test end
        call.cancel()
        assert done, "the backend is still waiting on its stats task"
    assert trtllm.LLM.instances[0].shut_down


async def test_load_follows_the_engine_iteration_stats(trtllm: ModuleType) -> None:
    trtllm.settings.tokens_before_eos = 1_000_000
    trtllm.settings.step_seconds = 0.005
    trtllm.settings.kv_capacity_tokens = 640
    async with running_worker(max_batch_size=2, tokens_per_block=16) as worker:
        async with inference_stub(worker.address) as stub:
            calls = [stub.StreamChatCompletion(chat_request()) for _ in range(3)]
            readers = [asyncio.ensure_future(call.read()) for call in calls]
            await _wait_until(lambda: worker.backend.load().waiting == 1)
            running, _, kv_cache_usage = _gauges(worker)
            assert running == 2
            # Each running sequence holds ceil((7 prompt + n output) / 16) of the 40 blocks.
            assert 2 / 40 <= kv_cache_usage <= 1.0
            for call in calls:
                call.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        idle = (0, 0, 0.0)
        await _wait_until(lambda: _gauges(worker) == idle)


async def test_iteration_stats_become_the_step_tallies_the_balancer_reads(
    trtllm: ModuleType,
) -> None:
    trtllm.settings.prefill_seconds_per_token = 0.001
    port = free_port()
    async with running_worker(metrics_port=port) as worker:
        async with inference_stub(worker.address) as stub:
            await stub.CreateChatCompletion(chat_request())
        # The iteration that admits the sequence prefills its prompt and makes the first
        # token; nine more make the rest and a tenth ends it at the end-of-sequence token.
        await _wait_until(lambda: _steps(worker) == (1, 10))
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    values = engine_samples(body)
    assert values["frugal_engine_prefill_steps_total"] == 1
    assert values["frugal_engine_prefill_step_sequences_total"] == 1
    assert values["frugal_engine_prefill_step_tokens_total"] == CHAT_PROMPT_TOKENS
    assert values["frugal_engine_prefill_step_seconds_total"] > 0
    assert values["frugal_engine_decode_steps_total"] == 10
    assert values["frugal_engine_decode_step_sequences_total"] == 10
    assert values["frugal_engine_decode_step_seconds_total"] > 0


def _steps(worker: EngineWorker) -> tuple[int, int]:
    load = worker.backend.load()
    assert load.prefill_steps is not None and load.decode_steps is not None
    return load.prefill_steps.steps, load.decode_steps.steps


async def test_fp8_prequantized_weights_are_checked_before_loading(
    trtllm: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
    with pytest.raises(TrtllmStartError, match="weights: 'fp8-prequantized'"):
        async with running_worker(model=str(tmp_path), weights="fp8-prequantized"):
            pass
    assert trtllm.LLM.instances == []
    quant = {"quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(quant))
    async with running_worker(model=str(tmp_path), weights="fp8-prequantized"):
        assert len(trtllm.LLM.instances) == 1


async def test_missing_tensorrt_llm_fails_the_worker_at_start_saying_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _drop_double_modules()
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import fails, installed or not
    with pytest.raises(TrtllmStartError) as failure:
        async with running_worker():
            pass
    message = str(failure.value)
    assert "https://pypi.nvidia.com" in message
    assert "nvcr.io/nvidia/tensorrt-llm/release" in message
