"""Redis restarted (SHUTDOWN, SIGTERM, or SIGKILL, then started again on the same data dir,
as `frugal up` runs it): API keys, policy overrides and the usage ledger are still there,
and the token counters carry on from where they were. `frugal up`'s Redis keeps an
append-only file (frugal/cli/stack.py): a SIGKILL loses nothing it had acknowledged,
which a minute's snapshot alone would. The time until a request with the key is served
again is printed and kept as the `recovery_s` property."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.helpers.stack import (
    FAST,
    STACK_MARKS,
    FrugalStack,
    replicas,
    running_stack,
    stack_config,
)
from tests.helpers.steady_load import seconds_until
from tests.helpers.usage_ledger import TokenWindows, create_key, token_windows, usage_rows

pytestmark = STACK_MARKS

MODEL = "sim-echo"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
POLICY = {"prompt_action": "block", "detectors": ["EMAIL"]}
RESTART_DEADLINE_S = 30.0  # a Redis start and the services' reconnects, on 2 busy cores


@pytest.fixture(scope="module")
async def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [{"name": MODEL, "echo": True, "groups": [
        {"name": "echo", "profile": "fast", "replicas": replicas(1)}]}]  # fmt: skip
    directory = Path(tmp_path_factory.mktemp("redis-restart"))
    async with running_stack(directory, stack_config(models, {"fast": FAST})) as running:
        yield running


async def _served(stack: FrugalStack, key: str, count: int) -> list[int]:
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as c:
        return [(await c.post("/v1/chat/completions", json=BODY)).status_code for _ in range(count)]


async def _admin_get(stack: FrugalStack, path: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as c:
        response = await c.get(path)
    return response.status_code, response.json()


async def _stop_redis(stack: FrugalStack, how: str) -> None:
    child = stack.supervisor.children["redis"]
    if how == "shutdown":
        client = Redis.from_url(stack.config.redis.url)
        try:
            await client.shutdown()
        finally:
            await client.aclose()
    else:
        child.process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    await asyncio.wait_for(child.process.wait(), 30)


@pytest.mark.parametrize("how", ["shutdown", "sigterm", "sigkill"])
async def test_keys_policies_and_ledger_survive_a_restart(
    redis_stack: FrugalStack, how: str, record_property: Callable[[str, object], None]
) -> None:
    stack = redis_stack
    key, key_id = await create_key(stack, tpm=1_000_000)
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as c:
        put = await c.put(f"/admin/v1/policies/keys/{key_id}", json=POLICY)
    assert put.status_code == 200, put.text
    assert await _served(stack, key, 5) == [200] * 5
    [ledger] = await _settled(stack, key_id, requests=5)
    windows = await token_windows(stack, key_id)
    assert windows == TokenWindows(used=ledger["total_tokens"], reserved=0)

    spec = stack.supervisor.children["redis"].spec
    await _stop_redis(stack, how)
    await stack.supervisor.start(spec)
    recovery_s = await seconds_until(lambda: _first_ok(stack, key), RESTART_DEADLINE_S)
    record_property("recovery_s", recovery_s)
    print(f"\nredis {how} then start: a request with the key served after {recovery_s} s")
    assert recovery_s is not None, "no request was served after the restart"

    assert (await _admin_get(stack, f"/admin/v1/keys/{key_id}"))[0] == 200
    assert await _admin_get(stack, f"/admin/v1/policies/keys/{key_id}") == (
        200,
        {"detectors": None, "blocklist": None, "output_action": None, **POLICY},
    )
    # The one request that saw the key served again, and 3 more: the ledger and the
    # counters go on from what they held before the restart.
    assert await _served(stack, key, 3) == [200] * 3
    [after] = await _settled(stack, key_id, requests=5 + 1 + 3)
    assert after["prompt_tokens"] > ledger["prompt_tokens"]
    assert await token_windows(stack, key_id) == TokenWindows(after["total_tokens"], 0)


async def _first_ok(stack: FrugalStack, key: str) -> bool:
    try:
        return await _served(stack, key, 1) == [200]
    except httpx.HTTPError:
        return False


async def _settled(stack: FrugalStack, key_id: str, requests: int) -> list[dict[str, Any]]:
    """The key's ledger once it counts `requests` (settles are written in the background)."""
    deadline = asyncio.get_running_loop().time() + 15
    rows = await usage_rows(stack, key_id)
    while sum(r["requests"] for r in rows) < requests:
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.1)
        rows = await usage_rows(stack, key_id)
    assert sum(r["requests"] for r in rows) == requests, rows
    return rows
