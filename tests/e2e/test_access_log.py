"""Envoy's JSON access log, the gateway-overhead header and Envoy's Prometheus stats, end to end.

Fields Envoy fills itself (time, request id, method, path, status, flags, durations,
upstream, bytes, gateway_ms) and ext_authz's identity are checked strictly. The
fields from the safety filter's `frugal.request` metadata (model, tokens, times,
error) are checked strictly where this checkout's processor reports them
(safety_filter/extproc/request_record.py), and only for their type otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from control_plane.model import engine_cluster_name
from frugal import wire
from tests.helpers.stack import FAST, FrugalStack, replicas, stack_config

MILLISECONDS = re.compile(r"^\d+\.\d{3}$")
PROCESSOR_REPORTS = importlib.util.find_spec("safety_filter.extproc.request_record") is not None


def chat(content: str = "log me please", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-echo", "messages": [{"role": "user", "content": content}], **extra}


def log_path(stack: FrugalStack) -> Path:
    return stack.files.directory / "log" / "access.log"


def read_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def logged(path: Path, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The one line of `request_id`, once Envoy has flushed it (frugal up: every second)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in read_lines(path) if line["request_id"] == request_id]
        if lines:
            assert len(lines) == 1, lines
            return lines[0]
        assert time.monotonic() < deadline, f"{request_id} not in {path}"
        await asyncio.sleep(0.2)


async def make_key(stack: FrugalStack) -> tuple[str, str]:
    body = {"name": "access-log", "tenant": "logs"}
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        response = await admin.post("/admin/v1/keys", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["key"], created["record"]["id"]


async def post(stack: FrugalStack, body: Any, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        return await client.post("/v1/chat/completions", json=body, headers=headers)


def assert_reported(value: Any, kind: type, expected: Any = None) -> None:
    """A field from the safety filter's metadata: strict when the processor reports it."""
    if PROCESSOR_REPORTS:
        assert isinstance(value, kind), value
        if expected is not None:
            assert value == expected
    else:
        assert value is None or isinstance(value, kind), value


