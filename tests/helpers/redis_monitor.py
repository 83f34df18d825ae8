"""Which commands clients sent a real Redis, from its MONITOR (test support, I/O).

A script's own calls are marked `lua` by MONITOR and left out, as are the handshake
commands a new pooled connection sends once (not a request's round trips).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis

HANDSHAKE = ("HELLO", "CLIENT", "SELECT", "AUTH", "PING")


async def collect(
    monitor: Any, seen: list[str], clients: list[str] | None = None, skip: tuple[str, ...] = ()
) -> None:
    """Append each client command MONITOR reports to `seen`, until cancelled; with
    `clients`, the address ("ip:port") of the connection that sent it to `clients`. Commands
    that name one of the keys in `skip` are left out."""
    async for entry in monitor.listen():
        command = entry["command"].split(" ", 1)[0].strip('"').upper()
        skipped = any(key in entry["command"] for key in skip)
        if entry.get("client_type") != "lua" and command not in HANDSHAKE and not skipped:
            seen.append(command)
            if clients is not None:
                clients.append(f"{entry['client_address']}:{entry['client_port']}")


async def named_clients(redis: Redis, name: str) -> set[str]:
    """The addresses of the connections that named themselves `name` (CLIENT SETNAME)."""
    return {str(c["addr"]) for c in await redis.client_list() if c.get("name") == name}


async def sent_while(redis: Redis, work: Awaitable[object]) -> list[str]:
    """The commands clients sent while `work` ran."""
    seen: list[str] = []
    async with redis.monitor() as monitor:
        listening = asyncio.ensure_future(collect(monitor, seen))
        await asyncio.sleep(0.05)
        await work
        await redis.ping()
        await asyncio.sleep(0.05)
        listening.cancel()
    return seen
