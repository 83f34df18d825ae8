"""The `transformers` backend with the real SmolLM2-135M-Instruct on CPU, behind a real engine
worker (grpc.aio on loopback): real text, real token counts, continuous batching.

One worker serves the whole module (loading takes seconds; converting the GGUF once takes
~30 s and is cached). Greedy requests (temperature 0) make answers comparable across calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoTokenizer

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.config import AdaptiveConfig
from control_plane.balancer.load import GroupLoad, ModelLoad, step_sample
from control_plane.load_sampler import LoadSampler
from engine_workers.backends.cb_internals import read_load, result_handler_count
from engine_workers.backends.hf_transformers import TransformersBackend
from engine_workers.backends.model_files import model_directory
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal.bench.ports import PortPicker
from frugal.v1 import inference_pb2 as pb
from frugal.wire import ENGINE_METRICS_PORT_OFFSET
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "smollm2"
QUESTION = "What is the capital of France?"
pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker() -> AsyncIterator[EngineWorker]:
    port = PortPicker().take(engine=True)
    settings = EngineSettings(
        port=port,
        metrics_port=port + ENGINE_METRICS_PORT_OFFSET,
        model=MODEL,
        backend="transformers",
        parameters={"threads": 2, "kv_cache_tokens": 8192, "page_size": 64},
    )
    async with serving(settings, grace=1.0) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session")
async def stub(worker: EngineWorker) -> AsyncIterator[Any]:
    async with inference_stub(worker.address) as client:
        yield client


def backend(worker: EngineWorker) -> TransformersBackend:
    assert isinstance(worker.backend, TransformersBackend)
    return worker.backend


def chat(content: str = QUESTION, **fields: Any) -> Any:
    if "stop" in fields:
        fields["stop"] = proto_value(fields["stop"])
    message = pb.ChatMessage(role="user", content=proto_value(content))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message], **fields)


async def streamed(stub: Any, request: Any) -> tuple[str, list[dict[str, Any]]]:
    """The concatenated text of a streamed answer, and its parsed events."""
    events = []
    async for body in stub.StreamChatCompletionEvents(request):
        for line in body.data.decode().split("\n"):
            if line.startswith("data: {"):
                events.append(json.loads(line[len("data: ") :]))
    text = "".join(
        choice["delta"].get("content", "") for event in events for choice in event["choices"]
    )
    return text, events


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_real_answer_with_real_token_counts(stub: Any) -> None:
    answer = await stub.CreateChatCompletion(chat(temperature=0))
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    tokenizer = AutoTokenizer.from_pretrained(model_directory("smollm2-135m-instruct"))
    template: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True
    )
    ids = template if isinstance(template, list) else template["input_ids"]
    assert answer.usage.prompt_tokens == len(ids)
    text_tokens = len(tokenizer.encode(answer.choices[0].message.content))
    assert answer.usage.completion_tokens == text_tokens + 1  # and the end-of-turn token


async def test_a_streamed_answer_is_the_unary_answer_in_deltas(stub: Any) -> None:
    unary = await stub.CreateChatCompletion(chat(temperature=0))
    text, events = await streamed(stub, chat(temperature=0, stream_options={"include_usage": True}))
    assert text == unary.choices[0].message.content
    assert len([e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]) > 3
    assert events[-1]["usage"]["completion_tokens"] == unary.usage.completion_tokens


async def test_max_tokens_ends_with_length(stub: Any) -> None:
    answer = await stub.CreateChatCompletion(chat("Tell me a long story.", max_tokens=3))
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


async def test_a_stop_string_trims_the_text_and_stops_the_engine(
    stub: Any, worker: EngineWorker
) -> None:
    answer = await stub.CreateChatCompletion(chat(temperature=0, stop=["Paris"]))
    text = answer.choices[0].message.content
    assert "Paris" not in text and text.startswith("The capital of France")
    assert answer.choices[0].finish_reason == "stop"
    await eventually(lambda: backend(worker).load().running == 0)
    assert result_handler_count(backend(worker)._manager) == 0


async def test_a_per_request_seed_is_refused_with_a_clear_error(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateChatCompletion(chat(seed=7))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("seed: not supported by this engine")


async def test_a_prompt_longer_than_the_cache_is_refused(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateChatCompletion(chat("word " * 9000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context" in caught.value.details()


async def test_sampling_is_per_request_inside_one_batch(stub: Any) -> None:
    """Greedy, nearly-greedy and hot requests share one batch. Greedy ones agree, and so does
    temperature 1 with top_p 1e-6 (only the likeliest token is left); hot ones differ from
    each other and from them. If sampling were global, one side of this would fail."""
    request = "Write one sentence about the sea."
    sampling: list[dict[str, float]] = [
        {"temperature": 0},
        {"temperature": 0},
        {"temperature": 1.0, "top_p": 1e-6},
        {"temperature": 2.0, "top_p": 1.0},
        {"temperature": 2.0, "top_p": 1.0},
    ]
    answers = await asyncio.gather(
        *(stub.CreateChatCompletion(chat(request, max_tokens=24, **s)) for s in sampling)
    )
    greedy, again, narrow, hot, hotter = (a.choices[0].message.content for a in answers)
    assert greedy == again == narrow
    assert len({greedy, hot, hotter}) == 3


async def test_a_client_leaving_stops_generation(stub: Any, worker: EngineWorker) -> None:
    call = stub.StreamChatCompletionEvents(chat("Tell me a very long story.", max_tokens=400))
    async for _ in call:
        if backend(worker).load().running == 1:
            break
    call.cancel()
    await eventually(lambda: backend(worker).load().running == 0)
    assert result_handler_count(backend(worker)._manager) == 0


async def test_the_load_adapter_reads_the_managers_internals(
    stub: Any, worker: EngineWorker
) -> None:
    """Fails if a transformers upgrade moves what cb_internals reads."""
    manager = backend(worker)._manager
    call = stub.CreateChatCompletion(chat("Count from one to fifty.", max_tokens=60))
    await eventually(lambda: read_load(manager).running == 1)
    busy = read_load(manager)
    assert busy.waiting == 0 and 0 < busy.kv_cache_usage < 1
    await call
    await eventually(lambda: read_load(manager).running == 0)


async def _sample_steps(
    sampler: LoadSampler, worker: EngineWorker, load: Awaitable[Any], streams: int
) -> list[Any]:
    """Step samples read from the worker's /metrics every 0.5 s while `load` runs, from the
    moment all its `streams` are in the batch."""
    task = asyncio.ensure_future(load)
    await eventually(lambda: backend(worker).load().running == streams, timeout=60)
    samples = []
    previous = (await sampler.engine_counters([worker.address]))[worker.address]
    while not task.done():
        await asyncio.sleep(0.5)
        current = (await sampler.engine_counters([worker.address]))[worker.address]
        if (sample := step_sample(previous, current)) is not None:
            samples.append(sample)
        previous = current
    await task
    return samples


async def test_the_adaptive_policy_learns_step_times_from_this_backend(
    stub: Any, worker: EngineWorker
) -> None:
    """The balancer's own sampler and policy, fed from the worker's /metrics."""
    sampler = LoadSampler([])
    samples = []
    try:
        for streams in (1, 4):
            requests = [chat("Tell me a long story.", max_tokens=60) for _ in range(streams)]
            load = asyncio.gather(*(stub.CreateChatCompletion(r) for r in requests))
            samples += await _sample_steps(sampler, worker, load, streams)
    finally:
        await sampler.close()
    assert {round(s.running_per_replica) for s in samples} >= {1, 4}
    policy = AdaptivePolicy(AdaptiveConfig())
    group = GroupLoad(group="cpu", replicas=1, in_flight=0, samples=tuple(samples))
    policy.decide(ModelLoad(model=MODEL, groups=(group,), now=0.0))
    line = policy.fitted("cpu")
    assert line is not None and line.a_ms > 0


async def test_metrics_follow_the_model_server_protocol(stub: Any, worker: EngineWorker) -> None:
    """The gauges and histograms that the Gateway API Inference Extension and vLLM scrape."""
    await stub.CreateChatCompletion(chat(max_tokens=8))
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{worker.metrics_port}/metrics")).text
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    for gauge in ("running", "waiting"):
        assert samples[f"frugal_engine_num_requests_{gauge}"] >= 0
    assert 0 <= samples["frugal_engine_kv_cache_usage_perc"] <= 1
    for histogram in (
        "time_to_first_token_seconds",
        "time_per_output_token_seconds",
        "request_prompt_tokens",
        "request_generation_tokens",
    ):
        assert samples[f"frugal_engine_{histogram}_count"] > 0
    assert samples["frugal_engine_request_generation_tokens_sum"] >= 8
