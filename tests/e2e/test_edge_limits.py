"""The public listener's edge through the real Envoy: size limits, spoofed headers, admin.

Its own small stack (one echo model) with small header limits. The model's one replica
is a real sim engine worker run in this process with a gRPC server interceptor that
records the metadata of every inference call: what the engine received, byte for
byte as gRPC delivered it. Every client call has a timeout and each test asserts that
its answer came, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal.cli.up import start_stack
from frugal.wire import engine_metrics_port
from tests.helpers.stack import FAST, STACK_MARKS, FrugalStack, free_port, stack_config
from tests.helpers.steady_load import eventually

pytestmark = STACK_MARKS

HEADER_KB = 8
HEADERS = 40
CONNECTIONS = 20
CLIENT_TIMEOUT_S = 30.0
CHAT = {"model": "sim-echo", "max_tokens": 4, "messages": [{"role": "user", "content": "a b"}]}
# Every request header Envoy's sanitising is meant to take from an external client
# (configuration/http/http_conn_man/header_sanitizing), with values that would change
# routing, retries, timeouts or tracing if they were believed.
SPOOFED = {
    "x-envoy-retry-on": "5xx,reset,connect-failure",
    "x-envoy-retry-grpc-on": "internal,unavailable",
    "x-envoy-max-retries": "9",
    "x-envoy-upstream-rq-timeout-ms": "1",
    "x-envoy-upstream-rq-per-try-timeout-ms": "1",
    "x-envoy-hedge-on-per-try-timeout": "true",
    "x-envoy-force-trace": "true",
    "x-envoy-original-path": "/spoofed",
    "x-envoy-external-address": "203.0.113.9",
    "x-envoy-internal": "true",
    "x-envoy-downstream-service-cluster": "spoofed",
    "x-envoy-expected-rq-timeout-ms": "1",
    "x-forwarded-for": "203.0.113.9",
    "x-request-id": "spoofed-request-id",
    # Dropped (headers_with_underscores_action), never taken for x-forwarded-for.
    "x_forwarded_for": "203.0.113.9",
}
# Of those, the ones Envoy itself sets on the way to the engine (its own values).
ENVOY_SETS = {
    "x-envoy-original-path",
    "x-envoy-external-address",
    "x-envoy-expected-rq-timeout-ms",
    "x-forwarded-for",
    "x-request-id",
}


class MetadataTap(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Keeps the metadata of every frugal.v1.Inference call the worker receives."""

    def __init__(self) -> None:
        self.calls: list[dict[str, list[str]]] = []

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if details.method.startswith("/frugal.v1.Inference/"):
            seen: dict[str, list[str]] = {}
            for key, value in details.invocation_metadata or ():
                seen.setdefault(key, []).append(str(value))
            self.calls.append(seen)
        return await continuation(details)


class EdgeStack:
    def __init__(self, stack: FrugalStack, tap: MetadataTap) -> None:
        self.stack = stack
        self.tap = tap


@pytest.fixture(scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeStack]:
    tap = MetadataTap()
    port = free_port(with_metrics=True)
    settings = EngineSettings(
        port=port,
        metrics_port=engine_metrics_port(port),
        model="sim-echo",
        group="echo",
        echo=True,
        profile="fast",
        parameters=FAST,
    )
    real_server = grpc.aio.server
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            grpc.aio, "server", lambda **kwargs: real_server(interceptors=[tap], **kwargs)
        )
        worker = EngineWorker(settings)
    await worker.start()
    models = [
        {
            "name": "sim-echo",
            "echo": True,
            "groups": [{"name": "echo", "profile": "fast", "replicas": [f"127.0.0.1:{port}"]}],
        }
    ]
    data = stack_config(models, {"fast": FAST})
    data["listener"] |= {
        "max_request_headers_kb": HEADER_KB,
        "max_headers_count": HEADERS,
        "max_connections": CONNECTIONS,
    }
    stack = FrugalStack(Path(tmp_path_factory.mktemp("edge")), data)
    try:
        stack.api_key = await start_stack(
            stack.config, stack.config_path, stack.files, stack.supervisor, engines=False
        )
        yield EdgeStack(stack, tap)
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await stack.stop()
        await worker.stop(grace=0.5)


def _openai_error(status: int, body: bytes, expected: int, code: str) -> str:
    assert status == expected, body[:500]
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert isinstance(error["type"], str) and error["type"]
    message: str = error["message"]
    return message


