"""The usage a `transformers` worker (the real SmolLM2-135M-Instruct on CPU) records for a
request, asked through `frugal.engine_usage`'s client: a finished stream's equals its
trailers, a cancelled one's counts what the engine generated before the client left."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal import wire
from frugal.engine_usage import EngineUsage, EngineUsageClient
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "smollm2"
pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker() -> AsyncIterator[EngineWorker]:
    settings = EngineSettings(
        port=0,
        model=MODEL,
        backend="transformers",
        parameters={"threads": 2, "kv_cache_tokens": 4096, "page_size": 64},
    )
    async with serving(settings, grace=1.0) as started:
        yield started


def chat(content: str, **fields: Any) -> Any:
    message = pb.ChatMessage(role="user", content=proto_value(content))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message], **fields)


def text_events(data: bytes) -> int:
    """How many chunk events of an SSE body carry text."""
    count = 0
    for line in data.decode().split("\n"):
        if line.startswith("data: {"):
            choices = json.loads(line[len("data: ") :]).get("choices", ())
            count += sum(1 for choice in choices if choice["delta"].get("content"))
    return count


async def test_usage_of_a_finished_and_of_a_cancelled_stream(worker: EngineWorker) -> None:
    usage = EngineUsageClient()
    finished_id, cancelled_id = (f"req-{uuid.uuid4().hex}" for _ in range(2))
    try:
        async with inference_stub(worker.address) as stub:
            call = stub.StreamChatCompletionEvents(
                chat("What is the capital of France?", temperature=0),
                metadata=((wire.REQUEST_ID_HEADER, finished_id),),
            )
            _ = [body async for body in call]
            trailers = dict(await call.trailing_metadata())
            recorded = await usage.request_usage(worker.address, finished_id, wait_s=0)
            assert recorded == EngineUsage(
                finished=True,
                prompt_tokens=int(trailers[wire.PROMPT_TOKENS]),
                completion_tokens=int(trailers[wire.COMPLETION_TOKENS]),
            )

            max_tokens = 400
            call = stub.StreamChatCompletionEvents(
                chat("Tell me a very long story.", max_tokens=max_tokens),
                metadata=((wire.REQUEST_ID_HEADER, cancelled_id),),
            )
            received = 0
            async for body in call:
                received += text_events(body.data)
                if received >= 5:
                    break
            call.cancel()
            cancelled = await usage.request_usage(worker.address, cancelled_id, wait_s=2.0)
    finally:
        await usage.close()
    assert cancelled is not None and cancelled.finished
    assert cancelled.prompt_tokens > 0
    assert received <= cancelled.completion_tokens < max_tokens
