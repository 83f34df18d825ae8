"""An engine worker's stream while it waits for its first token (engine_workers.first_token_wait):
response headers early, keep-alive comments, and a failure after a comment as an error event.

A real grpc.aio server and channel on loopback, the sim backend with a long prefill
(`c_ms` per prompt token), as Envoy's transcoder calls it: StreamChatCompletionEvents.
"""

from __future__ import annotations

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
    ) as (_, stub):
        bodies, raised = await _bodies_until_the_error(stub)
        assert raised.code() == grpc.StatusCode.INTERNAL
        assert "engine fault" in (raised.details() or "")
    assert bodies == []