async def _curl(*args: str) -> tuple[int, int, bytes]:
    """(curl's exit code, HTTP status or 0, body) of one call, bounded by --max-time."""
    curl = shutil.which("curl")
    assert curl is not None, "these tests need curl"
    process = await asyncio.create_subprocess_exec(
        curl, "-sS", "--max-time", str(int(CLIENT_TIMEOUT_S)), "-w", "\n%{http_code}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    body, _, status = out.rpartition(b"\n")
    assert process.returncode != 28, "curl timed out: the gateway never answered"
    # What curl said of a failure, where the body would be (in assertion messages).
    return process.returncode or 0, int(status or 0), body or err


def _chat_args(stack: FrugalStack, protocol: str, *headers: str) -> list[str]:
    args = [protocol, "-H", f"authorization: Bearer {stack.api_key}"]
    args += ["-H", "content-type: application/json"]
    for header in headers:
        args += ["-H", header]
    return [*args, "--data-binary", json.dumps(CHAT), stack.base_url + "/v1/chat/completions"]


PROTOCOLS = ["--http1.1", "--http2-prior-knowledge"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_headers_over_the_size_limit_get_431(edge: EdgeStack, protocol: str) -> None:
    big = "x-big: " + "a" * (HEADER_KB * 1024)
    _, status, body = await _curl(*_chat_args(edge.stack, protocol, big))
    message = _openai_error(status, body, 431, "headers_too_large")
    assert f"the limit is {HEADER_KB * 1024} bytes" in message


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_more_headers_than_the_limit_get_431(edge: EdgeStack, protocol: str) -> None:
    many = [f"x-h{i}: v" for i in range(HEADERS + 1)]
    _, status, body = await _curl(*_chat_args(edge.stack, protocol, *many))
    message = _openai_error(status, body, 431, "headers_too_large")
    assert f"the limit is {HEADERS}" in message


async def test_http1_headers_past_the_codec_limit_get_envoys_431_with_an_openai_body(
    edge: EdgeStack,
) -> None:
    """Past twice the limit the codec refuses the request itself (edge_limits.py)."""
    huge = "x-big: " + "a" * (2 * HEADER_KB * 1024 + 1024)
    _, status, body = await _curl(*_chat_args(edge.stack, "--http1.1", huge))
    _openai_error(status, body, 431, "headers_too_large")


async def test_http2_headers_past_the_codec_limit_get_a_reset_at_once(edge: EdgeStack) -> None:
    """The one case with no answer to send: HTTP/2's codec resets the stream (curl 92
    or 56), at once."""
    huge = "x-big: " + "a" * (2 * HEADER_KB * 1024 + 1024)
    code, status, _ = await _curl(*_chat_args(edge.stack, "--http2-prior-knowledge", huge))
    assert (code, status) in {(92, 0), (56, 0)}


async def _raw_http1(stack: FrugalStack, request: bytes) -> bytes:
    """Everything Envoy answers one raw request with, until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.config.listener.port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), CLIENT_TIMEOUT_S)
    finally:
        writer.close()


async def test_malformed_http1_gets_400_with_an_openai_body(edge: EdgeStack) -> None:
    answer = await _raw_http1(
        edge.stack, b"POST /v1/chat/completions HTTP/1.1\r\nbad header\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    _openai_error(400, body, 400, "invalid_request")


def _body_of(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes."""
    base = {**CHAT, "messages": [{"role": "user", "content": ""}]}
    padding = size - len(json.dumps(base).encode())
    body = json.dumps({**base, "messages": [{"role": "user", "content": "x" * padding}]})
    assert len(body.encode()) == size
    return body.encode()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_body_of_exactly_the_cap_passes_and_one_byte_more_is_413(
    edge: EdgeStack, protocol: str, tmp_path: Path
) -> None:
    cap = edge.stack.config.listener.max_request_bytes
    for size, expected in ((cap, 200), (cap + 1, 413)):
        path = tmp_path / f"body-{size}.json"
        path.write_bytes(_body_of(size))
        args = _chat_args(edge.stack, protocol)
        args[args.index("--data-binary") + 1] = f"@{path}"
        _, status, body = await _curl(*args)
        assert status == expected, body[:300]
    message = _openai_error(status, body, 413, "request_too_large")
    assert f"limit of {cap} bytes" in message


async def test_expect_100_continue_over_the_cap_gets_413_before_the_body(
    edge: EdgeStack,
) -> None:
    """A client that waits for `100 Continue`, then for an answer, before sending."""
    stack = edge.stack
    cap = stack.config.listener.max_request_bytes
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: frugal\r\n"
        f"authorization: Bearer {stack.api_key}\r\ncontent-type: application/json\r\n"
        f"expect: 100-continue\r\ncontent-length: {cap * 10}\r\n\r\n"
    )
    # No body is sent: Envoy answers and closes the connection.
    answer = await _raw_http1(stack, head.encode())
    continued, _, rest = answer.partition(b"\r\n\r\n")
    assert continued == b"HTTP/1.1 100 Continue"
    head_413, _, body = rest.partition(b"\r\n\r\n")
    assert head_413.startswith(b"HTTP/1.1 413 ")
    assert f"limit of {cap} bytes".encode() in body
    _openai_error(413, body, 413, "request_too_large")


async def test_curl_with_expect_100_continue_gets_its_413(edge: EdgeStack, tmp_path: Path) -> None:
    cap = edge.stack.config.listener.max_request_bytes
    path = tmp_path / "big.json"
    path.write_bytes(_body_of(cap * 20))
    args = _chat_args(edge.stack, "--http1.1", "Expect: 100-continue")
    args[args.index("--data-binary") + 1] = f"@{path}"
    _, status, body = await _curl(*args)
    _openai_error(status, body, 413, "request_too_large")


async def test_spoofed_envoy_and_forwarding_headers_never_reach_the_engine(
    edge: EdgeStack,
) -> None:
    stack = edge.stack
    before = len(edge.tap.calls)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        response = await client.post(
            stack.base_url + "/v1/chat/completions",
            json=CHAT,
            headers={**stack.auth, **SPOOFED},
        )
    # A 1 ms upstream timeout, had Envoy believed it, would have cut this with 504.
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "a b"
    assert response.headers["x-request-id"] != SPOOFED["x-request-id"]
    (seen,) = edge.tap.calls[before:]
    for name, value in SPOOFED.items():
        assert value not in seen.get(name, []), (name, seen.get(name))
    for name in SPOOFED.keys() - ENVOY_SETS:
        assert name not in seen, (name, seen[name])
    # Envoy's own view of the peer, one address, never the client's claim.
    (forwarded_for,) = seen["x-forwarded-for"]
    assert "," not in forwarded_for and forwarded_for != SPOOFED["x-forwarded-for"]
    assert seen["x-envoy-external-address"] == ["127.0.0.1"]
    assert seen["x-request-id"] == [response.headers["x-request-id"]]
    # Nothing was retried: the engine got this request once.
    assert len(edge.tap.calls) == before + 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_clients_grpc_timeout_never_reaches_the_engine(
    edge: EdgeStack, stream: bool
) -> None:
    # One nanosecond: a deadline the worker would have hit before answering anything.
    stack = edge.stack
    before = len(edge.tap.calls)
    headers = {**stack.auth, "grpc-timeout": "1n"}
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        response = await client.post(
            stack.base_url + "/v1/chat/completions",
            json={**CHAT, "stream": stream},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]"), response.text
    else:
        assert response.json()["choices"][0]["message"]["content"] == "a b"
    (seen,) = edge.tap.calls[before:]
    assert "grpc-timeout" not in seen, seen["grpc-timeout"]


async def _models_on_new_connection(stack: FrugalStack) -> tuple[Any, Any, bytes]:
    """A connection with one keep-alive GET /v1/models on it, and what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.config.listener.port)
    request = f"GET /v1/models HTTP/1.1\r\nhost: frugal\r\nauthorization: Bearer {stack.api_key}"
    writer.write((request + "\r\n\r\n").encode())
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(1 << 16), CLIENT_TIMEOUT_S)
    except ConnectionError:
        answer = b""
    return reader, writer, answer


async def test_connections_past_the_listeners_limit_are_closed_at_once(edge: EdgeStack) -> None:
    stack = edge.stack
    stat = "connection_limit.public.active_connections"
    admin = EnvoyAdmin(stack.envoy_admin)
    # Connections of earlier tests are gone first (Envoy counts them until it sees them close).
    assert await eventually(lambda: admin.gauge_is(stat, 0), 30), await admin.gauge(stat)
    held = [await _models_on_new_connection(stack) for _ in range(CONNECTIONS)]
    try:
        assert all(answer.startswith(b"HTTP/1.1 200 ") for _, _, answer in held)
        _, writer, answer = await _models_on_new_connection(stack)
        writer.close()
        # Closed without an answer: the connection is refused before any HTTP is read.
        assert answer == b""
    finally:
        for _, held_writer, _ in held:
            held_writer.close()

    async def served_again() -> bool:
        _, writer, answer = await _models_on_new_connection(stack)
        writer.close()
        return answer.startswith(b"HTTP/1.1 200 ")

    assert await eventually(served_again, 30)


class EnvoyAdmin:
    def __init__(self, url: str) -> None:
        self.url = url

    async def gauge(self, name: str) -> int | None:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
            response = await client.get(f"{self.url}/stats?format=json&filter=^{name}$")
        values = [s["value"] for s in response.json()["stats"] if s.get("name") == name]
        return int(values[0]) if values else None

    async def gauge_is(self, name: str, value: int) -> bool:
        return await self.gauge(name) == value


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_the_public_listener_does_not_serve_the_admin_api(
    edge: EdgeStack, method: str
) -> None:
    """Not with an API key (404: no such route), not with the admin token (401: it is no
    API key)."""
    stack = edge.stack
    url = stack.base_url + "/admin/v1/keys"
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        with_key = await client.request(method, url, headers=stack.auth)
        with_token = await client.request(method, url, headers=stack.admin_headers)
    _openai_error(with_key.status_code, with_key.content, 404, "not_found")
    _openai_error(with_token.status_code, with_token.content, 401, "invalid_api_key")


async def test_the_admin_port_refuses_a_missing_or_wrong_token(edge: EdgeStack) -> None:
    stack = edge.stack
    token = stack.admin_headers["authorization"]
    async with httpx.AsyncClient(base_url=stack.admin_url, timeout=CLIENT_TIMEOUT_S) as admin:
        assert (await admin.get("/admin/v1/keys", headers=stack.admin_headers)).status_code == 200
        for headers in ({}, {"authorization": token[:-1]}, {"authorization": "Bearer wrong"}):
            assert (await admin.get("/admin/v1/keys", headers=headers)).status_code == 401
