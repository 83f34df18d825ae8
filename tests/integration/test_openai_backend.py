"""Integration tests of the `openai` backend: an engine worker (real grpc.aio server on
loopback) in front of a real `transformers serve` (SmolLM2-135M-Instruct on CPU, continuous
batching), started once for the module on a free port. Its log is shown if a test fails.

`transformers serve` 5.23.0 has no /metrics, so its load figures are the worker's own count;
the metrics poll is tested against a sim worker's /metrics (a Frugal engine as upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from transformers import AutoTokenizer

from engine_workers.backends.model_files import model_directory
from engine_workers.backends.openai_upstream import OpenAIUpstreamBackend
from engine_workers.backends.sim_model import SimProfile
from engine_workers.engine import GenerationRequest
from engine_workers.errors import EngineUnavailableError
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from engine_workers.tokenizer import count_tokens
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "smol"  # the name the worker serves; upstream it is the model directory
QUESTION = "What is the capital of France?"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TransformersServer:
    process: subprocess.Popen[bytes]
    port: int
    model: str  # the directory it is pinned to: the model name requests must send
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _wait_healthy(server: TransformersServer, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"transformers serve did not become healthy:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def upstream(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersServer]:
    directory = str(model_directory("smollm2-135m-instruct"))
    port = _free_port()
    log_path = tmp_path_factory.mktemp("transformers-serve") / "serve.log"
    command = [
        str(BIN / "transformers"), "serve", directory, "--device", "cpu",
        "--continuous-batching", "--cb-num-blocks", "256", "--cb-max-batch-tokens", "512",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    server = TransformersServer(process, port, directory, log_path)
    failed_before = request.session.testsfailed
    try:
        _wait_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if request.session.testsfailed > failed_before:
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print(f"\n--- transformers serve log (tail) ---\n{server.log_tail()}")


@contextlib.asynccontextmanager
async def running_worker(**parameters: Any) -> AsyncIterator[EngineWorker]:
    settings = EngineSettings(port=0, model=MODEL, backend="openai", parameters=parameters)
    async with serving(settings) as worker:
        yield worker


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker(upstream: TransformersServer) -> AsyncIterator[EngineWorker]:
    async with running_worker(
        base_url=upstream.base_url, upstream_model=upstream.model, metrics_interval_s=0.2
    ) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session")
async def stub(worker: EngineWorker) -> AsyncIterator[Any]:
    async with inference_stub(worker.address) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer(upstream: TransformersServer) -> Any:
    return AutoTokenizer.from_pretrained(upstream.model)


def chat_request(content: str = QUESTION, **fields: Any) -> Any:
    message = pb.ChatMessage(role="user", content=proto_value(content))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message], **fields)


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _chat_prompt_tokens(tokenizer: Any, content: str) -> int:
    messages = [{"role": "user", "content": content}]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(encoded["input_ids"])


async def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_unary_chat_answers_with_upstream_text_and_usage(stub: Any, tokenizer: Any) -> None:
    body = _json(await stub.CreateChatCompletion(chat_request(max_tokens=20)))
    [choice] = body["choices"]
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    # The upstream's count (its chat template adds a system prompt), not our estimate.
    assert usage["prompt_tokens"] == _chat_prompt_tokens(tokenizer, QUESTION)
    assert usage["prompt_tokens"] != count_tokens(QUESTION)
    assert usage["completion_tokens"] >= count_tokens(choice["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_streamed_chat_sends_deltas_then_usage(
    stub: Any, worker: EngineWorker, tokenizer: Any
) -> None:
    generated_before = worker.backend.load().tokens_generated_total
    request = chat_request(max_tokens=20, stream_options=pb.StreamOptions(include_usage=True))
    chunks = [_json(chunk) async for chunk in stub.StreamChatCompletion(request)]
    role, *deltas, final, usage_chunk = chunks
    assert role["choices"][0]["delta"]["role"] == "assistant"
    texts = [chunk["choices"][0]["delta"]["content"] for chunk in deltas]
    assert len(texts) >= 3 and all(texts)
    assert "Paris" in "".join(texts)
    assert final["choices"][0]["finish_reason"] == "stop"
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] == _chat_prompt_tokens(tokenizer, QUESTION)
    assert usage["completion_tokens"] >= len(texts)
    generated = worker.backend.load().tokens_generated_total - generated_before
    assert generated == usage["completion_tokens"]


async def test_completion_is_forwarded_to_v1_completions(stub: Any, tokenizer: Any) -> None:
    prompt = "Photosynthesis converts sunlight into"
    request = pb.CompletionRequest(model=MODEL, prompt=proto_value(prompt), max_tokens=6)
    body = _json(await stub.CreateCompletion(request))
    [choice] = body["choices"]
    assert choice["text"].strip()
    assert choice["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == len(tokenizer(prompt).input_ids)
    assert body["usage"]["prompt_tokens"] != count_tokens(prompt)
    assert body["usage"]["completion_tokens"] == 6


async def test_upstream_down_is_unavailable() -> None:
    async with (
        running_worker(base_url=f"http://127.0.0.1:{_free_port()}/v1") as down,
        inference_stub(down.address) as client,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await client.CreateChatCompletion(chat_request())
        assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot connect to the upstream" in (unary.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in client.StreamChatCompletion(chat_request()):
                pass
        assert streamed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert down.backend.load().running == 0


async def test_unknown_upstream_model_is_not_found(upstream: TransformersServer) -> None:
    async with (
        running_worker(base_url=upstream.base_url, upstream_model="no-such-model") as wrong,
        inference_stub(wrong.address) as client,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.CreateChatCompletion(chat_request())
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'no-such-model'" in (raised.value.details() or "")


def _connected_client_ports(server_port: int) -> set[int]:
    """Client ports of the established TCP connections to a loopback server (Linux)."""
    ports = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = row.split()[1:4]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == server_port:
            ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


async def test_cancelling_a_stream_closes_the_upstream_request(
    upstream: TransformersServer,
) -> None:
    # A fresh worker opens a connection of its own for the stream; its metrics poll goes
    # nowhere, so that connection is the only new one at the upstream.
    nowhere = f"http://127.0.0.1:{_free_port()}/metrics"
    async with (
        running_worker(base_url=upstream.base_url, upstream_model=upstream.model,
                       metrics_url=nowhere) as fresh,
        inference_stub(fresh.address) as client,
    ):  # fmt: skip
        before = _connected_client_ports(upstream.port)
        call = client.StreamChatCompletion(chat_request("Write a long story about a dragon."))
        received = 0
        async for _ in call:
            received += 1
            if received == 4:
                break
        assert fresh.backend.load().running == 1
        stream_connections = _connected_client_ports(upstream.port) - before
        assert len(stream_connections) == 1
        call.cancel()
        await _wait_until(lambda: fresh.backend.load().running == 0)
        await _wait_until(lambda: not stream_connections & _connected_client_ports(upstream.port))
        generated = fresh.backend.load().tokens_generated_total
        await asyncio.sleep(0.3)
        assert fresh.backend.load().tokens_generated_total == generated


async def test_abort_ends_the_sequence_with_unavailable(worker: EngineWorker) -> None:
    backend = worker.backend
    assert isinstance(backend, OpenAIUpstreamBackend)
    request = GenerationRequest(request_id="abort-me", prompt="Tell me a story:", prompt_tokens=4)
    deltas = backend.generate(request)
    first = await anext(deltas)
    assert first.text and backend.load().running == 1
    backend.abort("abort-me")
    with pytest.raises(EngineUnavailableError, match="aborted"):
        while True:
            await anext(deltas)
    assert backend.load().running == 0


async def test_load_counts_requests_in_flight_without_upstream_metrics(
    stub: Any, worker: EngineWorker
) -> None:
    assert worker.backend.load().running == 0
    call = stub.StreamChatCompletion(chat_request(max_tokens=40))
    peak = 0
    async for _ in call:
        snapshot = worker.backend.load()
        peak = max(peak, snapshot.running)
        assert snapshot.waiting == 0 and snapshot.kv_cache_usage == 0.0
    assert peak == 1
    assert worker.backend.load().running == 0


async def test_load_comes_from_the_upstream_metrics_when_it_has_them(
    upstream: TransformersServer,
) -> None:
    metrics_port = _free_port()
    long_output = {"time_scale": 0.1, "output_tokens_min": 50_000, "output_tokens_max": 50_000}
    sim_settings = EngineSettings(
        port=0, model="sim", metrics_port=metrics_port, sim=SimProfile.model_validate(long_output)
    )
    sim = EngineWorker(sim_settings)
    await sim.start()
    try:
        async with (
            running_worker(
                base_url=upstream.base_url,
                metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
                metrics_interval_s=0.05,
            ) as polled,
            inference_stub(sim.address) as sim_stub,
        ):
            request = pb.ChatCompletionRequest(
                model="sim", messages=[pb.ChatMessage(role="user", content=proto_value(QUESTION))]
            )
            call = sim_stub.StreamChatCompletion(request)
            await anext(aiter(call))
            await _wait_until(lambda: polled.backend.load().running == 1)
            assert polled.backend.load().kv_cache_usage > 0
            call.cancel()
            await _wait_until(lambda: polled.backend.load().running == 0)
    finally:
        await sim.stop(grace=0.5)
