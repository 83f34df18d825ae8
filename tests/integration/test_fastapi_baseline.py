"""Integration tests of the paper's baseline gateway (frugal/bench/baselines/fastapi_gateway.py).

Real processes on free loopback ports: sim engine workers (`python -m engine_workers`) and the
baseline in front of each, as `frugal bench compare` runs them. A second pair has a worker
that fails after a few tokens, to see a broken stream end in an error event.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from frugal import wire
from tests.helpers.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "sim-baseline"
FAST_SIM = {"time_scale": 0.01, "jitter": 0.0, "output_tokens_min": 8, "output_tokens_max": 16}
START_TIMEOUT_S = 20.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path) -> Child:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Child(name, process, log)


def _start_worker(port: int, directory: Path, sim: dict[str, Any]) -> Child:
    env = {
        "FRUGAL_ENGINE_PORT": str(port),
        "FRUGAL_ENGINE_MODEL": MODEL,
        "FRUGAL_ENGINE_SIM": json.dumps({**FAST_SIM, **sim}),
        "FRUGAL_LOG_LEVEL": "WARNING",
    }
    return _spawn(f"worker:{port}", ["-m", "engine_workers"], env, directory / f"w{port}.log")


def _start_baseline(port: int, worker_ports: list[int], directory: Path) -> Child:
    replicas = ",".join(f"127.0.0.1:{p}" for p in worker_ports)
    argv = ["-m", "frugal.bench.baselines.fastapi_gateway", "--port", str(port)]
    argv += ["--model", MODEL, "--replicas", replicas]
    return _spawn(f"baseline:{port}", argv, {}, directory / f"b{port}.log")


def _wait_serving(worker: Child, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            worker.check_alive()
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    pytest.fail(f"{worker.name} not serving after {START_TIMEOUT_S}s:\n{worker.output()}")


def _wait_http(baseline: Child, base_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        baseline.check_alive()
        try:
            if httpx.get(f"{base_url}/v1/models", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{baseline.name} not answering after {START_TIMEOUT_S}s:\n{baseline.output()}")


@dataclass(frozen=True)
class Baselines:
    healthy: str  # base URL of the baseline in front of two sim workers
    faulty: str  # base URL of the baseline in front of a worker that fails mid-stream
    healthy_gateway: Child


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baselines]:
    directory = tmp_path_factory.mktemp("fastapi-baseline")
    worker_ports = [free_port(), free_port(), free_port()]
    http_ports = [free_port(), free_port()]
    workers = [
        _start_worker(worker_ports[0], directory, {}),
        _start_worker(worker_ports[1], directory, {}),
        _start_worker(worker_ports[2], directory, {"fault_after_tokens": 3}),
    ]
    gateways = [
        _start_baseline(http_ports[0], worker_ports[:2], directory),
        _start_baseline(http_ports[1], worker_ports[2:], directory),
    ]
    urls = [f"http://127.0.0.1:{port}" for port in http_ports]
    try:
        for worker, port in zip(workers, worker_ports, strict=True):
            _wait_serving(worker, port)
        for gateway, url in zip(gateways, urls, strict=True):
            _wait_http(gateway, url)
        yield Baselines(healthy=urls[0], faulty=urls[1], healthy_gateway=gateways[0])
    finally:
        for child in [*gateways, *workers]:
            child.stop()


def _chat(model: str = MODEL, **fields: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Tell me about frugal gateways."}]
    return {"model": model, "messages": messages, "max_tokens": 8, "seed": 3, **fields}


def _sse_lines(base_url: str, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        return [line for line in reply.iter_lines() if line]


def _events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_streamed_chat_has_content_engine_time_and_done(baselines: Baselines) -> None:
    body = _chat(stream=True, stream_options={"include_usage": True})
    lines = _sse_lines(baselines.healthy, body)
    events = _events(lines)
    content = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert len([text for text in content if text]) >= 2
    assert events[-1]["usage"]["completion_tokens"] == 8
    assert lines[-1] == "data: [DONE]"
    assert lines[-2].startswith(wire.ENGINE_MS_COMMENT)
    assert float(lines[-2].removeprefix(wire.ENGINE_MS_COMMENT)) > 0


def test_unary_chat_has_text_and_engine_time_header(baselines: Baselines) -> None:
    reply = httpx.post(f"{baselines.healthy}/v1/chat/completions", json=_chat(), timeout=10)
    assert reply.status_code == 200
    completion = reply.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["index"] == 0
    assert completion["choices"][0]["message"]["content"]
    assert completion["usage"]["completion_tokens"] == 8
    assert float(reply.headers[wire.ENGINE_MS]) > 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (json.dumps(_chat(model="no-such-model")), 404, "model_not_found"),
        ('{"model": "sim-baseline", "messages": [', 400, "invalid_request"),
        (json.dumps({"model": MODEL}), 400, "invalid_request"),
        (json.dumps(_chat(max_tokens=2**32)), 400, "invalid_request"),
        (json.dumps(_chat(stream=True, stop=list("abcde"))), 400, "invalid_request"),
    ],
    ids=["unknown-model", "malformed-json", "no-messages", "out-of-range", "engine-refusal"],
)
def test_errors_are_openai_shaped(baselines: Baselines, body: str, status: int, code: str) -> None:
    reply = httpx.post(
        f"{baselines.healthy}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_engine_fault_mid_stream_ends_with_error_event_not_done(baselines: Baselines) -> None:
    lines = _sse_lines(baselines.faulty, _chat(stream=True))
    events = _events(lines)
    assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events)
    assert events[-1]["error"]["type"] == "server_error"
    assert "data: [DONE]" not in lines


def test_openai_sdk_streams_from_the_baseline(baselines: Baselines) -> None:
    client = openai.OpenAI(base_url=f"{baselines.healthy}/v1", api_key="unused", max_retries=0)
    with client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    ) as stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text


def test_models_lists_the_one_model_and_prints_nothing(baselines: Baselines) -> None:
    reply = httpx.get(f"{baselines.healthy}/v1/models", timeout=10)
    assert [entry["id"] for entry in reply.json()["data"]] == [MODEL]
    assert baselines.healthy_gateway.output() == ""
