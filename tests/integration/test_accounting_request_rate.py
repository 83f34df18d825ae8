"""Integration tests of the per-key request counter against a real redis-server.

Time is driven through the `now` parameter: window rollovers are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from frugal.accounting.request_rate import RequestRateLimiter, rpm_key
from tests.helpers.redis_server import RedisServer

T0 = 60 * 28_333_334  # a minute boundary


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis_server.flush()
    pool = BlockingConnectionPool.from_url(redis_server.url, max_connections=16)
    client = Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.aclose()


def new_key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


async def test_allows_exactly_the_limit_then_refuses(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    key = new_key()
    decisions = [await limiter.hit(key, 5, now=T0 + 10) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    # Allowed: the estimate is empty again once this window's hits have decayed out of the next.
    assert decisions[0].reset_s == pytest.approx(50 + 60)
    # Refused: in the next window 5 * (1 - t/60) + 1 <= 5 from t = 12 s.
    assert decisions[5].reset_s == pytest.approx(50 + 12)
    assert int(await redis.get(rpm_key(key, T0)) or 0) == 5  # refusals are not counted


async def test_rollover_weights_the_previous_window(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    key = new_key()
    for _ in range(5):
        assert (await limiter.hit(key, 5, now=T0 + 50)).allowed
    # Half-way through the next window the previous 5 weigh 2.5: two more fit, not a third.
    half_way = [await limiter.hit(key, 5, now=T0 + 90) for _ in range(3)]
    assert [d.allowed for d in half_way] == [True, True, False]
    assert [d.remaining for d in half_way] == [1, 0, 0]
    # Half-way through the window after that, only the 2 counted at T0+90 weigh in, at 0.5.
    later = await limiter.hit(key, 5, now=T0 + 150)
    assert later.allowed and later.remaining == 3  # 5 - (2 * 0.5 + 1)
    assert later.reset_s == pytest.approx(30 + 60)
    # Once a whole window has passed with no hits, the limit is fully available again.
    fresh = [await limiter.hit(key, 5, now=T0 + 300) for _ in range(6)]
    assert [d.allowed for d in fresh] == [True] * 5 + [False]


async def test_a_burst_at_the_boundary_does_not_double_the_limit(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    key = new_key()
    before = [await limiter.hit(key, 10, now=T0 + 59.9) for _ in range(10)]
    after = [await limiter.hit(key, 10, now=T0 + 60.1) for _ in range(10)]
    assert all(d.allowed for d in before)
    assert not any(d.allowed for d in after)


async def test_hits_zero_reads_and_hits_above_the_limit_are_refused(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    key = new_key()
    await limiter.hit(key, 10, hits=3, now=T0 + 1)
    probe = await limiter.hit(key, 10, hits=0, now=T0 + 2)
    assert probe.allowed and probe.remaining == 7
    too_many = await limiter.hit(key, 10, hits=11, now=T0 + 2)
    assert not too_many.allowed
    assert (await limiter.hit(key, 10, hits=7, now=T0 + 3)).remaining == 0
    assert (await limiter.hit(key, 0, hits=1, now=T0 + 3)).allowed is False


async def test_keys_are_independent_and_expire(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    first, second = new_key(), new_key()
    assert (await limiter.hit(first, 1, now=T0)).allowed
    assert not (await limiter.hit(first, 1, now=T0)).allowed
    assert (await limiter.hit(second, 1, now=T0)).allowed
    ttl = await redis.ttl(rpm_key(first, T0))
    assert 0 < ttl <= 121


async def test_concurrent_hits_admit_exactly_the_limit(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    key = new_key()
    decisions = await asyncio.gather(*(limiter.hit(key, 37, now=T0 + 5) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 37
    assert int(await redis.get(rpm_key(key, T0)) or 0) == 37


async def test_rejects_negative_arguments(redis: Redis) -> None:
    limiter = RequestRateLimiter(redis)
    with pytest.raises(ValueError):
        await limiter.hit(new_key(), -1)
    with pytest.raises(ValueError):
        await limiter.hit(new_key(), 1, hits=-1)
