"""Gateway observations through the real Envoy: the safety filter's request metrics, and
the engine's own time handed to HTTP clients (an SSE comment in streams, a header on
unary answers). The stack is shared by the session, so metrics are compared before and
after each request."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from frugal import wire
from tests.helpers.stack import FrugalStack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ENGINE_MS_COMMENT = re.compile(f"^{re.escape(wire.ENGINE_MS_COMMENT)}([0-9.]+)$", re.MULTILINE)
WORDS = "one two three four five"


async def scrape(stack: FrugalStack) -> Samples:
    url = f"http://127.0.0.1:{stack.config.safety_filter.metrics_port}/metrics"
    async with httpx.AsyncClient() as client:
        text = (await client.get(url)).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def chat(model: str, content: str = WORDS, **fields: object) -> Mapping[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **fields}


async def test_stream_and_unary_requests_move_the_model_metrics(stack: FrugalStack) -> None:
    before = await scrape(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        streamed = await client.post("/v1/chat/completions", json=chat("sim-echo", stream=True))
        unary = await client.post("/v1/chat/completions", json=chat("sim-echo"))
    after = await scrape(stack)

    assert streamed.status_code == 200, streamed.text
    comments = ENGINE_MS_COMMENT.findall(streamed.text)
    assert len(comments) == 1 and float(comments[0]) > 0, streamed.text
    assert streamed.text.endswith(f"{wire.ENGINE_MS_COMMENT}{comments[0]}\n\ndata: [DONE]\n\n")
    assert unary.status_code == 200, unary.text
    assert float(unary.headers[wire.ENGINE_MS]) > 0
    usage = unary.json()["usage"]

    model = {"model_name": "sim-echo"}
    assert moved(before, after, "frugal_requests_total", **model, status="200") == 2
    for histogram in ("ttft", "e2e"):
        assert moved(before, after, f"frugal_request_{histogram}_seconds_count", **model) == 2
        assert moved(before, after, f"frugal_request_{histogram}_seconds_sum", **model) > 0
    # Only the stream's tokens are seen apart.
    assert moved(before, after, "frugal_request_tpot_seconds_count", **model) == 1
    assert moved(before, after, "frugal_prompt_tokens_total", **model) == 2 * usage["prompt_tokens"]
    completion = moved(before, after, "frugal_completion_tokens_total", **model)
    assert completion == 2 * usage["completion_tokens"] == 2 * len(WORDS.split())
    errors = [key for key in after if key[0] == "frugal_request_errors_total"]
    assert all(moved(before, after, name, **dict(labels)) == 0 for name, labels in errors)


async def test_an_unknown_model_counts_as_model_not_found(stack: FrugalStack) -> None:
    before = await scrape(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        response = await client.post("/v1/chat/completions", json=chat("no-such-model"))
    after = await scrape(stack)
    assert response.status_code == 404
    unknown = {"model_name": "unknown"}
    assert moved(before, after, "frugal_requests_total", **unknown, status="404") == 1
    errors = moved(
        before, after, "frugal_request_errors_total", **unknown, reason="model_not_found"
    )
    assert errors == 1
    assert not any(dict(labels).get("model_name") == "no-such-model" for _, labels in after)


async def test_an_engine_failure_mid_stream_counts_as_engine_error(stack: FrugalStack) -> None:
    before = await scrape(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        response = await client.post("/v1/chat/completions", json=chat("sim-faulty", stream=True))
    after = await scrape(stack)
    events = [event for event in response.text.split("\n\n") if event]
    assert events[-1].startswith('data: {"error"'), events
    assert ENGINE_MS_COMMENT.match(events[-2]), events
    labels = {"model_name": "sim-faulty", "reason": "engine_error"}
    assert moved(before, after, "frugal_request_errors_total", **labels) == 1


async def test_a_client_leaving_mid_stream_counts_as_disconnected(stack: FrugalStack) -> None:
    labels = {"model_name": "sim-slow", "reason": "client_disconnected"}
    before = await scrape(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        body = chat("sim-slow", "go", stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            async for line in response.aiter_lines():
                events += line.startswith("data: {")
                if events == 3:
                    break  # leaving the block closes the connection mid-stream
    deadline = asyncio.get_running_loop().time() + 5.0
    after = await scrape(stack)
    while moved(before, after, "frugal_request_errors_total", **labels) == 0:
        assert asyncio.get_running_loop().time() < deadline, "no disconnect was counted"
        await asyncio.sleep(0.05)
        after = await scrape(stack)
    assert moved(before, after, "frugal_request_errors_total", **labels) == 1


async def test_a_started_stream_passes_envoy_without_a_processor_round_trip_per_chunk(
    stack: FrugalStack,
) -> None:
    """No response body ever comes to the processor (its response body mode is NONE): a
    stream's events go straight to the client, and only the trailers come back."""
    before = await scrape(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        streamed = await client.post("/v1/chat/completions", json=chat("sim-echo", stream=True))
    after = await scrape(stack)

    assert streamed.status_code == 200, streamed.text
    assert streamed.text.count("data: {") == len(WORDS.split()) + 2  # role, words, finish
    phases = {p: moved(before, after, "frugal_extproc_phase_seconds_count", phase=p)
              for p in ("response_headers", "response_body", "response_trailers")}  # fmt: skip
    assert phases == {"response_headers": 1, "response_body": 0, "response_trailers": 1}
