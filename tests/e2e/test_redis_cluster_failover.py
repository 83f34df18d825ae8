"""The whole stack, as `frugal up` runs it, on a real Redis Cluster: a primary's death is
survived by its promoted replica, quotas and the usage ledger included.

The cluster is six real redis-server processes (tests/helpers/redis_cluster.py); Envoy,
the control plane, the safety filter and a sim engine are real (tests/helpers/stack.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from redis.crc import key_slot

from frugal.accounting.request_rate import rpm_key
from tests.helpers.redis_cluster import RedisCluster
from tests.helpers.stack import FAST, STACK_MARKS, FrugalStack, replicas, stack_config

pytestmark = STACK_MARKS


def slot(key: str) -> int:
    return key_slot(key.encode())


async def _chat(stack: FrugalStack, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
        return await client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )


async def _usage(stack: FrugalStack, key_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        answer = await admin.get("/admin/v1/usage", params={"key_id": key_id})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


async def _billed(stack: FrugalStack, key_id: str, requests: int) -> list[dict[str, Any]]:
    """The ledger rows of `key_id` once `requests` were settled (settles run after the answer)."""
    async with asyncio.timeout(10):
        while True:
            rows = await _usage(stack, key_id)
            if sum(row["requests"] for row in rows) >= requests:
                return rows
            await asyncio.sleep(0.1)


async def test_the_gateway_on_a_cluster_survives_a_primary_death(tmp_path: Path) -> None:
    cluster = RedisCluster()
    redis = {"url": cluster.url, "managed": False, "cluster": True}
    models = [{"name": "m", "echo": True, "groups": [
        {"name": "g", "profile": "fast", "replicas": replicas(1)}]}]  # fmt: skip
    stack = FrugalStack(tmp_path, stack_config(models, {"fast": FAST}, redis=redis))
    try:
        await stack.start()
        async with httpx.AsyncClient(
            base_url=stack.admin_url, headers=stack.admin_headers
        ) as admin:
            created = await admin.post(
                "/admin/v1/keys", json={"name": "c", "tenant": "acme", "rpm": 3, "tpm": 100_000}
            )
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["record"]["id"]
        for _ in range(2):
            assert (await _chat(stack, key)).status_code == 200
        await _billed(stack, key_id, 2)

        # The primary of this key's windows, reservations and ledger (and of every API key's
        # record, when it is the same node).
        dead = cluster.kill_primary_of(slot(rpm_key(key_id, 0)))
        cluster.wait_promoted(slot(rpm_key(key_id, 0)), dead)
        await asyncio.sleep(0.6)  # past the key cache's 0.5 s: the record is read again

        assert (await _chat(stack, key)).status_code == 200  # the third of three a minute
        refused = await _chat(stack, key)
        assert refused.status_code == 429, refused.text
        [row] = await _billed(stack, key_id, 3)
        assert row["requests"] == 3 and row["total_tokens"] > 0
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await stack.stop()
        cluster.stop()
