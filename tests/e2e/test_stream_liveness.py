"""Streams through the real Envoy while they wait for a first token, and on a frozen replica.

What the client sees (config: frugal.yaml `streams`; design: control_plane/model.py
StreamsConfig and control_plane/translate/routes.py):
- a long prefill: `: keep-alive` comments before the first data event, which the OpenAI SDK
  skips; an engine failure after a comment is an SSE error event, never a clean end; one
  after the headers but before any byte is still an HTTP error status;
- a replica frozen (SIGSTOP) before it sent headers: Envoy's per-try timeout abandons it
  and the stream succeeds on the other replica, generated once
  (`cluster.<name>.upstream_rq_per_try_timeout` counts it);
- a replica frozen while it streams: never retried; the stream ends at the route's
  max_stream_duration with the body cut short, which every HTTP client reports as an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.replica_spread import until_every_replica_serves
from tests.helpers.stack import FAST, STACK_MARKS, FrugalStack, replicas, stack_config

pytestmark = STACK_MARKS

# Seconds. The first-byte timeout leaves a loaded 2-core machine's workers 15x the time
# they need to send headers; max duration ends the frozen mid-stream test in seconds.
STREAMS = {
    "keepalive_interval_s": 1.0,
    "headers_after_s": 0.2,
    "first_byte_timeout_s": 3.0,
    "max_stream_duration_s": 20.0,
}
# ~200 prompt tokens at c_ms each: prefill of ~3 s (several comments), or ~0.4 s (an
# error after the headers at 0.2 s, before the first comment at 1 s).
PROMPT = " ".join(["word"] * 200)
PROFILES = {
    "short": {**FAST, "a_ms": 10.0, "output_tokens_min": 40, "output_tokens_max": 40},
    "long": {**FAST, "a_ms": 20.0, "output_tokens_min": 5000, "output_tokens_max": 5000},
    "queued": {**FAST, "c_ms": 15.0, "output_tokens_min": 20, "output_tokens_max": 20},
    "queued-faulty": {**FAST, "c_ms": 15.0, "fault_after_tokens": 0},
    "early-faulty": {**FAST, "c_ms": 2.0, "fault_after_tokens": 0},
}


@pytest.fixture(scope="module")
async def live_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [
        {"name": name, "groups": [{"name": "g", "profile": profile, "replicas": replicas(count)}]}
        for name, profile, count in (
            ("sim-pair", "short", 2),
            ("sim-long", "long", 2),
            ("sim-queued", "queued", 1),
            ("sim-queued-faulty", "queued-faulty", 1),
            ("sim-early-faulty", "early-faulty", 1),
        )
    ]
    data = stack_config(models, PROFILES, streams=STREAMS)
    running = FrugalStack(Path(tmp_path_factory.mktemp("liveness")), data)
    try:
        await running.start()
        await until_every_replica_serves(running, "sim-pair")
        yield running
    finally:
        await running.stop()


def _body(model: str, prompt: str = "go") -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _lines(client: httpx.AsyncClient, model: str, prompt: str = "go") -> list[str]:
    async with client.stream("POST", "/v1/chat/completions", json=_body(model, prompt)) as r:
        assert r.status_code == 200, await r.aread()
        return [line async for line in r.aiter_lines() if line]


def _client(stack: FrugalStack, timeout: float = 60) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64)
    return httpx.AsyncClient(
        base_url=stack.base_url, headers=stack.auth, timeout=timeout, limits=limits
    )


async def test_comments_come_before_the_first_token_of_a_long_prefill(
    live_stack: FrugalStack,
) -> None:
    async with _client(live_stack) as client:
        lines = await _lines(client, "sim-queued", PROMPT)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 1, lines[:3]
    assert set(lines[:first_data]) == {": keep-alive"}
    assert ": keep-alive" not in lines[first_data:]
    assert lines[-1] == "data: [DONE]"


def _model_sample(text: str, name: str, model: str) -> float:
    """The value of `name` for one model_name in a /metrics text (0 before any)."""
    found = re.findall(rf'^{name}\{{[^}}]*model_name="{model}"[^}}]*\}} (\S+)$', text, re.M)
    return sum(float(value) for value in found)


async def _ttft_sums(stack: FrugalStack, model: str) -> tuple[float, float]:
    """(the gateway's, the engines') TTFT sums for `model`: seconds over all its requests."""
    ports = [stack.config.safety_filter.metrics_port, *_replica_ports(stack, model).values()]
    names = ["frugal_request_ttft_seconds_sum", "frugal_engine_time_to_first_token_seconds_sum"]
    sums = []
    async with httpx.AsyncClient(timeout=5) as client:
        for port, name in zip(ports, names, strict=True):
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            sums.append(_model_sample(text, name, model))
    return sums[0], sums[1]


async def test_the_gateways_ttft_is_the_first_tokens_not_the_first_comments(
    live_stack: FrugalStack,
) -> None:
    # The first comment goes out at 1 s, the first token after a ~3 s prefill: the
    # gateway's TTFT holds the engine's, and more (its own time and Envoy's).
    gateway_before, engine_before = await _ttft_sums(live_stack, "sim-queued")
    async with _client(live_stack) as client:
        lines = await _lines(client, "sim-queued", PROMPT)
    assert lines[0] == ": keep-alive" and lines[-1] == "data: [DONE]", lines[:2]

    async def observed() -> bool:
        return (await _ttft_sums(live_stack, "sim-queued"))[0] > gateway_before

    await _eventually(observed, "the gateway observed no TTFT", 10)
    gateway_after, engine_after = await _ttft_sums(live_stack, "sim-queued")
    engine_ttft = engine_after - engine_before
    print(f"TTFT: gateway {gateway_after - gateway_before:.3f} s, engine {engine_ttft:.3f} s")
    assert engine_ttft > live_stack.config.streams.keepalive_interval_s
    assert gateway_after - gateway_before >= engine_ttft


async def test_the_openai_sdk_skips_the_comments(live_stack: FrugalStack) -> None:
    client = openai.AsyncOpenAI(
        base_url=live_stack.base_url + "/v1", api_key=live_stack.api_key, max_retries=0
    )
    async with client:
        stream = await client.chat.completions.create(
            model="sim-queued",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and "keep-alive" not in text
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 20


async def test_a_failure_after_a_comment_is_an_error_event(live_stack: FrugalStack) -> None:
    async with _client(live_stack) as client:
        lines = await _lines(client, "sim-queued-faulty", PROMPT)
    assert lines[0] == ": keep-alive"
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert "[DONE]" not in data
    error = json.loads(data[-1])["error"]
    assert error["message"] == "engine fault after 0 tokens", error


async def test_a_failure_after_the_headers_alone_is_an_http_error(
    live_stack: FrugalStack,
) -> None:
    async with _client(live_stack) as client:
        response = await client.post("/v1/chat/completions", json=_body("sim-early-faulty", PROMPT))
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["message"] == "engine fault after 0 tokens", error


async def _envoy_counter(stack: FrugalStack, pattern: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(stack.envoy_admin + "/stats", params={"filter": pattern})).text
    return sum(int(value) for value in re.findall(r"^\S+: (\d+)$", text, re.M))


async def _engine_metric(port: int, name: str) -> float | None:
    """The sum of one metric's samples on a replica; None while it cannot answer."""
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return None
    found = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    return sum(float(value) for value in found)


