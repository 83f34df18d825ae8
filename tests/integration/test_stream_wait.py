"""An engine worker's stream while it waits for its first token (engine_workers.first_token_wait):
response headers early, keep-alive comments, and a failure after a comment as an error event.

A real grpc.aio server and channel on loopback, the sim backend with a long prefill
(`c_ms` per prompt token), as Envoy's transcoder calls it: StreamChatCompletionEvents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from engine_workers.backends.sim_model import SimProfile
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from engine_workers.sse_events import KEEPALIVE_COMMENT
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "sim-wait"
# ~200 prompt tokens at 5 ms each: the first token comes after about a second of prefill.
LONG_PREFILL = {"a_ms": 2.0, "b_ms": 0.0, "c_ms": 5.0, "jitter": 0.0, "output_tokens_max": 64}
PROMPT = " ".join(["word"] * 200)


@contextlib.asynccontextmanager
async def waiting_worker(
    sim: dict[str, Any], *, headers_after_s: float, keepalive_interval_s: float
) -> AsyncIterator[tuple[EngineWorker, Any]]:
    settings = EngineSettings(
        port=0,
        model=MODEL,
        sim=SimProfile.model_validate({**LONG_PREFILL, **sim}),
        headers_after_s=headers_after_s,
        keepalive_interval_s=keepalive_interval_s,
    )
    async with serving(settings) as worker, inference_stub(worker.address) as stub:
        yield worker, stub


def _request() -> Any:
    message = pb.ChatMessage(role="user", content=proto_value(PROMPT))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message])


def _data_events(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


async def test_headers_leave_before_the_first_token_of_a_long_prefill() -> None:
    async with waiting_worker({}, headers_after_s=0.05, keepalive_interval_s=60.0) as (
        worker,
        stub,
    ):
        call = stub.StreamChatCompletionEvents(_request())
        await call.initial_metadata()
        # Still in prefill: no token yet, so the headers did not wait for one.
        assert worker.backend.load().tokens_generated_total == 0
        bodies = [message.data async for message in call]
        assert await call.code() == grpc.StatusCode.OK
    assert KEEPALIVE_COMMENT not in b"".join(bodies)  # the first token came before a beat
    assert _data_events(b"".join(bodies))[-1] == "[DONE]"


async def test_comments_arrive_until_the_first_token_and_are_never_output() -> None:
    async with waiting_worker({}, headers_after_s=0.02, keepalive_interval_s=0.05) as (_, stub):
        bodies = [message.data async for message in stub.StreamChatCompletionEvents(_request())]
    first_data = next(i for i, body in enumerate(bodies) if b"data: " in body)
    assert first_data >= 1
    assert all(body == KEEPALIVE_COMMENT for body in bodies[:first_data])
    assert all(KEEPALIVE_COMMENT not in body for body in bodies[first_data:])
    events = _data_events(b"".join(bodies))
    assert events[-1] == "[DONE]"
    text = "".join(
        choice["delta"].get("content", "")
        for event in events[:-1]
        for choice in json.loads(event)["choices"]
    )
    assert text and "keep-alive" not in text


async def _bodies_until_the_error(stub: Any) -> tuple[list[bytes], grpc.aio.AioRpcError]:
    """The bodies a stream sent before it failed, and its error."""
    bodies: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in stub.StreamChatCompletionEvents(_request()):
            bodies.append(message.data)
    return bodies, raised.value


async def test_a_failure_after_a_comment_ends_with_an_error_event() -> None:
    async with waiting_worker(
        {"fault_after_tokens": 0}, headers_after_s=0.02, keepalive_interval_s=0.05
    ) as (_, stub):
        bodies, raised = await _bodies_until_the_error(stub)
    assert raised.code() == grpc.StatusCode.INTERNAL
    assert bodies[0] == KEEPALIVE_COMMENT
    events = _data_events(b"".join(bodies))
    assert "[DONE]" not in events
    (last,) = events
    assert json.loads(last)["error"]["message"] == "engine fault after 0 tokens"


async def test_a_failure_before_any_byte_is_still_a_plain_status() -> None:
    """Headers alone are no byte of the answer: the transcoder still turns this status
    into the HTTP error status (tests/e2e/test_stream_liveness.py checks it on Envoy)."""
    async with waiting_worker(
        {"fault_after_tokens": 0}, headers_after_s=0.02, keepalive_interval_s=60.0
    ) as (worker, stub):
        bodies, raised = await _bodies_until_the_error(stub)
        assert raised.code() == grpc.StatusCode.INTERNAL
        assert "engine fault" in (raised.details() or "")
        # The gateway bills an answer that failed before its first byte nothing.
        prompt = _sample(worker, "frugal_engine_prompt_tokens_total")
        assert prompt > 0 and await _counted_unanswered(worker) == (prompt, 0.0)
    assert bodies == []


def _sample(worker: EngineWorker, name: str, **labels: str) -> float:
    labels = {"model_name": MODEL, "group": worker.settings.group, **labels}
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


def _unanswered(worker: EngineWorker) -> tuple[float, float]:
    name = "frugal_engine_unanswered_tokens_total"
    return _sample(worker, name, kind="prompt"), _sample(worker, name, kind="generation")


async def _counted_unanswered(worker: EngineWorker) -> tuple[float, float]:
    """The unanswered counts once a request's are in: the RPC's done-callback adds them,
    after the client already has its end."""
    for _ in range(500):
        if (counted := _unanswered(worker)) != (0.0, 0.0):
            return counted
        await asyncio.sleep(0.01)
    raise AssertionError("no unanswered tokens were counted")


async def _cancel_when(worker: EngineWorker, call: Any, condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)
    call.cancel()
    while worker.backend.load().running:
        await asyncio.sleep(0.01)


async def test_a_stream_cancelled_before_it_sent_anything_counts_as_unanswered() -> None:
    """What Envoy's first-byte timeout leaves behind: the gateway bills only the attempt
    that answered, so the engine counts an attempt it never answered apart."""
    async with waiting_worker({}, headers_after_s=60.0, keepalive_interval_s=60.0) as (
        worker,
        stub,
    ):
        call = stub.StreamChatCompletionEvents(_request())
        # In prefill: admitted, its prompt counted, nothing sent yet.
        await _cancel_when(worker, call, lambda: worker.backend.load().running == 1)
        prompt = _sample(worker, "frugal_engine_prompt_tokens_total")
        generated = worker.backend.load().tokens_generated_total
        assert prompt > 0
        assert await _counted_unanswered(worker) == (prompt, generated)


async def test_a_stream_cancelled_after_its_first_token_is_answered() -> None:
    """Once something is out, the gateway has the replica's answer and bills it. A second
    stream, cancelled before anything, shows when the counts are in."""
    async with waiting_worker({}, headers_after_s=60.0, keepalive_interval_s=60.0) as (
        worker,
        stub,
    ):
        answered = stub.StreamChatCompletionEvents(_request())
        assert b"data: " in (await answered.read()).data
        await _cancel_when(worker, answered, lambda: True)
        one_prompt = _sample(worker, "frugal_engine_prompt_tokens_total")
        unanswered = stub.StreamChatCompletionEvents(_request())
        await _cancel_when(worker, unanswered, lambda: worker.backend.load().running == 1)
        assert (await _counted_unanswered(worker))[0] == one_prompt
