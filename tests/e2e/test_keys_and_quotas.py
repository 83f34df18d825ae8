"""API keys and quotas through the real Envoy: ext_authz, the rate limit service, token budgets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.stack import FrugalStack

CHAT = {"model": "sim-echo", "messages": [{"role": "user", "content": "one two three"}]}


async def _create_key(stack: FrugalStack, **spec: Any) -> tuple[str, str]:
    body = {"name": "test", "tenant": "acme", **spec}
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        response = await admin.post("/admin/v1/keys", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["key"], created["record"]["id"]


async def _chat(stack: FrugalStack, headers: dict[str, str], body: Any = CHAT) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        return await client.post("/v1/chat/completions", json=body, headers=headers)


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    return error


async def test_every_bad_key_gets_the_same_401(stack: FrugalStack) -> None:
    revoked, revoked_id = await _create_key(stack)
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        assert (await admin.post(f"/admin/v1/keys/{revoked_id}/revoke")).status_code == 200
    well_formed_unknown, _ = await _create_key(stack)
    unknown = well_formed_unknown[:-12] + "A" * 12
    candidates = [
        {},
        {"authorization": "Bearer nope"},
        {"authorization": f"Bearer {unknown}"},
        {"authorization": f"Bearer {revoked}"},
        {"x-api-key": "sk-frugal-garbage"},
    ]
    await asyncio.sleep(0.6)  # past the key cache's 0.5 s
    bodies = set()
    for headers in candidates:
        response = await _chat(stack, headers)
        error = _error(response, 401)
        assert error["type"] == "authentication_error"
        bodies.add(response.text)
    assert len(bodies) == 1, bodies


async def _secret_detections(stack: FrugalStack, direction: str) -> float:
    """The safety filter's count of SECRET findings redacted in `direction`: "output" ones
    are those the engine's own output check found in what it generated."""
    port = stack.config.safety_filter.metrics_port
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "frugal_content_detections_total" and labels == {
                "action": "redact", "category": "SECRET", "direction": direction,
            }:  # fmt: skip
                return sample.value
    return 0.0


async def test_x_api_key_works_and_the_secret_does_not_reach_the_engine(
    stack: FrugalStack,
) -> None:
    """The echo engine answers what it was given: a prompt carrying the caller's own key
    comes back redacted, and the engine's output check (which would have found the key in
    an echo of it) found nothing, so the engine never held it."""
    key, _ = await _create_key(stack)
    prompt = {**CHAT, "messages": [{"role": "user", "content": f"my key is {key} ok"}]}
    before = [await _secret_detections(stack, d) for d in ("prompt", "output")]
    response = await _chat(stack, {"x-api-key": key}, prompt)
    assert response.status_code == 200, response.text
    answer = response.json()["choices"][0]["message"]["content"]
    assert answer == "my key is [REDACTED:SECRET] ok"
    assert key not in response.text
    after = [await _secret_detections(stack, d) for d in ("prompt", "output")]
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)


async def test_a_model_outside_the_keys_scope_is_403(stack: FrugalStack) -> None:
    key, _ = await _create_key(stack, models=["sim-echo"])
    headers = {"authorization": f"Bearer {key}"}
    assert (await _chat(stack, headers)).status_code == 200
    other = {**CHAT, "model": "sim-mixtral"}
    error = _error(await _chat(stack, headers, other), 403)
    assert error["code"] == "model_not_allowed"


async def test_revocation_takes_effect_within_a_second(stack: FrugalStack) -> None:
    key, key_id = await _create_key(stack)
    headers = {"authorization": f"Bearer {key}"}
    assert (await _chat(stack, headers)).status_code == 200
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        assert (await admin.post(f"/admin/v1/keys/{key_id}/revoke")).status_code == 200
    revoked_at = time.monotonic()
    # The bound is on when a request starts, not on how long a busy machine takes to
    # answer it: one started 1 s after the revocation must be refused.
    while True:
        started = time.monotonic() - revoked_at
        status = (await _chat(stack, headers)).status_code
        if status != 200:
            break
        assert started < 1.0, "a request started 1 s after the revocation still worked"
        await asyncio.sleep(0.05)
    assert status == 401
    assert (await _chat(stack, headers)).status_code == 401


async def test_requests_per_minute_are_limited_with_openai_headers(stack: FrugalStack) -> None:
    key, _ = await _create_key(stack, rpm=3)
    headers = {"authorization": f"Bearer {key}"}
    allowed = [await _chat(stack, headers) for _ in range(3)]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert allowed[0].headers["x-ratelimit-limit-requests"] == "3"
    assert [r.headers["x-ratelimit-remaining-requests"] for r in allowed] == ["2", "1", "0"]
    refused = await _chat(stack, headers)
    error = _error(refused, 429)
    assert error["type"] == "rate_limit_error"
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(refused.headers["retry-after"]) >= 1


async def test_the_sdk_sees_a_rate_limit_error(stack: FrugalStack) -> None:
    key, _ = await _create_key(stack, rpm=1)
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="sim-echo", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="sim-echo", messages=[{"role": "user", "content": "x"}]
        )


async def test_a_token_budget_too_small_for_the_request_is_429(stack: FrugalStack) -> None:
    key, _ = await _create_key(stack, tpm=50)
    headers = {"authorization": f"Bearer {key}"}
    error = _error(await _chat(stack, headers, {**CHAT, "max_tokens": 200}), 429)
    assert error["code"] == "tokens_per_minute_exceeded"
    assert (await _chat(stack, headers, {**CHAT, "max_tokens": 10})).status_code == 200


async def test_usage_is_settled_into_the_ledger(stack: FrugalStack) -> None:
    key, key_id = await _create_key(stack, tpm=100_000)
    headers = {"authorization": f"Bearer {key}"}
    answers = [await _chat(stack, headers) for _ in range(2)]
    stream_body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers) as client:
        streamed = (await client.post("/v1/chat/completions", json=stream_body)).text
    last_usage = [line for line in streamed.split("\n\n") if '"usage"' in line][-1]
    expected = sum(a.json()["usage"]["total_tokens"] for a in answers)
    expected += int(last_usage.split('"total_tokens":')[1].split("}")[0])
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        rows = (await admin.get("/admin/v1/usage", params={"key_id": key_id})).json()["data"]
    assert [(r["model"], r["requests"], r["total_tokens"]) for r in rows] == [
        ("sim-echo", 3, expected)
    ]


async def test_the_admin_api_is_not_on_the_public_listener(stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        response = await client.get("/admin/v1/keys")
    _error(response, 404)
