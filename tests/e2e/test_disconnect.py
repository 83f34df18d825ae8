"""A client that leaves mid-stream makes the engine stop generating."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx

from frugal.wire import engine_metrics_port
from tests.helpers.stack import FrugalStack


async def _engine_metric(port: int, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return sum(float(v) for v in values)


async def _wait_for(port: int, name: str, expected: float, timeout_s: float) -> float:
    deadline = asyncio.get_running_loop().time() + timeout_s
    value = await _engine_metric(port, name)
    while value != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        value = await _engine_metric(port, name)
    return value


async def test_client_disconnect_stops_generation(stack: FrugalStack) -> None:
    model = stack.config.model("sim-slow")
    assert model is not None
    metrics_port = engine_metrics_port(model.groups[0].replicas[0].port)
    body = {"model": "sim-slow", "messages": [{"role": "user", "content": "go"}], "stream": True}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            events = [line async for line in _first(lines, 6) if line.startswith("data: ")]
            assert len(events) >= 3
            running = await _engine_metric(metrics_port, "frugal_engine_num_requests_running")
            assert running == 1
        # Leaving the `async with` closes the connection mid-stream.
    assert await _wait_for(metrics_port, "frugal_engine_num_requests_running", 0, 5.0) == 0
    tokens = await _engine_metric(metrics_port, "frugal_engine_generation_tokens_total")
    await asyncio.sleep(0.3)  # ~15 steps of this profile: a live sequence would grow
    assert await _engine_metric(metrics_port, "frugal_engine_generation_tokens_total") == tokens
    assert tokens < 400, "the sequence ran to its end instead of being aborted"


async def _first(lines: AsyncIterator[str], count: int) -> AsyncIterator[str]:
    taken = 0
    async for line in lines:
        yield line
        taken += 1
        if taken >= count:
            return
