"""A worker's `frugal.v1.EngineUsage` service, asked through `frugal.engine_usage`'s client:
real sim workers (grpc.aio on loopback), real channels, real cancellations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from engine_workers.backends.sim_model import SimProfile
from engine_workers.prompt import ChatTurn, chat_messages, role_tagged_text
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from engine_workers.tokenizer import count_tokens
from frugal import wire
from frugal.engine_usage import EngineUsage, EngineUsageClient
from frugal.v1 import engine_usage_pb2, engine_usage_pb2_grpc
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "sim-usage"
QUESTION = "Hello there"
FAST_SIM = {"time_scale": 0.01, "jitter": 0.0, "output_tokens_min": 8, "output_tokens_max": 24}
# About 8.5 ms a token (the tp2 step model unscaled): a stream outlives any test's wait.
LONG_SIM = {
    "time_scale": 1.0,
    "jitter": 0.0,
    "output_tokens_min": 50_000,
    "output_tokens_max": 50_000,
}


@contextlib.asynccontextmanager
async def running_worker(sim: dict[str, Any], **overrides: Any) -> AsyncIterator[EngineWorker]:
    profile = SimProfile.model_validate(sim)
    settings = EngineSettings(port=0, model=MODEL, sim=profile, **overrides)
    async with serving(settings) as worker:
        yield worker


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker() -> AsyncIterator[EngineWorker]:
    async with running_worker(FAST_SIM) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def long_worker() -> AsyncIterator[EngineWorker]:
    async with running_worker(LONG_SIM) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def echo_worker() -> AsyncIterator[EngineWorker]:
    async with running_worker(FAST_SIM, echo=True) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session")
async def usage() -> AsyncIterator[EngineUsageClient]:
    client = EngineUsageClient()
    try:
        yield client
    finally:
        await client.close()


def usage_stub(channel: grpc.aio.Channel) -> Any:
    """The generated stub, for what the client does not ask (an empty id, a long wait)."""
    stub_class: Any = engine_usage_pb2_grpc.EngineUsageStub  # generated, untyped
    return stub_class(channel)


def new_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def gateway(request_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata Envoy forwards: the request's x-request-id."""
    return ((wire.REQUEST_ID_HEADER, request_id),)


def chat(content: str = QUESTION, **fields: Any) -> Any:
    message = pb.ChatMessage(role="user", content=proto_value(content))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message], **fields)


def completion(**fields: Any) -> Any:
    return pb.CompletionRequest(model=MODEL, prompt=proto_value("Once upon a time"), **fields)


def prompt_tokens(content: str = QUESTION) -> int:
    return count_tokens(role_tagged_text(chat_messages([ChatTurn("user", content)])))


def trailer_usage(pairs: Any) -> EngineUsage:
    trailers = dict(pairs)
    return EngineUsage(
        finished=True,
        prompt_tokens=int(trailers[wire.PROMPT_TOKENS]),
        completion_tokens=int(trailers[wire.COMPLETION_TOKENS]),
    )


def event_texts(data: bytes) -> list[str]:
    """The text of each chunk event in an SSE body (chat or text completion); an error
    event has none."""
    texts = []
    for line in data.decode().split("\n"):
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: ") :]).get("choices", ()):
                text = choice.get("delta", {}).get("content") or choice.get("text")
                if text:
                    texts.append(text)
    return texts


async def stream_texts(stub: Any, method: str, request: Any, request_id: str) -> Any:
    """A streamed call and the texts it yields, one per text chunk or event."""
    call = getattr(stub, method)(request, metadata=gateway(request_id))

    async def texts() -> AsyncIterator[str]:
        async for message in call:
            if method.endswith("Events"):
                for text in event_texts(message.data):
                    yield text
            elif method == "StreamChatCompletion":
                if message.choices and message.choices[0].delta.content:
                    yield message.choices[0].delta.content
            elif message.choices and message.choices[0].text:
                yield message.choices[0].text

    return call, texts()


@pytest.mark.parametrize(
    ("method", "request_factory"),
    [
        ("StreamChatCompletionEvents", chat),
        ("StreamChatCompletion", chat),
        ("StreamCompletionEvents", completion),
        ("StreamCompletion", completion),
    ],
)
async def test_a_finished_streams_usage_is_its_trailers(
    worker: EngineWorker, usage: EngineUsageClient, method: str, request_factory: Any
) -> None:
    request_id = new_id()
    async with inference_stub(worker.address) as stub:
        call, texts = await stream_texts(stub, method, request_factory(), request_id)
        received = [text async for text in texts]
        trailers = trailer_usage(await call.trailing_metadata())
    assert trailers.completion_tokens == len(received) > 0
    # Final before the trailers left: no wait needed.
    assert await usage.request_usage(worker.address, request_id, wait_s=0) == trailers


