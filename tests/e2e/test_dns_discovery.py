"""A replica group found by DNS, through the real Envoy: before its name resolves to a running
worker the model answers a clear 503; once a worker runs there, traffic reaches it with no
config edit, and the admin REST lists it.

The name is `localhost`, which the system resolver answers from /etc/hosts; names that change
their answer (compose's `--scale`) are the deploy tests' (tests/deploy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.model import FrugalConfig
from frugal.cli.stack import ChildSpec, engine_worker_specs
from tests.helpers.stack import FAST, STACK_MARKS, FrugalStack, free_port, stack_config

pytestmark = STACK_MARKS

MODEL = "sim-found"
PORT = free_port(with_metrics=True)


@pytest.fixture(scope="module")
async def dns_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    discover = {"dns": "localhost", "port": PORT, "interval_s": 0.5}
    models = [
        {"name": MODEL, "groups": [{"name": "found", "profile": "fast", "discover": discover}]}
    ]
    running = FrugalStack(
        Path(tmp_path_factory.mktemp("dns")), stack_config(models, {"fast": FAST})
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


def _worker_at(config: FrugalConfig, address: str) -> ChildSpec:
    """The engine worker `frugal up` would start had the group listed `address`."""
    data = config.model_dump()
    data["models"][0]["groups"][0]["replicas"] = [address]
    [spec] = engine_worker_specs(FrugalConfig.model_validate(data))
    return spec


async def _chat(stack: FrugalStack) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=10) as c:
        return await c.post("/v1/chat/completions", json=body)


async def _listed(stack: FrugalStack) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        models = (await admin.get("/admin/v1/models")).json()["data"]
    model = next(m for m in models if m["name"] == MODEL)
    group: dict[str, Any] = model["groups"][0]
    return group


async def test_a_group_found_by_dns_serves_once_its_worker_runs(dns_stack: FrugalStack) -> None:
    before = await _chat(dns_stack)
    assert before.status_code == 503, before.text
    assert before.json()["error"]["code"] is not None
    address = f"127.0.0.1:{PORT}"
    await dns_stack.supervisor.start(_worker_at(dns_stack.config, address))
    async with asyncio.timeout(30):
        while (response := await _chat(dns_stack)).status_code != 200:
            await asyncio.sleep(0.25)
    assert response.json()["choices"][0]["message"]["content"]
    group = await _listed(dns_stack)
    assert group["discover"] == {"dns": "localhost", "port": PORT, "interval_s": 0.5}
    assert address in [replica["address"] for replica in group["replicas"]]
