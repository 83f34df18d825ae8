"""The safety filter's key and policy caches stay bounded under a flood of random key ids,
and the entries in use survive it: evicted least recently used, never cleared at once.

Real Redis; its MONITOR shows which lookups were answered from the cache. The caches run on
a clock the test moves, so an entry ends only when the test says: what is seen is eviction,
not expiry under a slow machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from frugal.content_checks import DEFAULT_POLICY
from frugal.keys import AuthOutcome, KeyStore
from frugal.keys.format import new_key, new_key_id
from frugal.keys.hashing import Peppers
from frugal.policy_store import PolicySpec, PolicyStore
from safety_filter.extproc.policies import PolicyBook
from tests.helpers.redis_monitor import sent_while
from tests.helpers.redis_server import RedisServer

PEPPERS = Peppers({1: b"b" * 32})
ENTRIES = 64
FLOOD = 20 * ENTRIES
HOT_EVERY = ENTRIES // 4  # the hot key is used this often among the flood's lookups


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis_server.flush()
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_flood_of_random_keys_neither_grows_the_key_cache_nor_evicts_a_hot_key(
    redis_client: aioredis.Redis,
) -> None:
    store = KeyStore(redis_client, PEPPERS, cache_entries=ENTRIES, clock=Clock())
    hot_record, hot = await store.create("hot", "acme")
    cold_record, cold = await store.create("cold", "acme")
    assert (await store.check(cold)).outcome is AuthOutcome.OK
    assert (await store.check(hot)).outcome is AuthOutcome.OK
    await store.touched()
    for n in range(FLOOD):
        assert (await store.check(new_key().plaintext)).outcome is AuthOutcome.UNKNOWN
        assert store.cached_count() <= ENTRIES
        if n % HOT_EVERY == 0:
            assert (await store.check(hot)).outcome is AuthOutcome.OK
    assert store.cached_count() == ENTRIES  # full, not emptied
    assert await sent_while(redis_client, store.check(hot)) == []
    # The key left unused was evicted, so the bound is real: its next use reads Redis.
    assert await sent_while(redis_client, store.check(cold)) == ["HGETALL"]
    # The refresh keeps only records fresh, not the flood's unknown ids.
    refreshed = await sent_while(redis_client, store.refresh_active())
    assert sorted(refreshed) == ["HGETALL", "HGETALL"]
    assert {hot_record.id, cold_record.id} == {r.id for r in await store.list()}


async def test_an_unknown_key_costs_one_round_trip_and_is_then_cached_as_unknown(
    redis_client: aioredis.Redis,
) -> None:
    store = KeyStore(redis_client, PEPPERS, cache_entries=ENTRIES, clock=Clock())
    unknown = new_key().plaintext
    assert await sent_while(redis_client, store.check(unknown)) == ["HGETALL"]
    assert await sent_while(redis_client, store.check(unknown)) == []


async def test_a_cached_record_ends_at_its_ttl_so_a_revocation_is_seen(
    redis_client: aioredis.Redis,
) -> None:
    clock = Clock()
    store = KeyStore(redis_client, PEPPERS, cache_ttl_s=0.5, cache_entries=ENTRIES, clock=clock)
    record, plaintext = await store.create("revoked", "acme")
    assert (await store.check(plaintext)).outcome is AuthOutcome.OK
    await KeyStore(redis_client, PEPPERS).revoke(record.id)
    clock.now += 0.2  # first half of its life: cached, no refresh ahead
    assert (await store.check(plaintext)).outcome is AuthOutcome.OK
    clock.now += 0.3
    assert (await store.check(plaintext)).outcome is AuthOutcome.REVOKED


async def test_a_flood_of_keys_neither_grows_the_policy_cache_nor_evicts_a_hot_override(
    redis_client: aioredis.Redis,
) -> None:
    overrides = PolicyStore(redis_client)
    policies = PolicyBook(DEFAULT_POLICY, {}, overrides, cache_entries=ENTRIES, clock=Clock())
    hot = new_key_id()
    await overrides.put("key", hot, PolicySpec(prompt_action="block"))
    assert (await policies.policy_for("sim", hot)).prompt_action == "block"
    for n in range(FLOOD):
        await policies.policy_for("sim", new_key_id())
        assert policies.cached_count() <= ENTRIES
        if n % HOT_EVERY == 0:
            assert (await policies.policy_for("sim", hot)).prompt_action == "block"
    assert policies.cached_count() == ENTRIES
    assert await sent_while(redis_client, policies.policy_for("sim", hot)) == []
