"""Keys an earlier Frugal stored without hash tags are renamed once and work again (real Redis)."""

from __future__ import annotations

from redis.asyncio import Redis

from frugal.keys import AuthOutcome, KeyStore, Peppers
from frugal.keys.store import KEY_PREFIX
from frugal.policy_store import POLICY_PREFIX, PolicySpec, PolicyStore
from frugal.redis_key_names import RENAMED_PREFIXES, rename_old_keys

PEPPERS = Peppers({1: b"p" * 32})


async def _as_an_earlier_version_stored_them(clean_redis: Redis) -> None:
    """Move today's keys to the names they had before the hash tags."""
    for old, new in RENAMED_PREFIXES:
        async for raw in clean_redis.scan_iter(match=new.replace("{", "[{]") + "*"):
            name = raw.decode()
            await clean_redis.rename(name, old + name[len(new) :])


async def test_keys_and_policies_of_an_earlier_version_work_after_the_rename(
    clean_redis: Redis,
) -> None:
    record, plaintext = await KeyStore(clean_redis, PEPPERS).create("ci-bot", "acme", rpm=60)
    policies = PolicyStore(clean_redis)
    await policies.put("key", "ci-bot", PolicySpec(prompt_action="block"))
    await _as_an_earlier_version_stored_them(clean_redis)
    assert (await KeyStore(clean_redis, PEPPERS).check(plaintext)).outcome is not AuthOutcome.OK
    assert await policies.get("key", "ci-bot") is None

    assert await rename_old_keys(clean_redis) == 3  # the key's record, the id set, the policy
    store = KeyStore(clean_redis, PEPPERS)
    decision = await store.check(plaintext)
    await store.touched()
    assert decision.outcome is AuthOutcome.OK and decision.record is not None
    assert decision.record.id == record.id
    assert await policies.get("key", "ci-bot") == PolicySpec(prompt_action="block")
    assert await rename_old_keys(clean_redis) == 0  # once only
    names = {raw.decode() async for raw in clean_redis.scan_iter()}
    assert all(n.startswith((KEY_PREFIX, POLICY_PREFIX)) for n in names), names


async def test_a_key_under_both_names_keeps_todays(clean_redis: Redis) -> None:
    await clean_redis.set(f"{POLICY_PREFIX}key:ci-bot", "today")
    await clean_redis.set("frugal:policy:key:ci-bot", "earlier")
    assert await rename_old_keys(clean_redis) == 0
    assert await clean_redis.get(f"{POLICY_PREFIX}key:ci-bot") == b"today"
    assert not await clean_redis.exists("frugal:policy:key:ci-bot")
