"""SIGKILL of one replica under steady traffic: retries and ejection hide it from requests
that had not started; a stream in flight on it ends with an explicit failure, never a clean end.

When an upstream dies after the response has started, Envoy resets the downstream stream
(FilterManager::sendLocalReply cannot send a reply once headers are out), so no filter can add
an SSE event at that point: the client sees the chunked body cut short (no terminating chunk,
no `data: [DONE]`), which every HTTP client reports as an error. Engine errors that arrive as a
gRPC status do become an SSE error event (tests/e2e/test_http_errors.py)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.stack import FAST, FrugalStack, replicas, stack_config

SLOW_STREAM = {**FAST, "a_ms": 15.0, "output_tokens_min": 300, "output_tokens_max": 300}


@pytest.fixture(scope="module")
async def pair_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [{"name": "sim-pair", "groups": [
        {"name": "pair", "profile": "slow", "replicas": replicas(2)}]}]  # fmt: skip
    running = FrugalStack(
        Path(tmp_path_factory.mktemp("pair")), stack_config(models, {"slow": SLOW_STREAM})
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def _stream_outcome(client: httpx.AsyncClient) -> str:
    """'done' for a clean [DONE] end, 'error-event' for an SSE error event, else what broke."""
    body = {"model": "sim-pair", "messages": [{"role": "user", "content": "go"}], "stream": True}
    last = ""
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    last = line.removeprefix("data: ")
    except httpx.HTTPError:
        # The chunked body cut short (RemoteProtocolError) or the connection reset
        # (ReadError): an explicit failure either way.
        return "transport-error"
    if last == "[DONE]":
        return "done"
    if last and "error" in json.loads(last):
        return "error-event"
    return f"silent end after {last[:80]!r}"


async def _unary(client: httpx.AsyncClient) -> int:
    body = {"model": "sim-pair", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def _tokens(metrics_port: int) -> float:
    async with httpx.AsyncClient() as client:
        try:
            text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        except httpx.HTTPError:
            return -1.0
    found = re.findall(r"^frugal_engine_generation_tokens_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(value) for value in found)


async def test_sigkill_one_replica(pair_stack: FrugalStack) -> None:
    limits = httpx.Limits(max_connections=128)
    async with httpx.AsyncClient(
        base_url=pair_stack.base_url, headers=pair_stack.auth, timeout=30, limits=limits
    ) as client:
        streams = [asyncio.create_task(_stream_outcome(client)) for _ in range(64)]
        await asyncio.sleep(1.0)  # every stream is under way on one of the two replicas
        victim = next(name for name in pair_stack.supervisor.children if name.endswith("/0"))
        spec = pair_stack.supervisor.children[victim].spec
        await pair_stack.supervisor.kill(victim)
        statuses = [await _unary(client) for _ in range(40)]
        outcomes = await asyncio.gather(*streams)
        # Back from the dead: health checks let it serve again within a few seconds.
        await pair_stack.supervisor.start(spec)
        metrics_port = int(spec.env["FRUGAL_ENGINE_METRICS_PORT"])
        deadline = asyncio.get_running_loop().time() + 10
        while await _tokens(metrics_port) <= 0:
            assert asyncio.get_running_loop().time() < deadline, "restarted replica got no traffic"
            await asyncio.gather(*(_unary(client) for _ in range(4)))
    assert statuses == [200] * 40, statuses
    failed = [outcome for outcome in outcomes if outcome != "done"]
    assert failed, f"no stream was on the killed replica: {outcomes}"
    kinds = sorted(set(outcomes))
    assert all(outcome in ("error-event", "transport-error") for outcome in failed), kinds
