"""The group picker's lines on a real Redis (frugal.group_lines_store): read back as written,
gone after their TTL or once no model picks, and an unreadable value read as none."""

from __future__ import annotations

from redis.asyncio import Redis

from frugal.group_lines_store import LINES_KEY, TTL_S, GroupLinesStore
from frugal.group_picker import GroupLine, ModelPicker, PickerConfig

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
