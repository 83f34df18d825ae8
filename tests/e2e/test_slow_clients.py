"""Slow clients through the real Envoy: slowloris headers, a trickled body, streams read
never. Each holds many connections while ordinary clients are served, and Envoy's memory
and connection count are measured before, during and after (printed with `pytest -s`):
Envoy closes what the edge timeouts bound and its memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.model import engine_cluster_name
from frugal.bench.process_tree import reading
from tests.helpers.stack import (
    FAST,
    STACK_MARKS,
    FrugalStack,
    free_port,
    replicas,
    running_stack,
    stack_config,
)
from tests.helpers.steady_load import eventually, stream_ok

pytestmark = STACK_MARKS
SLOW_CLIENTS = 100
MIB = 1 << 20
# Envoy's RSS may grow by this much while the slow clients hold their connections: their
# buffers are bounded by the listener's per-connection limit (64 KiB in this stack).
MEMORY_BOUND_MIB = 64
# Short edge timeouts so the test sees them fire; the body cap as stack_config's.
LISTENER = {
    "port": free_port(), "max_request_bytes": 64 * 1024,
    "request_headers_timeout_s": 3, "request_timeout_s": 3,
}  # fmt: skip
PACED_TOKENS = 1000


@pytest.fixture(scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models: list[dict[str, Any]] = [
        {"name": "sim-echo", "echo": True,
         "groups": [{"name": "echo", "profile": "fast", "replicas": replicas(1)}]},
        {"name": "sim-long",
         "groups": [{"name": "long", "profile": "long", "replicas": replicas(1)}]},
        {"name": "sim-paced",
         "groups": [{"name": "paced", "profile": "paced", "replicas": replicas(1)}]},
    ]  # fmt: skip
    profiles = {
        "fast": FAST,
        "long": {**FAST, "output_tokens_min": 2000, "output_tokens_max": 2000},
        # At least PACED_TOKENS x 5 ms: longer than the request timeout below.
        "paced": {**FAST, "a_ms": 5.0, "output_tokens_min": PACED_TOKENS,
                  "output_tokens_max": PACED_TOKENS},
    }  # fmt: skip
    data = stack_config(models, profiles, listener=LISTENER)
    async with running_stack(Path(tmp_path_factory.mktemp("edge")), data) as running:
        yield running


def _envoy_pid(stack: FrugalStack) -> int:
    return stack.supervisor.children["envoy"].process.pid


def _envoy_mib(stack: FrugalStack) -> float:
    found = reading(_envoy_pid(stack))
    assert found is not None
    return found.rss_bytes / MIB


async def _active_connections(stack: FrugalStack) -> int:
    async with httpx.AsyncClient(base_url=stack.envoy_admin, timeout=5) as admin:
        stats = await admin.get(
            "/stats", params={"filter": r"^http\.public\.downstream_cx_active$"}
        )
    return int(stats.text.split(":")[1])


async def _open(stack: FrugalStack, first_bytes: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", stack.config.listener.port))
    await asyncio.get_running_loop().sock_sendall(sock, first_bytes)
    return sock


def _closed_by_envoy(sock: socket.socket) -> bool:
    """True once Envoy has answered or closed the connection (EOF or a response)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        pass  # reset
    return True


async def _served_meanwhile(stack: FrugalStack) -> bool:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=60) as c:
        return all(await asyncio.gather(*(stream_ok(c, "sim-echo") for _ in range(8))))