async def test_a_request_is_one_json_line_under_its_request_id(stack: FrugalStack) -> None:
    key, key_id = await make_key(stack)
    response = await post(stack, chat(max_tokens=4), {"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    request_id = response.headers[wire.REQUEST_ID_HEADER]
    line = await logged(log_path(stack), request_id)
    assert line["status"] == 200
    assert line["method"] == "POST"
    assert line["path"] == "/v1/chat/completions"
    assert line["flags"] == "-"
    assert (line["key_id"], line["tenant"]) == (key_id, "logs")
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["upstream"].startswith("127.0.0.1:")
    assert line["bytes_sent"] > 0 and line["bytes_received"] > 0
    # The same measurement as the response header, as a number.
    assert line["gateway_ms"] == float(response.headers[wire.GATEWAY_OVERHEAD_HEADER])
    assert line["gateway_ms"] <= line["duration_ms"] + 1
    assert_reported(line["model"], str, "sim-echo")
    assert_reported(line["prompt_tokens"], int)
    assert_reported(line["completion_tokens"], int)
    assert_reported(line["engine_ms"], float)
    assert line["error"] is None


async def test_a_stream_is_logged_under_its_stream_binding(stack: FrugalStack) -> None:
    headers = stack.auth
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        body = chat(stream=True, max_tokens=4)
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            events = [chunk async for chunk in r.aiter_text()]
            assert MILLISECONDS.match(r.headers[wire.GATEWAY_OVERHEAD_HEADER])
            request_id = r.headers[wire.REQUEST_ID_HEADER]
    assert "[DONE]" in "".join(events)
    line = await logged(log_path(stack), request_id)
    assert line["status"] == 200
    assert line["path"] == "/v1/chat/completions:stream"
    assert line["gateway_ms"] == float(r.headers[wire.GATEWAY_OVERHEAD_HEADER])
    assert_reported(line["model"], str, "sim-echo")
    assert_reported(line["completion_tokens"], int)
    assert_reported(line["ttft_ms"], float)


async def test_a_401_is_logged_without_an_identity_a_client_could_forge(
    stack: FrugalStack,
) -> None:
    forged = {"authorization": "Bearer sk-frugal-nope", wire.KEY_ID_HEADER: "forged"}
    response = await post(stack, chat(), forged)
    assert response.status_code == 401
    request_id = response.headers[wire.REQUEST_ID_HEADER]
    # No engine saw it: there is no overhead to report.
    assert wire.GATEWAY_OVERHEAD_HEADER not in response.headers
    line = await logged(log_path(stack), request_id)
    assert line["status"] == 401
    assert line["error"] == "invalid_api_key"  # refused by the request processor
    assert line["key_id"] is None and line["tenant"] is None
    assert line["upstream"] is None and line["gateway_ms"] is None
    assert isinstance(line["duration_ms"], int)
    # The overhead filter found no value to convert, and said nothing about it.
    assert "[lua]" not in stack.log_text()


async def test_the_overhead_header_is_milliseconds_and_internal_headers_stay_inside(
    stack: FrugalStack,
) -> None:
    for _ in range(3):
        response = await post(stack, chat(max_tokens=2), stack.auth)
        assert response.status_code == 200
        value = response.headers[wire.GATEWAY_OVERHEAD_HEADER]
        assert MILLISECONDS.match(value), value
        assert 0 < float(value) < 10_000
        assert wire.GATEWAY_OVERHEAD_US_HEADER not in response.headers
        assert re.fullmatch(r"[0-9a-f-]{36}", response.headers[wire.REQUEST_ID_HEADER])


async def test_envoys_own_answers_have_a_request_id_and_no_overhead(stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        response = await client.get("/v1/models", headers=stack.auth)
    assert response.status_code == 200
    assert wire.REQUEST_ID_HEADER in response.headers
    assert wire.GATEWAY_OVERHEAD_HEADER not in response.headers
    line = await logged(log_path(stack), response.headers[wire.REQUEST_ID_HEADER])
    assert (line["status"], line["path"], line["upstream"]) == (200, "/v1/models", None)


async def test_envoy_stats_parse_as_prometheus(stack: FrugalStack) -> None:
    assert (await post(stack, chat(max_tokens=2), stack.auth)).status_code == 200
    async with httpx.AsyncClient(base_url=stack.envoy_admin, timeout=10) as admin:
        response = await admin.get("/stats/prometheus")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    # prometheus_client drops the `_total` of a counter family's name.
    requests = families["envoy_cluster_upstream_rq"]
    assert requests.type == "counter"
    cluster = engine_cluster_name("sim-echo", "echo")
    served = [
        s.value
        for s in requests.samples
        if s.name == "envoy_cluster_upstream_rq_total"
        and s.labels.get("envoy_cluster_name") == cluster
    ]
    assert served and served[0] >= 1


async def test_a_full_log_is_rotated_and_envoy_writes_a_new_one(
    tmp_path_factory: Any,
) -> None:
    models = [
        {"name": "sim-echo", "echo": True,
         "groups": [{"name": "echo", "profile": "fast", "replicas": replicas(1)}]},
    ]  # fmt: skip
    access_log = {"max_bytes": 2000, "backups": 2, "check_interval_s": 0.2}
    stack = FrugalStack(
        Path(tmp_path_factory.mktemp("rotation")),
        stack_config(models, {"fast": FAST}, access_log=access_log),
    )
    try:
        await stack.start()
        path = log_path(stack)
        sent: list[str] = []
        deadline = time.monotonic() + 30
        while not path.with_name("access.log.1").exists():
            assert time.monotonic() < deadline, "never rotated"
            response = await post(stack, chat(max_tokens=2), stack.auth)
            sent.append(response.headers[wire.REQUEST_ID_HEADER])
            await asyncio.sleep(0.1)
        rotated = read_lines(path.with_name("access.log.1"))
        assert rotated and all(line["request_id"] for line in rotated)
        after = await post(stack, chat(max_tokens=2), stack.auth)
        line = await logged(path, after.headers[wire.REQUEST_ID_HEADER])
        assert line["status"] == 200
        assert after.headers[wire.REQUEST_ID_HEADER] not in {r["request_id"] for r in rotated}
        # Nothing lost: every request so far is in the live file or a backup.
        await asyncio.sleep(1.5)
        kept = {
            line["request_id"]
            for name in ("access.log", "access.log.1", "access.log.2")
            for line in read_lines(path.with_name(name))
        }
        assert set(sent) <= kept
        assert not path.with_name("access.log.3").exists()
    except BaseException:
        print(stack.log_text()[-20000:])
        raise
    finally:
        await stack.stop()