def _replica_ports(stack: FrugalStack, model: str) -> dict[str, int]:
    """Child name -> metrics port of each replica of a model."""
    return {
        name: int(child.spec.env["FRUGAL_ENGINE_METRICS_PORT"])
        for name, child in stack.supervisor.children.items()
        if name.startswith(f"engine:{model}/")
    }


def _signal(stack: FrugalStack, name: str, signum: int) -> None:
    os.kill(stack.supervisor.children[name].process.pid, signum)


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, within_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.2)


async def _stream_usage(client: httpx.AsyncClient, model: str) -> int:
    """The completion tokens a stream reports; the stream must end with [DONE]."""
    data = [line for line in await _lines(client, model) if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]", data[-3:]
    usage = json.loads(data[-2].removeprefix("data: "))["usage"]
    return int(usage["completion_tokens"])


async def test_a_frozen_replica_is_abandoned_before_its_first_byte(
    live_stack: FrugalStack,
) -> None:
    tokens = "frugal_engine_generation_tokens_total"
    ports = _replica_ports(live_stack, "sim-pair")
    before = {name: await _engine_metric(port, tokens) for name, port in ports.items()}
    per_try = "cluster.engine__sim-pair__g.upstream_rq_per_try_timeout"
    timeouts_before = await _envoy_counter(live_stack, per_try)
    frozen = min(ports)
    _signal(live_stack, frozen, signal.SIGSTOP)
    try:
        async with _client(live_stack) as client:
            # At once, before a health check finds it: some streams are sent to it.
            generated = await asyncio.gather(
                *(_stream_usage(client, "sim-pair") for _ in range(12))
            )
        timeouts = await _envoy_counter(live_stack, per_try) - timeouts_before
    finally:
        _signal(live_stack, frozen, signal.SIGCONT)
    assert timeouts >= 1, "no stream was sent to the frozen replica"

    async def settled() -> bool:
        running = await _engine_metric(ports[frozen], "frugal_engine_num_requests_running")
        return running == 0

    await _eventually(settled, "the thawed replica still runs abandoned requests", 15)
    after = {name: await _engine_metric(port, tokens) for name, port in ports.items()}
    # Every token was generated once, for a stream that got it: none on the frozen replica.
    assert after[frozen] == before[frozen]
    assert sum(after[n] or 0 for n in ports) - sum(before[n] or 0 for n in ports) == sum(generated)


async def test_a_replica_frozen_mid_stream_is_not_retried(live_stack: FrugalStack) -> None:
    ports = _replica_ports(live_stack, "sim-long")
    retries = "cluster.engine__sim-long__g.upstream_rq_retry"
    retries_before = await _envoy_counter(live_stack, retries)
    cut_before = await _envoy_counter(live_stack, "downstream_rq_max_duration_reached")
    lines: list[str] = []
    async with _client(live_stack) as client:
        async with client.stream("POST", "/v1/chat/completions", json=_body("sim-long")) as r:
            assert r.status_code == 200
            events = r.aiter_lines()
            while not (await anext(events)).startswith("data: {"):
                pass
            running = {
                name: await _engine_metric(port, "frugal_engine_num_requests_running")
                for name, port in ports.items()
            }
            (streaming,) = [name for name, count in running.items() if count == 1]
            idle = next(name for name in ports if name != streaming)
            idle_tokens = await _engine_metric(ports[idle], "frugal_engine_generation_tokens_total")
            _signal(live_stack, streaming, signal.SIGSTOP)
            try:
                with pytest.raises(httpx.HTTPError):
                    async for line in events:
                        lines.append(line)
            finally:
                _signal(live_stack, streaming, signal.SIGCONT)
    assert "data: [DONE]" not in lines
    assert await _envoy_counter(live_stack, retries) == retries_before
    assert await _envoy_counter(live_stack, "downstream_rq_max_duration_reached") > cut_before
    idle_after = await _engine_metric(ports[idle], "frugal_engine_generation_tokens_total")
    assert idle_after == idle_tokens  # the other replica never saw the request
