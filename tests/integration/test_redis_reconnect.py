"""A Redis restart costs the services no request: every pooled connection is dead after
it, and the one retry on a connection error (frugal.redis_connection) takes a fresh one.
A real redis-server, restarted on its port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from frugal.redis_connection import PoolBounds, redis_client
from tests.helpers.redis_server import RedisServer

CONNECTIONS = 8


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.mark.parametrize("bounds", [None, PoolBounds(CONNECTIONS, 2.0, 0.5)])
async def test_every_pooled_connection_survives_a_restart(
    own_redis: RedisServer, bounds: PoolBounds | None
) -> None:
    client = redis_client(own_redis.url, cluster=False, bounds=bounds)
    try:
        # As many connections open at once as the pool will hold, all idle in it after.
        await asyncio.gather(*(client.blpop([f"k{i}"], 0.05) for i in range(CONNECTIONS)))
        own_redis.restart()
        results = await asyncio.gather(
            *(client.set(f"k{i}", i) for i in range(CONNECTIONS)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert results == [True] * CONNECTIONS


async def test_a_redis_that_is_gone_still_fails_at_once(own_redis: RedisServer) -> None:
    client = redis_client(own_redis.url, cluster=False, bounds=PoolBounds(CONNECTIONS, 2.0, 0.5))
    try:
        await client.ping()
        own_redis.stop()
        # Refused (the first try and the one retry), not a timeout waited out.
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
