"""`frugal status` and `GET /admin/v1/status` against the real stack: traffic sent through
Envoy shows up as per-group request and error rates within seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from frugal.cli.__main__ import main as cli_main
from tests.helpers.stack import FrugalStack

DEADLINE_S = 10.0  # counters are read once a second; rates cover the last 10 s


async def _status(stack: FrugalStack) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        response = await admin.get("/admin/v1/status")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _model(status: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(m for m in status["models"] if m["name"] == name)
    return found


async def _until(
    check: Callable[[dict[str, Any]], bool],
    stack: FrugalStack,
    traffic: Callable[[], Awaitable[object]],
) -> dict[str, Any]:
    """Send `traffic`, then poll the status until `check` passes or the deadline; traffic
    is sent again every second meanwhile, so a first batch that landed just before the
    control plane's first look at Envoy's counters (a baseline) does not fail the test."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    polls = 0
    while True:
        if polls % 5 == 0:
            await traffic()
        status = await _status(stack)
        if check(status) or asyncio.get_running_loop().time() > deadline:
            return status
        polls += 1
        await asyncio.sleep(0.2)


async def _chat(client: httpx.AsyncClient, model: str, stream: bool) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def _send(stack: FrugalStack, *requests: tuple[str, bool]) -> list[int]:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=30) as c:
        return list(await asyncio.gather(*(_chat(c, model, stream) for model, stream in requests)))


async def test_traffic_shows_as_rates_per_group(stack: FrugalStack) -> None:
    codes: list[int] = []

    async def traffic() -> None:
        codes.extend(await _send(stack, *[("sim-mixtral", i % 2 == 0) for i in range(6)],
                                 ("sim-faulty", False), ("sim-faulty", True)))  # fmt: skip

    def seen(status: dict[str, Any]) -> bool:
        mixtral = _model(status, "sim-mixtral")
        faulty = _model(status, "sim-faulty")["groups"][0]
        return (mixtral["requests_per_s"] or 0) > 0 and faulty["error_share"] == 1.0

    status = await _until(seen, stack, traffic)
    assert seen(status), json.dumps(status, indent=1)
    assert [c for i, c in enumerate(codes) if i % 8 < 6] == [200] * (len(codes) // 8 * 6)
    assert status["envoy_connected"] and status["envoy_streams"] >= 1
    assert status["config_generation"] >= 1 and status["stats_age_s"] is not None
    assert status["totals"]["models"] == len(stack.config.models)
    assert status["totals"]["requests_per_s"] >= _model(status, "sim-mixtral")["requests_per_s"]
    mixtral = _model(status, "sim-mixtral")
    assert mixtral["policy"] == "static"
    groups = {g["name"]: g for g in mixtral["groups"]}
    assert {n: g["weight"] for n, g in groups.items()} == {"tp8": 50, "tp2": 50}
    assert {n: g["replicas_total"] for n, g in groups.items()} == {"tp8": 1, "tp2": 2}
    assert all(g["replicas_healthy"] == g["replicas_total"] for g in groups.values())
    assert all(g["error_share"] in (0.0, None) for g in groups.values())
    # Both faulty requests fail mid-generation: a 500, and an error event in a 200 stream;
    # with only one of them counted the share would stay at 0.5. Envoy counts a request
    # when it starts and its error when it ends, so a window edge between the two can
    # hold more errors than requests: the share is capped at 1, and `seen` waited for it.
    assert _model(status, "sim-faulty")["groups"][0]["error_share"] == 1.0


async def test_cli_prints_a_frame_and_the_json(
    stack: FrugalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = await _until(
        lambda s: (_model(s, "sim-mixtral")["requests_per_s"] or 0) > 0,
        stack,
        lambda: _send(stack, ("sim-mixtral", False)),
    )
    assert (_model(sent, "sim-mixtral")["requests_per_s"] or 0) > 0
    common = ["--admin-url", stack.admin_url,
              "--admin-token", stack.files.admin_token.read_text().strip()]  # fmt: skip
    assert await _frugal("status", "--once", *common) == 0
    frame = capsys.readouterr().out
    assert frame.startswith("Envoy connected"), frame
    lines = frame.splitlines()
    assert max(len(line) for line in lines) <= 100
    row = next(line for line in lines if line.startswith("sim-mixtral"))
    assert row.split()[1] == "static"
    assert any(line.startswith("  tp8 ") for line in lines)
    assert any(line.startswith("  tp2 ") for line in lines)
    assert "\x1b[" not in frame  # --once draws no screen control codes

    assert await _frugal("status", "--json", *common) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["object"] == "status" and "sim-mixtral" in {m["name"] for m in answer["models"]}


async def test_cli_reports_a_bad_token(
    stack: FrugalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = ["--admin-url", stack.admin_url, "--admin-token", "not-the-admin-token-0123456789"]
    assert await _frugal("status", "--once", *wrong) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("frugal status: Missing or incorrect admin token"), err
    assert err.endswith("(HTTP 401)")


async def _frugal(*argv: str) -> int:
    """`frugal ...` in a worker thread, so this event loop keeps running meanwhile."""
    return await asyncio.to_thread(cli_main, list(argv))


async def test_the_status_is_described_in_openapi(stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=stack.admin_url) as admin:
        spec = (await admin.get("/admin/openapi.json")).json()
    answer = spec["paths"]["/admin/v1/status"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/GatewayStatus")
    assert "requests_per_s" in spec["components"]["schemas"]["GroupStatus"]["properties"]
