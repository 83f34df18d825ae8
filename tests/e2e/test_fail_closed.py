"""Fail closed: with Redis or the safety filter gone, every request gets an OpenAI-shaped 503
and nothing reaches an engine (ext_authz, ext_proc and the rate limit filter all deny)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from frugal.wire import engine_metrics_port
from tests.helpers.stack import FAST, FrugalStack, replicas, stack_config

BODY = {"model": "sim-echo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
async def lone_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [{"name": "sim-echo", "echo": True, "groups": [
        {"name": "echo", "profile": "fast", "replicas": replicas(1)}]}]  # fmt: skip
    running = FrugalStack(
        Path(tmp_path_factory.mktemp("lone")), stack_config(models, {"fast": FAST})
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def _prompt_tokens_seen(stack: FrugalStack) -> float:
    port = engine_metrics_port(stack.config.models[0].groups[0].replicas[0].port)
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    found = re.findall(r"^frugal_engine_prompt_tokens_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return sum(float(value) for value in found)


async def _assert_refused_with_503(stack: FrugalStack) -> None:
    before = await _prompt_tokens_seen(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        for stream in (False, True):
            response = await client.post("/v1/chat/completions", json={**BODY, "stream": stream})
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "server_error"
            assert error["code"] == "service_unavailable"
    assert await _prompt_tokens_seen(stack) == before


async def test_requests_are_served_before_anything_fails(lone_stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=lone_stack.base_url, headers=lone_stack.auth) as c:
        assert (await c.post("/v1/chat/completions", json=BODY)).status_code == 200


async def test_redis_down_is_503(lone_stack: FrugalStack) -> None:
    await lone_stack.supervisor.kill("redis")
    await _assert_refused_with_503(lone_stack)


async def test_safety_filter_down_is_503(lone_stack: FrugalStack) -> None:
    await lone_stack.supervisor.kill("safety_filter")
    await _assert_refused_with_503(lone_stack)
