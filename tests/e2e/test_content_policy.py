"""Sensitive content through the real Envoy: prompts redacted or refused, output redacted or
stopped, and no sensitive value of the labelled corpus ever streamed out in clear."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.stack import FrugalStack

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "content" / "corpus.jsonl"
EMAIL = "jane.roe@example.org"


def _positives() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["label"] == "positive"]


def _chat(model: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


async def _post(stack: FrugalStack, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=10) as c:
        return await c.post("/v1/chat/completions", json=body)


def _events(response: httpx.Response) -> list[str]:
    return [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]


def _streamed_text(events: list[str]) -> str:
    text = ""
    for event in events:
        if event.startswith("{") and "choices" in event:
            for choice in json.loads(event)["choices"]:
                text += choice.get("delta", {}).get("content") or ""
    return text


async def test_the_default_policy_redacts_the_prompt(stack: FrugalStack) -> None:
    response = await _post(stack, _chat("sim-echo", f"mail {EMAIL} now"))
    assert response.json()["choices"][0]["message"]["content"] == "mail [REDACTED:EMAIL] now"


async def test_a_blocking_prompt_policy_refuses_naming_only_the_category(
    stack: FrugalStack,
) -> None:
    response = await _post(stack, _chat("sim-echo-strict", f"mail {EMAIL} now"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_policy_violation"
    assert "EMAIL" in error["message"]
    assert EMAIL not in response.text


async def test_output_is_redacted_when_only_the_output_is_checked(stack: FrugalStack) -> None:
    unary = await _post(stack, _chat("sim-echo-raw", f"mail {EMAIL} now"))
    assert unary.json()["choices"][0]["message"]["content"] == "mail [REDACTED:EMAIL] now"
    streamed = await _post(stack, _chat("sim-echo-raw", f"mail {EMAIL} now", stream=True))
    events = _events(streamed)
    assert events[-1] == "[DONE]"
    assert _streamed_text(events) == "mail [REDACTED:EMAIL] now"
    assert EMAIL not in streamed.text


async def test_a_client_cannot_switch_the_output_checks_off(stack: FrugalStack) -> None:
    """The worker runs the checks the request carries; the safety filter replaces any a
    client sends with the policy's own."""
    off = {"detectors": [], "action": "redact", "blocklist": []}
    body = _chat("sim-echo-raw", f"mail {EMAIL} now", stream=True, output_checks=off)
    streamed = await _post(stack, body)
    assert _streamed_text(_events(streamed)) == "mail [REDACTED:EMAIL] now"
    assert EMAIL not in streamed.text


async def test_a_blocking_output_policy_ends_the_stream_with_an_error(stack: FrugalStack) -> None:
    response = await _post(stack, _chat("sim-echo-guarded", f"x {EMAIL} y", stream=True))
    events = _events(response)
    error = json.loads(events[-1])["error"]
    assert error["code"] == "content_policy_violation"
    assert "[DONE]" not in events
    assert "jane" not in _streamed_text(events)


async def test_a_blocked_unary_answer_is_withheld(stack: FrugalStack) -> None:
    response = await _post(stack, _chat("sim-echo-guarded", f"x {EMAIL} y"))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == ""


async def test_no_corpus_positive_leaks_through_a_stream_split_at_random(
    stack: FrugalStack,
) -> None:
    """Every labelled positive, echoed in sub-word pieces of 1-4 characters cut at seeded
    random places, crosses Envoy and the output check; its value never arrives in clear."""
    rng = random.Random(2026)
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        created = await admin.post("/admin/v1/keys", json={"name": "corpus", "tenant": "test"})
    headers = {"authorization": f"Bearer {created.json()['key']}"}  # no request limit
    slots = asyncio.Semaphore(8)

    async def leak(client: httpx.AsyncClient, row: dict[str, Any], seed: int) -> str | None:
        body = _chat("sim-echo-raw", row["text"], stream=True, seed=seed)
        async with slots:
            events = _events(await client.post("/v1/chat/completions", json=body))
        secret = row["text"][row["start"] : row["end"]]
        if events[-1] != "[DONE]" or secret.lower() in _streamed_text(events).lower():
            return f"{row['category']}: {events[-1][:80]}"
        return None

    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as c:
        rows = _positives()
        found = await asyncio.gather(*(leak(c, row, rng.randrange(2**31)) for row in rows))
    assert [f for f in found if f is not None] == []


async def test_the_safety_filter_exports_its_metrics(stack: FrugalStack) -> None:
    await _post(stack, _chat("sim-echo", f"mail {EMAIL} now"))
    port = stack.config.safety_filter.metrics_port
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'frugal_auth_decisions_total{outcome="ok"}' in text
    assert 'frugal_ratelimit_decisions_total{decision="' in text
    detection = (
        'frugal_content_detections_total{action="redact",category="EMAIL",direction="prompt"}'
    )
    assert detection in text
    assert 'frugal_extproc_phase_seconds_count{phase="request_body"}' in text


async def _until(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_policy_overrides_from_the_admin_rest(stack: FrugalStack) -> None:
    """A model override applies to everyone; a key override only makes that key stricter."""
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        created = await admin.post("/admin/v1/keys", json={"name": "strict", "tenant": "t"})
        strict_key, strict_id = created.json()["key"], created.json()["record"]["id"]
        refused = await admin.put("/admin/v1/policies/keys/x", json={"detectors": ["NOPE"]})
        assert refused.status_code == 422
        put = await admin.put(
            f"/admin/v1/policies/keys/{strict_id}", json={"prompt_action": "block"}
        )
        assert put.status_code == 200
    body = _chat("sim-echo", f"mail {EMAIL}")
    strict = {"authorization": f"Bearer {strict_key}"}

    async def strict_refused() -> bool:
        async with httpx.AsyncClient(base_url=stack.base_url, headers=strict) as client:
            return (await client.post("/v1/chat/completions", json=body)).status_code == 400

    assert await _until(strict_refused, 3.0)
    assert (await _post(stack, body)).status_code == 200  # other keys are not affected
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        assert (await admin.delete(f"/admin/v1/policies/keys/{strict_id}")).status_code == 204
        missing = await admin.get(f"/admin/v1/policies/keys/{strict_id}")
        assert missing.status_code == 404
        assert "error" in missing.json()
