"""The safety filter's caches of key records and policy overrides stay fresh in the
background: a key in use never waits for Redis on a request's path, and a revocation
still takes effect within the cache's bound.

Real Redis; Redis' MONITOR shows which commands a lookup sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from frugal.content_checks import DEFAULT_POLICY
from frugal.keys import AuthOutcome, KeyStore
from frugal.keys.hashing import Peppers
from frugal.policy_store import PolicySpec, PolicyStore
from safety_filter.extproc.policies import PolicyBook
from safety_filter.server import REFRESH_EVERY_S
from tests.helpers.redis_monitor import sent_while
from tests.helpers.redis_server import RedisServer

PEPPERS = Peppers({1: b"r" * 32})


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def refreshing(store: KeyStore, policies: PolicyBook, seconds: float) -> None:
    """What the server's refresher does, for `seconds`."""
    for _ in range(round(seconds / REFRESH_EVERY_S)):
        await asyncio.sleep(REFRESH_EVERY_S)
        await store.refresh_active()
        await policies.refresh_active()


async def test_a_key_in_use_never_waits_for_redis(redis_client: aioredis.Redis) -> None:
    store = KeyStore(redis_client, PEPPERS)
    policies = PolicyBook(DEFAULT_POLICY, {}, PolicyStore(redis_client))
    record, plaintext = await store.create("cached", "acme")
    assert (await store.check(plaintext)).outcome is AuthOutcome.OK
    await policies.policy_for("sim", record.id)
    await refreshing(store, policies, 1.2)  # past both caches' lifetimes
    looked_up = asyncio.gather(store.check(plaintext), policies.policy_for("sim", record.id))
    assert await sent_while(redis_client, looked_up) == []


async def test_a_refreshed_key_is_still_revoked_within_the_bound(
    redis_client: aioredis.Redis,
) -> None:
    store, other = KeyStore(redis_client, PEPPERS), KeyStore(redis_client, PEPPERS)
    record, plaintext = await store.create("revoked", "acme")
    assert (await store.check(plaintext)).outcome is AuthOutcome.OK
    await other.revoke(record.id)
    await refreshing(store, PolicyBook(DEFAULT_POLICY, {}), 0.6)
    assert (await store.check(plaintext)).outcome is AuthOutcome.REVOKED


async def test_a_changed_override_is_refreshed_in(redis_client: aioredis.Redis) -> None:
    overrides = PolicyStore(redis_client)
    policies = PolicyBook(DEFAULT_POLICY, {}, overrides)
    store = KeyStore(redis_client, PEPPERS)
    assert (await policies.policy_for("sim-refresh", None)).prompt_action == "redact"
    await overrides.put("model", "sim-refresh", PolicySpec(prompt_action="block"))
    await refreshing(store, policies, 0.4)
    assert (await policies.policy_for("sim-refresh", None)).prompt_action == "block"
    await overrides.delete("model", "sim-refresh")
