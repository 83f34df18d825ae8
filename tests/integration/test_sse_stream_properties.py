"""The SSE stream a real engine worker sends (the servicer's `...Events` methods, which
finish every stream), for random prompt texts echoed back: random Unicode (astral
characters, CR and LF, `data:` inside the text), with and without a blocking output check.

A real grpc.aio worker on loopback, the sim backend in echo mode (the text streamed is the
prompt, so what the client parses can be held against what was sent). The parser is the
OpenAI SDK's. Every stream parses into JSON chunks whose content is the echoed text,
then ends with `[DONE]`, or with the error event when the output check blocked it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from engine_workers.backends.sim_model import SimProfile
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

MODEL = "sim-sse"
EMAIL = "jane.doe@example.com"
SIM = {"time_scale": 0.001, "jitter": 0.0}
TRICKY = st.sampled_from(["data:", "data: [DONE]", "\n", "\r\n", "\r", "\n\n", ": x", "\u2028"])
TEXT = st.lists(st.one_of(st.text(st.characters(codec="utf-8"), max_size=6), TRICKY), max_size=8)
# Each example is a real call; a few dozen cover the shapes without a long run.
EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def echo_stub() -> AsyncIterator[Any]:
    worker_settings = EngineSettings(
        port=0, model=MODEL, sim=SimProfile.model_validate(SIM), echo=True
    )
    worker: EngineWorker
    async with serving(worker_settings) as worker, inference_stub(worker.address) as stub:
        yield stub


async def _events(stub: Any, text: str, checks: dict[str, Any] | None) -> list[str]:
    fields: dict[str, Any] = {}
    if checks is not None:
        fields["output_checks"] = checks
    message = pb.ChatMessage(role="user", content=proto_value(text))
    request = pb.ChatCompletionRequest(model=MODEL, messages=[message], stream=True, **fields)
    bodies = [body.data async for body in stub.StreamChatCompletionEvents(request)]
    return [event.data for event in SSEDecoder().iter_bytes(iter(bodies))]


def _content(events: list[str]) -> str:
    text = ""
    for event in events:
        for choice in json.loads(event)["choices"]:
            text += choice.get("delta", {}).get("content", "")
    return text


@EXAMPLES
@given(TEXT)
async def test_any_echoed_text_comes_back_in_chunks_then_done(
    echo_stub: Any, pieces: list[str]
) -> None:
    text = "".join(pieces)
    events = await _events(echo_stub, text, None)
    assert events[-1] == "[DONE]"
    assert _content(events[:-1]) == text


@EXAMPLES
@given(TEXT, st.booleans())
async def test_a_blocked_echo_ends_with_the_error_event_and_never_done(
    echo_stub: Any, pieces: list[str], with_email: bool
) -> None:
    text = "".join(pieces) + (f" {EMAIL} " if with_email else "")
    checks = {"detectors": ["EMAIL"], "action": "block", "blocklist": []}
    events = await _events(echo_stub, text, checks)
    *chunks, last = events
    if last == "[DONE]":
        assert not with_email
        assert _content(chunks) == text
    else:
        assert json.loads(last)["error"]["code"] == "content_policy_violation"
        assert "[DONE]" not in events
        assert EMAIL not in _content(chunks)
        assert text.startswith(_content(chunks))
