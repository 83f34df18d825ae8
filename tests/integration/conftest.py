"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.helpers.redis_server import RedisServer


@pytest.fixture
async def clean_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the session's real redis-server, emptied first."""
    redis_server.flush()
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
