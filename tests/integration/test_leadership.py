"""The balancer lease on a real Redis: one holder at a time, taken over once it is not renewed,
given up on a clean stop, and no leader without Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from control_plane.leadership import LeaderLease
from frugal.process_name import process_name
from tests.helpers.redis_server import _free_port

TTL_S = 0.3


async def test_one_holder_at_a_time_and_renewing_keeps_it(clean_redis: Redis) -> None:
    first, second = LeaderLease(clean_redis, "a", TTL_S), LeaderLease(clean_redis, "b", TTL_S)
    assert await first.refresh()
    for _ in range(4):  # renewed well within the ttl, for longer than the ttl
        await asyncio.sleep(TTL_S / 3)
        assert await first.refresh()
        assert not await second.refresh()


async def test_a_lease_not_renewed_is_taken_over_and_the_old_holder_stops(
    clean_redis: Redis,
) -> None:
    first, second = LeaderLease(clean_redis, "a", TTL_S), LeaderLease(clean_redis, "b", TTL_S)
    assert await first.refresh()
    await asyncio.sleep(TTL_S * 1.5)  # the holder died, or lost Redis, for a while
    assert await second.refresh()
    assert not await first.refresh()
    assert second.leading and not first.leading


async def test_a_clean_stop_hands_over_at_once(clean_redis: Redis) -> None:
    first, second = LeaderLease(clean_redis, "a", 60), LeaderLease(clean_redis, "b", 60)
    assert await first.refresh()
    await first.release()
    assert not first.leading
    assert await second.refresh()
    await first.release()  # not the holder: nothing changes
    assert await second.refresh()


async def test_without_redis_no_replica_leads() -> None:
    unreachable = Redis(port=_free_port(), socket_connect_timeout=0.2)
    lease = LeaderLease(unreachable, process_name(), TTL_S)
    lease.leading = True
    assert not await lease.refresh()
    await unreachable.aclose()


def test_process_names_differ() -> None:
    assert process_name() != process_name()
