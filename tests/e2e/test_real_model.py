"""`make up`'s real model through the whole stack: the README's first curl and the official
openai SDK get SmolLM2's own text through the real Envoy, safety filter and a `transformers`
worker. The model and its profile are read from the repository's frugal.yaml, so this test
follows what `make up` serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from frugal.cli.stack import REPO_ROOT
from frugal.wire import ENGINE_METRICS_PORT_OFFSET
from tests.helpers.stack import STACK_MARKS, FrugalStack, replicas, stack_config

pytestmark = [*STACK_MARKS, pytest.mark.slow]
QUESTION = "What is the capital of France?"


def _default_model() -> tuple[dict[str, Any], dict[str, Any]]:
    """The first model of the repository's frugal.yaml (the real one), and its profiles."""
    config = yaml.safe_load((REPO_ROOT / "frugal.yaml").read_text())
    model = config["models"][0]
    assert model["backend"] == "transformers"
    profiles = {g["profile"]: config["profiles"][g["profile"]] for g in model["groups"]}
    groups = [{**g, "replicas": replicas(1)} for g in model["groups"]]
    return {**model, "groups": groups}, profiles


@pytest.fixture(scope="module")
async def real_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    model, profiles = _default_model()
    directory: Path = tmp_path_factory.mktemp("real-model")
    stack = FrugalStack(directory, stack_config([model], profiles))
    try:
        await stack.start()
    except BaseException:
        print(stack.log_text())
        await stack.stop()
        raise
    yield stack
    await stack.stop()


def _model(stack: FrugalStack) -> str:
    return stack.config.models[0].name


async def test_the_readmes_first_curl_gets_real_text(real_stack: FrugalStack) -> None:
    body = {"model": _model(real_stack), "messages": [{"role": "user", "content": QUESTION}]}
    async with httpx.AsyncClient(base_url=real_stack.base_url, timeout=60) as client:
        response = await client.post(
            "/v1/chat/completions", json={**body, "temperature": 0}, headers=real_stack.auth
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "Paris" in answer["choices"][0]["message"]["content"]
    assert answer["usage"]["prompt_tokens"] > 20  # the chat template's system turn counts


async def test_the_sdk_streams_real_text(real_stack: FrugalStack) -> None:
    client = openai.AsyncOpenAI(
        base_url=real_stack.base_url + "/v1", api_key=real_stack.api_key, max_retries=0
    )
    stream = await client.chat.completions.create(
        model=_model(real_stack),
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    await client.close()


async def test_a_seed_gets_an_openai_error_through_the_gateway(real_stack: FrugalStack) -> None:
    body = {"model": _model(real_stack), "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=real_stack.base_url, timeout=60) as client:
        response = await client.post(
            "/v1/chat/completions", json={**body, "seed": 1}, headers=real_stack.auth
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("seed: not supported by this engine")
    assert {"type", "code"} <= set(error)


async def _running(stack: FrugalStack) -> float:
    port = stack.config.models[0].groups[0].replicas[0].port + ENGINE_METRICS_PORT_OFFSET
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("frugal_engine_num_requests_running"))
    return float(line.rsplit(" ", 1)[1])


async def test_a_client_leaving_stops_the_engine(real_stack: FrugalStack) -> None:
    body = {
        "model": _model(real_stack),
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 400,
        "stream": True,
    }
    async with (
        httpx.AsyncClient(base_url=real_stack.base_url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=real_stack.auth) as r,
    ):
        assert r.status_code == 200
        async for _ in r.aiter_lines():
            if await _running(real_stack) == 1:
                break
    for _ in range(100):
        if await _running(real_stack) == 0:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the engine kept generating after its client left")