async def test_slowloris_headers_are_cut_by_the_headers_timeout(edge: FrugalStack) -> None:
    before_cx, before_mib = await _active_connections(edge), _envoy_mib(edge)
    start = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge.api_key}\r\n"
    )
    sockets = [await _open(edge, start.encode()) for _ in range(SLOW_CLIENTS)]

    async def trickle() -> None:
        for i in range(200):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.send(f"x-slow-{i}: 1\r\n".encode())
            await asyncio.sleep(0.5)

    trickling = asyncio.create_task(trickle())
    try:
        assert await _active_connections(edge) >= before_cx + SLOW_CLIENTS
        during_mib = _envoy_mib(edge)
        assert await _served_meanwhile(edge)
        # request_headers_timeout cuts every one although bytes keep coming.
        assert await eventually(lambda: _all_closed(sockets), 60)
    finally:
        trickling.cancel()
        for sock in sockets:
            sock.close()
    assert await eventually(lambda: _back_to(edge, before_cx), 30)
    print(f"slowloris: Envoy {before_mib:.1f} -> {during_mib:.1f} MiB, {SLOW_CLIENTS} cut")
    assert during_mib - before_mib < MEMORY_BOUND_MIB


async def _all_closed(sockets: list[socket.socket]) -> bool:
    return all(_closed_by_envoy(sock) for sock in sockets)


async def _back_to(stack: FrugalStack, connections: int) -> bool:
    return await _active_connections(stack) <= connections


async def _upstream_stalled(stack: FrugalStack) -> bool:
    name = f"cluster.{engine_cluster_name('sim-long', 'long')}.upstream_cx_rx_bytes_total"
    async with httpx.AsyncClient(base_url=stack.envoy_admin, timeout=5) as admin:
        first = (await admin.get("/stats", params={"filter": f"^{name}$"})).text
        await asyncio.sleep(1.0)
        second = (await admin.get("/stats", params={"filter": f"^{name}$"})).text
    return first == second and bool(first)


async def test_streams_never_read_hold_bounded_memory(edge: FrugalStack) -> None:
    before_cx, before_mib = await _active_connections(edge), _envoy_mib(edge)
    body = (
        '{"model":"sim-long","stream":true,"max_tokens":2000,'
        '"messages":[{"role":"user","content":"go"}]}'
    )
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge.api_key}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    sockets = []
    try:
        for _ in range(SLOW_CLIENTS // 2):
            sock = await _open(edge, request.encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sockets.append(sock)
        assert await _served_meanwhile(edge)
        # Flow control: once every buffer on the way is full, the engine's bytes stop.
        assert await eventually(lambda: _upstream_stalled(edge), 60)
        during_mib = _envoy_mib(edge)
        assert await _served_meanwhile(edge)
    finally:
        for sock in sockets:
            sock.close()
    assert await eventually(lambda: _back_to(edge, before_cx), 30)
    print(f"never read: Envoy {before_mib:.1f} -> {during_mib:.1f} MiB, {len(sockets)} streams")
    assert during_mib - before_mib < MEMORY_BOUND_MIB


async def test_a_trickled_body_is_cut_with_408(edge: FrugalStack) -> None:
    body = '{"model":"sim-echo","messages":[{"role":"user","content":"' + "x" * 1000 + '"}]}'
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge.api_key}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = await _open(edge, head.encode())
    loop = asyncio.get_running_loop()
    try:
        for byte in body[:200]:  # a byte every 0.1 s: never idle, never done
            with contextlib.suppress(OSError):
                sock.send(byte.encode())
            if _closed_by_envoy(sock):
                break
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 30)
    finally:
        sock.close()
    status_line, _, rest = answer.decode(errors="replace").partition("\r\n")
    assert " 408 " in status_line
    error = json.loads(rest.partition("\r\n\r\n")[2])["error"]
    assert error["type"] == "timeout_error" and error["message"]


async def test_the_request_timeout_never_cuts_a_stream_that_outlives_it(edge: FrugalStack) -> None:
    body = {"model": "sim-paced", "stream": True, "max_tokens": PACED_TOKENS,
            "messages": [{"role": "user", "content": "go"}]}  # fmt: skip
    async with httpx.AsyncClient(base_url=edge.base_url, headers=edge.auth, timeout=120) as c:
        response = await c.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")
    assert response.text.count('"content"') >= PACED_TOKENS  # every token, then [DONE]