async def test_a_unary_answers_usage_is_its_usage(
    worker: EngineWorker, usage: EngineUsageClient
) -> None:
    request_id = new_id()
    async with inference_stub(worker.address) as stub:
        answer = await stub.CreateChatCompletion(chat(max_tokens=5), metadata=gateway(request_id))
    recorded = await usage.request_usage(worker.address, request_id, wait_s=0)
    assert recorded == EngineUsage(True, prompt_tokens(), 5)
    assert recorded.total_tokens == answer.usage.total_tokens


@pytest.mark.parametrize("method", ["StreamChatCompletionEvents", "StreamChatCompletion"])
async def test_a_cancelled_stream_reports_what_the_engine_generated(
    long_worker: EngineWorker, usage: EngineUsageClient, method: str
) -> None:
    request_id, max_tokens = new_id(), 2_000
    async with inference_stub(long_worker.address) as stub:
        call, texts = await stream_texts(stub, method, chat(max_tokens=max_tokens), request_id)
        received = 0
        async for _ in texts:
            received += 1
            if received == 5:
                break
        call.cancel()
        # Asked at once: the reset may not have reached the engine yet, so it waits.
        recorded = await usage.request_usage(long_worker.address, request_id, wait_s=2.0)
    assert recorded is not None and recorded.finished
    assert recorded.prompt_tokens == prompt_tokens()
    assert received <= recorded.completion_tokens < max_tokens
    await asyncio.sleep(0.1)  # the engine has stopped: the record does not move
    assert await usage.request_usage(long_worker.address, request_id, wait_s=0) == recorded


async def test_tokens_an_output_check_held_back_are_counted(
    echo_worker: EngineWorker, usage: EngineUsageClient
) -> None:
    request_id = new_id()
    text = "one two secretword three four five"
    checks = pb.OutputChecks(detectors=["BLOCKLIST"], action="block", blocklist=["secretword"])
    async with inference_stub(echo_worker.address) as stub:
        request = chat(text, output_checks=checks)
        call, texts = await stream_texts(stub, "StreamChatCompletionEvents", request, request_id)
        received = "".join([t async for t in texts])
        trailers = trailer_usage(await call.trailing_metadata())
    assert "secretword" not in received
    recorded = await usage.request_usage(echo_worker.address, request_id, wait_s=2.0)
    assert recorded == trailers
    # The client saw the text before the match; the engine had made the match too.
    assert recorded.completion_tokens >= count_tokens("one two secretword")
    assert recorded.completion_tokens > count_tokens(received)


async def test_an_unknown_request_is_not_found(
    worker: EngineWorker, usage: EngineUsageClient
) -> None:
    assert await usage.request_usage(worker.address, new_id(), wait_s=1.0) is None
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stub = usage_stub(channel)
        for request_id in ("", new_id()):
            reply = await stub.RequestUsage(
                engine_usage_pb2.RequestUsageRequest(request_id=request_id, wait_ms=500)
            )
            assert reply == engine_usage_pb2.RequestUsageReply(found=False)


async def test_the_log_keeps_at_most_its_bound_and_skips_requests_without_an_id(
    usage: EngineUsageClient,
) -> None:
    ids = [new_id() for _ in range(5)]
    async with (
        running_worker(FAST_SIM, usage_records=3) as bounded,
        inference_stub(bounded.address) as stub,
    ):
        for request_id in ids:
            await stub.CreateChatCompletion(chat(max_tokens=2), metadata=gateway(request_id))
        for _ in range(3):
            await stub.CreateChatCompletion(chat(max_tokens=2))
        found = [await usage.request_usage(bounded.address, i, wait_s=0) for i in ids]
    assert found[:2] == [None, None]
    assert found[2:] == [EngineUsage(True, prompt_tokens(), 2)] * 3


async def test_records_expire(usage: EngineUsageClient) -> None:
    request_id = new_id()
    async with (
        running_worker(FAST_SIM, usage_record_seconds=0.3) as brief,
        inference_stub(brief.address) as stub,
    ):
        await stub.CreateChatCompletion(chat(max_tokens=2), metadata=gateway(request_id))
        assert await usage.request_usage(brief.address, request_id, wait_s=0) is not None
        await asyncio.sleep(0.5)
        assert await usage.request_usage(brief.address, request_id, wait_s=0) is None


