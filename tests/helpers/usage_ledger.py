"""A stack's keys, usage ledger and token counters as the tests read them (test support,
I/O): keys made and the ledger read through the admin REST, the per-minute token windows
(`used`, `reserved`) read from Redis itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from frugal.accounting.token_budget import tpm_key
from tests.helpers.stack import FrugalStack


async def create_key(
    stack: FrugalStack, admin_url: str | None = None, **spec: Any
) -> tuple[str, str]:
    """A new API key (its secret, its id) made through the admin REST (the stack's, or
    another control plane's at `admin_url`)."""
    body = {"name": "chaos", "tenant": "acme", **spec}
    base = admin_url or stack.admin_url
    async with httpx.AsyncClient(base_url=base, headers=stack.admin_headers) as admin:
        response = await admin.post("/admin/v1/keys", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["key"], created["record"]["id"]


async def usage_rows(stack: FrugalStack, key_id: str) -> list[dict[str, Any]]:
    """The key's ledger rows (requests and tokens per model and day), from the admin REST."""
    async with httpx.AsyncClient(
        base_url=stack.admin_url, headers=stack.admin_headers, timeout=10
    ) as admin:
        response = await admin.get("/admin/v1/usage", params={"key_id": key_id})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


@dataclass(frozen=True)
class TokenWindows:
    """A key's token counters summed over its live minute windows."""

    used: int
    reserved: int


async def token_windows(stack: FrugalStack, key_id: str) -> TokenWindows:
    prefix = tpm_key(key_id, 0).removesuffix("0")
    redis = Redis.from_url(stack.config.redis.url)
    try:
        used = reserved = 0
        async for name in redis.scan_iter(match=f"{prefix}*", count=1000):
            values = await redis.hmget(name, ["used", "reserved"])
            used += int(values[0] or 0)
            reserved += int(values[1] or 0)
    finally:
        await redis.aclose()
    return TokenWindows(used, reserved)
