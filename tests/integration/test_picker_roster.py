"""The safety filter processes that share the requests, counted on a real Redis
(safety_filter.picker_roster): each stamp counts the live ones, a stopped process leaves at
once, a silent one once its stamp is stale, and the refresher hands the count to the tally."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from frugal.group_lines_store import GroupLinesStore
from safety_filter.extproc.group_tally import GroupTally
from safety_filter.picker_roster import ROSTER_KEY, STALE_S, PickerRoster
from safety_filter.server import refresh_group_picking


async def test_each_stamp_counts_the_live_processes_and_a_stopped_one_leaves(
    clean_redis: Redis,
) -> None:
    rosters = [PickerRoster(clean_redis) for _ in range(3)]
    assert [await roster.stamp() for roster in rosters] == [1, 2, 3]
    assert await rosters[0].stamp() == 3  # a process counts once however often it stamps
    await rosters[1].leave()
    assert await rosters[0].stamp() == 2


async def test_a_process_that_stopped_stamping_drops_out_and_the_key_expires(
    clean_redis: Redis,
) -> None:
    seconds, micros = await clean_redis.time()
    now_ms = seconds * 1000 + micros // 1000
    stale_ms = int(STALE_S * 1000)
    await clean_redis.zadd(ROSTER_KEY, {"died": now_ms - stale_ms - 1, "late": now_ms - 100})
    assert await PickerRoster(clean_redis, "live").stamp() == 2
    assert await clean_redis.zrange(ROSTER_KEY, 0, -1) == [b"late", b"live"]
    assert 0 < await clean_redis.pttl(ROSTER_KEY) <= stale_ms


async def test_the_refresher_scales_the_tally_by_the_processes_live(clean_redis: Redis) -> None:
    others = [PickerRoster(clean_redis) for _ in range(2)]
    for other in others:
        await other.stamp()
    tally = GroupTally()
    refresher = refresh_group_picking(
        GroupLinesStore(clean_redis), PickerRoster(clean_redis), tally
    )
    task = asyncio.ensure_future(refresher)
    try:
        for _ in range(500):
            if tally.views == 3:
                break
            await asyncio.sleep(0.02)
        assert tally.views == 3
    finally:
        task.cancel()
