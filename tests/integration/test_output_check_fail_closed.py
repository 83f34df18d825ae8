"""An answer whose output checks the worker cannot run is withheld, never passed on
unchecked: a request whose `output_checks` name a detector or an action this worker does
not know (a safety filter newer than its workers) fails before anything is generated, for
a unary answer and a streamed one alike. A real sim worker (echo) over real gRPC; what it
echoes would be a finding if the checks ran."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from engine_workers.backends.sim_model import SimProfile
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving
from tests.helpers.process_probe import metric_sum

MODEL = "sim-guarded"
SECRET = "write to jane.doe@example.com today"
UNRUNNABLE = {
    "an unknown detector": pb.OutputChecks(detectors=["NO_SUCH_DETECTOR"], action="block"),
    "an unknown action": pb.OutputChecks(detectors=["EMAIL"], action="shrug"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker() -> AsyncIterator[EngineWorker]:
    profile = SimProfile.model_validate({"time_scale": 0.01, "jitter": 0.0})
    settings = EngineSettings(
        port=0, model=MODEL, group="g", sim=profile, echo=True, metrics_port=_free_port()
    )
    async with serving(settings) as started:
        yield started


def _request(checks: Any) -> Any:
    message = pb.ChatMessage(role="user", content=proto_value(SECRET))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message], output_checks=checks)


async def _prompts_seen(worker: EngineWorker) -> float:
    assert worker.metrics_port is not None
    return await metric_sum(worker.metrics_port, "frugal_engine_prompt_tokens_total")


@pytest.mark.parametrize("reason", sorted(UNRUNNABLE))
async def test_a_unary_answer_that_cannot_be_checked_is_withheld(
    worker: EngineWorker, reason: str
) -> None:
    before = await _prompts_seen(worker)
    async with inference_stub(worker.address) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateChatCompletion(_request(UNRUNNABLE[reason]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_checks" in (refused.value.details() or "")
    assert await _prompts_seen(worker) == before, "the engine generated an unchecked answer"


@pytest.mark.parametrize("reason", sorted(UNRUNNABLE))
async def test_a_stream_that_cannot_be_checked_sends_nothing(
    worker: EngineWorker, reason: str
) -> None:
    received: list[bytes] = []
    async with inference_stub(worker.address) as stub:
        call = stub.StreamChatCompletionEvents(_request(UNRUNNABLE[reason]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for body in call:
                received.append(body.data)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert b"jane.doe" not in b"".join(received)


async def test_checks_it_can_run_withhold_the_finding(worker: EngineWorker) -> None:
    """The control: the same answer with checks the worker knows is withheld whole."""
    checks = pb.OutputChecks(detectors=["EMAIL"], action="block")
    async with inference_stub(worker.address) as stub:
        answer = await stub.CreateChatCompletion(_request(checks))
    assert answer.choices[0].finish_reason == "content_filter"
    assert "jane.doe" not in answer.choices[0].message.content