@contextlib.asynccontextmanager
async def deadline_only_wait(worker: EngineWorker, usage: EngineUsageClient) -> AsyncIterator[Any]:
    """A 2 s usage wait on a stream that does not end before it is cancelled, so the wait
    can end only at its deadline: a wait begun after it that ends while it is still open
    ended on its own request's end, however slow the machine."""
    request_id = new_id()
    async with inference_stub(worker.address) as stub:
        call, texts = await stream_texts(stub, "StreamChatCompletion", chat(), request_id)
        await anext(texts)
        waiting = asyncio.create_task(usage.request_usage(worker.address, request_id, wait_s=2.0))
        try:
            yield waiting
        finally:
            call.cancel()
            await waiting


async def test_a_wait_ends_when_the_request_finishes(
    long_worker: EngineWorker, usage: EngineUsageClient
) -> None:
    request_id = new_id()
    async with (
        deadline_only_wait(long_worker, usage) as deadline_only,
        inference_stub(long_worker.address) as stub,
    ):
        call, texts = await stream_texts(
            stub, "StreamChatCompletion", chat(max_tokens=40), request_id
        )
        first = await anext(texts)
        waiting = asyncio.create_task(
            usage.request_usage(long_worker.address, request_id, wait_s=2.0)
        )
        rest = [text async for text in texts]
        recorded = await waiting
        assert not deadline_only.done()  # it ended with the stream, not at its deadline
    assert [first, *rest] and len(rest) + 1 == 40
    assert recorded == trailer_usage(await call.trailing_metadata())
    # Final counts: it did wait for the stream's end.
    assert recorded is not None and recorded.finished and recorded.completion_tokens == 40


async def test_a_wait_ends_when_the_client_cancels(
    long_worker: EngineWorker, usage: EngineUsageClient
) -> None:
    request_id = new_id()
    async with (
        deadline_only_wait(long_worker, usage) as deadline_only,
        inference_stub(long_worker.address) as stub,
    ):
        call, texts = await stream_texts(stub, "StreamChatCompletion", chat(), request_id)
        for _ in range(3):
            await anext(texts)
        waiting = asyncio.create_task(
            usage.request_usage(long_worker.address, request_id, wait_s=2.0)
        )
        await anext(texts)
        assert not waiting.done()  # the stream runs on: nothing to answer yet
        call.cancel()
        recorded = await waiting
        assert not deadline_only.done()  # it ended with the cancel, not at its deadline
    assert recorded is not None and recorded.finished and recorded.completion_tokens >= 3


async def test_a_wait_is_bounded(long_worker: EngineWorker, usage: EngineUsageClient) -> None:
    """A wait on a stream that runs on ends at its deadline with the running counts. The
    lower bounds below cannot flake (a deadline is never early); nothing bounds a wait
    from above but its answer: a running request's counts, before the caller's timeout."""
    request_id = new_id()
    async with (
        inference_stub(long_worker.address) as stub,
        grpc.aio.insecure_channel(long_worker.address) as channel,
    ):
        call, texts = await stream_texts(stub, "StreamChatCompletion", chat(), request_id)
        await anext(texts)
        started = time.monotonic()
        running = await usage.request_usage(long_worker.address, request_id, wait_s=0.3)
        assert time.monotonic() - started >= 0.3
        assert running is not None and not running.finished
        assert running.prompt_tokens == prompt_tokens() and running.completion_tokens >= 1
        # The worker caps what it is asked for (2 s), whatever the caller's deadline: the
        # answer comes, the stream still running, long before the 60 s asked.
        raw = usage_stub(channel)
        started = time.monotonic()
        reply = await raw.RequestUsage(
            engine_usage_pb2.RequestUsageRequest(request_id=request_id, wait_ms=60_000),
            timeout=30,
        )
        assert time.monotonic() - started >= 2.0
        call.cancel()
    assert reply.found and not reply.finished
    assert reply.completion_tokens > running.completion_tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_worker_is_none_within_the_deadline() -> None:
    client = EngineUsageClient()
    try:
        address = f"127.0.0.1:{_free_port()}"
        # No hang: the answer comes, None, well before a generous guard (the client's own
        # bound is the wait plus its connect timeout).
        async with asyncio.timeout(10):
            assert await client.request_usage(address, new_id(), wait_s=0.2) is None
    finally:
        await client.close()


async def test_channels_beyond_the_bound_are_closed_and_reopened(
    worker: EngineWorker, echo_worker: EngineWorker
) -> None:
    request_ids = {worker.address: new_id(), echo_worker.address: new_id()}
    for address, request_id in request_ids.items():
        async with inference_stub(address) as stub:
            await stub.CreateChatCompletion(chat(max_tokens=2), metadata=gateway(request_id))
    client = EngineUsageClient(max_channels=1)
    try:
        for _ in range(2):
            for address, request_id in request_ids.items():
                recorded = await client.request_usage(address, request_id, wait_s=0)
                assert recorded is not None and recorded.finished
    finally:
        await client.close()
