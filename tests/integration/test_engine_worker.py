"""Integration tests of an engine worker: a real grpc.aio server on loopback, the sim backend."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from control_plane.load_sampler import engine_samples
from engine_workers.backends.sim_model import SimProfile
from engine_workers.prompt import ChatTurn, chat_messages, role_tagged_text
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from engine_workers.tokenizer import count_tokens
from frugal import wire
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "sim-test"
FAST_SIM = {"time_scale": 0.01, "jitter": 0.0, "output_tokens_min": 8, "output_tokens_max": 24}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_worker(**overrides: Any) -> AsyncIterator[EngineWorker]:
    sim = {**FAST_SIM, **overrides.pop("sim", {})}
    profile = SimProfile.model_validate(sim)
    settings = EngineSettings(port=0, model=MODEL, group="g1", sim=profile, **overrides)
    async with serving(settings) as worker:
        yield worker


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker() -> AsyncIterator[EngineWorker]:
    async with running_worker(metrics_port=_free_port()) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def echo_worker() -> AsyncIterator[EngineWorker]:
    async with running_worker(echo=True) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session")
async def stub(worker: EngineWorker) -> AsyncIterator[Any]:
    async with inference_stub(worker.address) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def echo_stub(echo_worker: EngineWorker) -> AsyncIterator[Any]:
    async with inference_stub(echo_worker.address) as client:
        yield client


def chat_request(content: object = "Hello there", **fields: Any) -> Any:
    fields.setdefault("model", MODEL)
    messages = fields.pop(
        "messages",
        [
            pb.ChatMessage(role="system", content=proto_value("Be brief.")),
            pb.ChatMessage(role="user", content=proto_value(content)),
        ],
    )
    if "stop" in fields:
        fields["stop"] = proto_value(fields["stop"])
    return pb.ChatCompletionRequest(messages=messages, **fields)


def completion_request(prompt: object = "Once upon a time", **fields: Any) -> Any:
    fields.setdefault("model", MODEL)
    if "stop" in fields:
        fields["stop"] = proto_value(fields["stop"])
    return pb.CompletionRequest(prompt=proto_value(prompt), **fields)


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _metadata(pairs: Any) -> dict[str, str]:
    return {key: value for key, value in pairs}


async def test_unary_chat_completion(stub: Any) -> None:
    call = stub.CreateChatCompletion(chat_request(seed=7))
    response = await call
    body = _json(response)
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["model"] == MODEL
    assert abs(body["created"] - time.time()) < 60
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    prompt = role_tagged_text(
        chat_messages([ChatTurn("system", "Be brief."), ChatTurn("user", "Hello there")])
    )
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_tokens(prompt)
    assert usage["completion_tokens"] == count_tokens(choice["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    trailers = _metadata(await call.trailing_metadata())
    assert float(trailers[wire.ENGINE_MS]) > 0
    assert 0 < float(trailers[wire.ENGINE_TTFT_MS]) <= float(trailers[wire.ENGINE_MS])


async def test_streaming_chat_matches_openai_chunk_shape(stub: Any) -> None:
    request = chat_request(seed=7, stream_options=pb.StreamOptions(include_usage=True))
    call = stub.StreamChatCompletion(request)
    chunks = [_json(chunk) async for chunk in call]
    first, *tokens, final, usage_chunk = chunks
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and first["id"].startswith("chatcmpl-")
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    assert tokens and all(set(c["choices"][0]["delta"]) == {"content"} for c in tokens)
    assert all("finish_reason" not in c["choices"][0] for c in tokens)
    assert final["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert "usage" not in final
    assert usage_chunk["choices"] == []
    text = "".join(c["choices"][0]["delta"]["content"] for c in tokens)
    assert usage_chunk["usage"]["completion_tokens"] == count_tokens(text) == len(tokens)
    # Same seed, same text as the unary call.
    unary = await stub.CreateChatCompletion(chat_request(seed=7))
    assert unary.choices[0].message.content == text
    trailers = _metadata(await call.trailing_metadata())
    assert float(trailers[wire.ENGINE_MS]) > 0


async def test_streaming_chat_without_include_usage_ends_with_finish_chunk(stub: Any) -> None:
    chunks = [_json(c) async for c in stub.StreamChatCompletion(chat_request(max_tokens=3))]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    assert all("usage" not in c for c in chunks)
    assert len(chunks) == 1 + 3 + 1


async def test_max_completion_tokens_takes_precedence(stub: Any) -> None:
    response = await stub.CreateChatCompletion(chat_request(max_tokens=10, max_completion_tokens=2))
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 2


async def test_unary_completion(stub: Any) -> None:
    call = stub.CreateCompletion(completion_request(["Once upon a time"], max_tokens=4))
    body = _json(await call)
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 4,
        "total_tokens": 8,
    }
    assert count_tokens(choice["text"]) == 4
    assert wire.ENGINE_MS in _metadata(await call.trailing_metadata())


async def test_streaming_completion_with_usage(stub: Any) -> None:
    request = completion_request(seed=3, stream_options=pb.StreamOptions(include_usage=True))
    chunks = [_json(c) async for c in stub.StreamCompletion(request)]
    *tokens, final, usage_chunk = chunks
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert all(c["id"].startswith("cmpl-") for c in chunks)
    assert all("finish_reason" not in c["choices"][0] for c in tokens)
    assert final["choices"] == [{"index": 0, "text": "", "finish_reason": "stop"}]
    text = "".join(c["choices"][0]["text"] for c in tokens)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == count_tokens(text) == len(tokens)
    assert usage_chunk["usage"]["prompt_tokens"] == 4


async def test_echo_streams_last_user_message_intact_and_in_order(echo_stub: Any) -> None:
    text = "  The quick brown fox,\n  jumps over\tthe lazy dog. 1 2 3 4 5 6 7 8 9 10 "
    messages = [
        pb.ChatMessage(role="user", content=proto_value("not this one")),
        pb.ChatMessage(role="assistant", content=proto_value("ok")),
        pb.ChatMessage(role="user", content=proto_value([{"type": "text", "text": text}])),
    ]
    chunks = [c async for c in echo_stub.StreamChatCompletion(chat_request(messages=messages))]
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert "".join(pieces) == text
    assert len(pieces) == count_tokens(text)
    assert chunks[-1].choices[0].finish_reason == "stop"
    completion = await echo_stub.CreateCompletion(completion_request(text))
    assert completion.choices[0].text == text


async def test_stop_string_split_across_tokens(echo_stub: Any) -> None:
    response = await echo_stub.CreateChatCompletion(
        chat_request("alpha beta gamma delta", stop=["a gam", "zzz"])
    )
    assert response.choices[0].message.content == "alpha bet"
    assert response.choices[0].finish_reason == "stop"
    streamed = [
        c.choices[0].delta.content
        async for c in echo_stub.StreamChatCompletion(chat_request("one two three", stop="two"))
    ]
    assert "".join(streamed) == "one "


@pytest.mark.parametrize(
    ("request_fields", "code", "details"),
    [
        ({"n": 2}, grpc.StatusCode.INVALID_ARGUMENT, "n: only n=1 is supported"),
        ({"model": "other"}, grpc.StatusCode.NOT_FOUND, "other"),
        ({"messages": []}, grpc.StatusCode.INVALID_ARGUMENT, "messages"),
        ({"stop": [1, 2]}, grpc.StatusCode.INVALID_ARGUMENT, "stop"),
    ],
)
@pytest.mark.parametrize("method", ["CreateChatCompletion", "StreamChatCompletion"])
async def test_chat_request_errors(
    stub: Any, method: str, request_fields: dict[str, Any], code: grpc.StatusCode, details: str
) -> None:
    call = getattr(stub, method)(chat_request(**request_fields))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method.startswith("Stream"):
            _ = [c async for c in call]
        else:
            await call
    assert raised.value.code() == code
    assert details in (raised.value.details() or "")


async def test_non_text_content_part_is_invalid(stub: Any) -> None:
    image = [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(chat_request(image))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_completion_prompt_list_must_hold_one_string(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateCompletion(completion_request(["a", "b"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_is_serving(worker: EngineWorker) -> None:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "frugal.v1.Inference"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_metrics_endpoint_shows_engine_metrics(worker: EngineWorker, stub: Any) -> None:
    assert worker.metrics_port
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    async with httpx.AsyncClient() as client:
        before = engine_samples((await client.get(url)).text)
        await stub.CreateChatCompletion(chat_request(max_tokens=5))
        response = await client.get(url)
    assert response.status_code == 200
    body = response.text
    labels = f'{{group="g1",model_name="{MODEL}"}}'
    for name in (
        "frugal_engine_num_requests_running",
        "frugal_engine_num_requests_waiting",
        "frugal_engine_kv_cache_usage_perc",
        "frugal_engine_generation_tokens_total",
        "frugal_engine_prompt_tokens_total",
        "frugal_engine_request_duration_seconds_count",
        "frugal_engine_time_to_first_token_seconds_count",
        "frugal_engine_decode_steps_total",
        "frugal_engine_decode_step_seconds_total",
        "frugal_engine_decode_step_sequences_total",
        "frugal_engine_prefill_steps_total",
        "frugal_engine_prefill_step_seconds_total",
        "frugal_engine_prefill_step_sequences_total",
        "frugal_engine_prefill_step_tokens_total",
    ):
        assert f"{name}{labels}" in body, name
    assert f"frugal_engine_num_requests_running{labels} 0.0" in body
    # 5 tokens for one sequence: its prefill step made the first, 4 decode steps the rest.
    after = engine_samples(body)
    for name in ("frugal_engine_decode_steps_total", "frugal_engine_decode_step_sequences_total"):
        assert after[name] - before.get(name, 0.0) == 4, name

    def made(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    # ... and the prefill step, one sequence, its whole prompt (the prompt-token counter's).
    assert made("frugal_engine_prefill_steps_total") == 1
    assert made("frugal_engine_prefill_step_sequences_total") == 1
    prompt = made("frugal_engine_prompt_tokens_total")
    assert prompt > 0 and made("frugal_engine_prefill_step_tokens_total") == prompt
    assert made("frugal_engine_prefill_step_seconds_total") > 0


async def test_many_concurrent_streams_are_batched(stub: Any, worker: EngineWorker) -> None:
    peak = 0

    async def consume() -> int:
        nonlocal peak
        count = 0
        async for _ in stub.StreamChatCompletion(chat_request(max_tokens=6)):
            peak = max(peak, worker.backend.load().running)
            count += 1
        return count

    counts = await asyncio.gather(*(consume() for _ in range(256)))
    assert counts == [1 + 6 + 1] * 256
    assert peak > 1
    assert worker.backend.load().running == 0


async def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_cancelling_a_stream_aborts_the_sequence() -> None:
    long_output = {"time_scale": 0.1, "output_tokens_min": 50_000, "output_tokens_max": 50_000}
    async with (
        running_worker(sim=long_output) as long_worker,
        inference_stub(long_worker.address) as s,
    ):
        call = s.StreamChatCompletion(chat_request())
        received = 0
        async for _ in call:
            received += 1
            if received == 4:
                break
        assert long_worker.backend.load().running == 1
        call.cancel()
        await _wait_until(lambda: long_worker.backend.load().running == 0)
        generated = long_worker.backend.load().tokens_generated_total
        await asyncio.sleep(0.1)
        assert long_worker.backend.load().tokens_generated_total == generated
        assert generated < 50_000


async def test_fault_after_tokens_fails_mid_stream_with_internal() -> None:
    async with (
        running_worker(sim={"fault_after_tokens": 3}) as faulty,
        inference_stub(faulty.address) as s,
    ):
        chunks = []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for chunk in s.StreamChatCompletion(chat_request()):
                chunks.append(chunk)
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].delta.content != "" for c in chunks[1:]] == [True] * 3
        assert faulty.backend.load().running == 0
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await s.CreateCompletion(completion_request())
        assert unary.value.code() == grpc.StatusCode.INTERNAL


async def test_graceful_stop_reports_not_serving_first() -> None:
    settings = EngineSettings(port=0, model=MODEL, sim=SimProfile.model_validate(FAST_SIM))
    stopping = EngineWorker(settings)
    await stopping.start()
    async with grpc.aio.insecure_channel(stopping.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="frugal.v1.Inference")
        )
        statuses = [(await watch.read()).status]
        stop = asyncio.create_task(stopping.stop(grace=1.0))
        statuses.append((await watch.read()).status)
        await stop
    assert statuses == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]


async def test_a_repeated_prompt_is_served_from_the_prefix_cache() -> None:
    """The sim engine's prefix cache over gRPC: the second request with the same long
    prompt finds its whole blocks cached, and the metrics say so."""
    port = _free_port()
    async with running_worker(sim={"prefix_block_tokens": 8}, metrics_port=port) as worker:
        long_prompt = " ".join(f"word{i}" for i in range(100))
        async with inference_stub(worker.address) as client:
            for _ in range(2):
                await client.CreateChatCompletion(chat_request(long_prompt, max_tokens=2))
        async with httpx.AsyncClient() as http:
            values = engine_samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
    queried = values["frugal_engine_prefix_cache_queried_tokens_total"]
    hits = values["frugal_engine_prefix_cache_hit_tokens_total"]
    # Two lookups of the same whole blocks; the second finds every one of them.
    assert queried > 0 and queried % 16 == 0
    assert hits == queried / 2
