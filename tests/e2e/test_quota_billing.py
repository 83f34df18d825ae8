"""Quotas without surprises, through the whole stack: a request that names no max_tokens
gets what its key can still afford; a client that leaves mid-stream is billed what the
engine generated for it, once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.helpers.stack import FrugalStack

SLOW = {"model": "sim-slow", "messages": [{"role": "user", "content": "go"}]}


async def _create_key(stack: FrugalStack, **spec: Any) -> tuple[str, str]:
    body = {"name": "billing", "tenant": "acme", **spec}
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        response = await admin.post("/admin/v1/keys", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["key"], created["record"]["id"]


async def _usage(stack: FrugalStack, key_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        rows: list[dict[str, Any]] = (
            await admin.get("/admin/v1/usage", params={"key_id": key_id})
        ).json()["data"]
    return rows


async def test_without_max_tokens_a_small_budget_caps_the_answer(stack: FrugalStack) -> None:
    key, _ = await _create_key(stack, tpm=40)
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        answer = await client.post("/v1/chat/completions", json=SLOW)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # sim-slow writes 400 tokens; the key could afford the prompt and a few dozen.
        assert body["choices"][0]["finish_reason"] == "length"
        assert 1 <= body["usage"]["completion_tokens"] < 40
        assert answer.headers["x-ratelimit-limit-tokens"] == "40"
        # What is left does not cover even a prompt and one token.
        refused = await client.post("/v1/chat/completions", json=SLOW)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "tokens_per_minute_exceeded"
    assert int(refused.headers["retry-after"]) >= 1


async def test_a_client_that_leaves_is_billed_what_the_engine_generated(
    stack: FrugalStack,
) -> None:
    key, key_id = await _create_key(stack, tpm=1_000_000)
    received = 0
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        body = {**SLOW, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                received += line.startswith('data: {"id"')
                if received == 10:
                    break  # leaving the block closes the connection mid-stream
    deadline = asyncio.get_running_loop().time() + 10.0
    rows = await _usage(stack, key_id)
    while not rows and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        rows = await _usage(stack, key_id)
    [row] = rows
    assert row["requests"] == 1
    # At least what reached the client (the role event carries no token), never the whole
    # 400 it would have written; the prompt as the engine counted it, not an estimate.
    assert 9 <= row["completion_tokens"] < 400
    assert row["prompt_tokens"] > 0
    await asyncio.sleep(1.0)
    assert await _usage(stack, key_id) == rows, "the request was billed twice"
