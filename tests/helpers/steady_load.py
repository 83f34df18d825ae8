"""Streamed chat completions in closed loops against a running stack, and waiting for a
condition (test support, I/O): what the fault and failover tests hold a stack under."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from tests.helpers.stack import FrugalStack


async def stream_ok(client: httpx.AsyncClient, model: str) -> bool:
    """One streamed chat completion; True when it ended with `[DONE]`."""
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True}
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")


async def steady_load(
    stack: FrugalStack, model: str, stop: asyncio.Event, clients: int
) -> list[bool]:
    """`clients` closed loops of streams until `stop` is set; each stream's outcome."""
    results: list[bool] = []
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=60) as c:

        async def loop() -> None:
            while not stop.is_set():
                results.append(await stream_ok(c, model))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return results


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    """Whether `check` came true within `seconds` (asked every 0.2 s)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False
