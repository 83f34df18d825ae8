"""The group picker's lines on a real Redis (frugal.group_lines_store): read back as written,
gone after their TTL or once no model picks, an unreadable value read as none; and the
safety filter's refresher, which picks by what it read and by nothing once Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from frugal.group_lines_store import LINES_KEY, TTL_S, GroupLinesStore
from frugal.group_picker import GroupLine, ModelPicker, PickerConfig
from frugal.redis_connection import RedisClient, redis_client
from safety_filter.extproc.group_tally import GroupTally
from safety_filter.picker_roster import PickerRoster
from safety_filter.server import refresh_group_picking
from tests.helpers.redis_server import _free_port

PICKERS = {"m": ModelPicker(PickerConfig(), {"tp8": (GroupLine(5.0, 0.1, 0.0125), 1)})}


async def test_the_lines_read_back_as_written_and_expire(clean_redis: Redis) -> None:
    store = GroupLinesStore(clean_redis)
    assert await store.read() == {}
    await store.write(PICKERS)
    assert await GroupLinesStore(clean_redis).read() == PICKERS  # another process's read
    ttl_ms = await clean_redis.pttl(LINES_KEY)
    assert 0 < ttl_ms <= TTL_S * 1000


async def test_no_picked_model_deletes_what_was_published(clean_redis: Redis) -> None:
    store = GroupLinesStore(clean_redis)
    await store.write({})  # never published: nothing to delete, nothing written
    assert not await clean_redis.exists(LINES_KEY)
    await store.write(PICKERS)
    await store.write({})
    assert not await clean_redis.exists(LINES_KEY)
    assert await store.read() == {}


async def test_an_unreadable_value_is_read_as_no_lines(clean_redis: Redis) -> None:
    await clean_redis.set(LINES_KEY, b'{"m": {"groups": 3}}')
    assert await GroupLinesStore(clean_redis).read() == {}


async def _refreshed(redis: RedisClient, tally: GroupTally, until: Callable[[], bool]) -> None:
    """Run the safety filter's refresher until `until` holds (its first read comes at once)."""
    refresher = refresh_group_picking(GroupLinesStore(redis), PickerRoster(redis), tally)
    task = asyncio.ensure_future(refresher)
    try:
        for _ in range(500):
            if until():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the refresher never got there")
    finally:
        task.cancel()


async def test_the_safety_filter_picks_by_what_it_read_and_stops_without_redis(
    clean_redis: Redis,
) -> None:
    await GroupLinesStore(clean_redis).write(PICKERS)
    tally = GroupTally()
    await _refreshed(clean_redis, tally, lambda: tally.pick("m", 1) is not None)
    gone = redis_client(f"redis://127.0.0.1:{_free_port()}/0", cluster=False)
    try:
        await _refreshed(gone, tally, lambda: tally.pick("m", 1) is None)
    finally:
        await gone.aclose()
