"""KeyStore (frugal.keys.store) against a real redis-server: the hot path and admin operations."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from frugal.keys import AuthOutcome, KeyNotFoundError, KeyStateError, KeyStore, Peppers
from frugal.keys.format import PREFIX, checksum, new_key, parse_key
from frugal.keys.record import KeyStatus, utc_now
from tests.helpers.redis_server import RedisServer, _free_port

PEPPERS = Peppers({1: b"p" * 32, 2: b"q" * 32})
REVOCATION_DEADLINE_S = 1.0


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis_server.flush()
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis_client: aioredis.Redis) -> KeyStore:
    return KeyStore(redis_client, PEPPERS)


def with_other_secret(plaintext: str) -> str:
    """A well-formed key with the same id and a different secret."""
    parsed = parse_key(plaintext)
    assert parsed is not None
    body = f"{PREFIX}{parsed.key_id}_{new_key().secret}"
    return body + checksum(body)


async def poll_outcome(store: KeyStore, plaintext: str, want: AuthOutcome, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (outcome := (await store.check(plaintext)).outcome) is not want:
        assert time.monotonic() < deadline, f"still {outcome} after {within_s} s"
        await asyncio.sleep(0.02)


async def test_create_then_authenticate(store: KeyStore, redis_client: aioredis.Redis) -> None:
    record, plaintext = await store.create("ci", "acme", models=["m1"], rpm=60, tpm=1000)
    assert record.pepper_version == 2
    authenticated = await store.authenticate(plaintext)
    assert authenticated is not None and authenticated.id == record.id
    assert (authenticated.tenant, authenticated.models, authenticated.rpm) == ("acme", ["m1"], 60)
    await store.touched()  # the use stamp is written off the request's path
    fetched = await store.get(record.id)
    assert fetched is not None and fetched.last_used_at is not None  # touched by authenticate
    assert fetched.model_copy(update={"last_used_at": None}) == record
    assert [r.id for r in await store.list()] == [record.id]
    # Redis holds the hash, never the key or its secret.
    parsed = parse_key(plaintext)
    assert parsed is not None
    stored = await redis_client.hgetall(KeyStore.record_key(record.id))
    dump = json.dumps({str(k): str(v) for k, v in stored.items()})
    assert parsed.secret not in dump and plaintext not in dump
    assert await redis_client.smembers(KeyStore.ids_key) == {record.id.encode()}


async def test_wrong_secret_malformed_and_unknown_are_refused(store: KeyStore) -> None:
    _, plaintext = await store.create("ci", "acme")
    assert (await store.check(with_other_secret(plaintext))).outcome is AuthOutcome.UNKNOWN
    assert (await store.check(new_key().plaintext)).outcome is AuthOutcome.UNKNOWN
    assert (await store.check(plaintext[:-1])).outcome is AuthOutcome.MALFORMED
    assert await store.authenticate("sk-nope") is None


async def test_malformed_keys_never_reach_redis() -> None:
    unreachable = aioredis.from_url(f"redis://127.0.0.1:{_free_port()}/0")
    store = KeyStore(unreachable, PEPPERS)
    assert (await store.check("sk-frugal-garbage")).outcome is AuthOutcome.MALFORMED
    await unreachable.aclose()


async def test_last_used_at_is_recorded(store: KeyStore) -> None:
    record, plaintext = await store.create("ci", "acme")
    assert record.last_used_at is None
    assert await store.authenticate(plaintext) is not None
    await store.touched()
    stored = await store.get(record.id)
    assert stored is not None and stored.last_used_at is not None
    assert stored.last_used_at >= record.created_at


async def test_revocation_reaches_another_process_within_a_second(
    redis_client: aioredis.Redis, redis_server: RedisServer
) -> None:
    admin = KeyStore(redis_client, PEPPERS)
    other_client = aioredis.from_url(redis_server.url, decode_responses=True)
    other = KeyStore(other_client, PEPPERS)  # its own connection and cache
    try:
        record, plaintext = await admin.create("ci", "acme")
        assert (await other.check(plaintext)).outcome is AuthOutcome.OK  # now cached there
        revoked = await admin.revoke(record.id)
        assert revoked.revoked and revoked.revoked_at is not None
        assert (await admin.check(plaintext)).outcome is AuthOutcome.REVOKED
        await poll_outcome(other, plaintext, AuthOutcome.REVOKED, REVOCATION_DEADLINE_S)
    finally:
        await other_client.aclose()


async def test_revoke_unknown_key_creates_nothing(
    store: KeyStore, redis_client: aioredis.Redis
) -> None:
    with pytest.raises(KeyNotFoundError):
        await store.revoke("AAAAAAAAAAAA")
    assert await redis_client.exists(KeyStore.record_key("AAAAAAAAAAAA")) == 0


async def test_rotation_keeps_the_old_key_for_the_overlap(store: KeyStore) -> None:
    old, old_plaintext = await store.create("ci", "acme", models=["m1"], rpm=5)
    new, new_plaintext = await store.rotate(old.id, overlap_s=1.0)
    assert (new.replaces, new.models, new.rpm, new.tenant) == (old.id, ["m1"], 5, "acme")
    assert new_plaintext != old_plaintext
    previous = await store.get(old.id)
    assert previous is not None and previous.replaced_by == new.id
    assert previous.status(utc_now()) is KeyStatus.ROTATING
    assert (await store.check(old_plaintext)).outcome is AuthOutcome.OK
    assert (await store.check(new_plaintext)).outcome is AuthOutcome.OK
    await poll_outcome(store, old_plaintext, AuthOutcome.EXPIRED, 5.0)
    assert (await store.check(new_plaintext)).outcome is AuthOutcome.OK


async def test_rotation_without_overlap_and_refusals(store: KeyStore) -> None:
    old, old_plaintext = await store.create("ci", "acme")
    assert (await store.check(old_plaintext)).outcome is AuthOutcome.OK
    _, new_plaintext = await store.rotate(old.id, overlap_s=0)
    assert (await store.check(old_plaintext)).outcome is AuthOutcome.EXPIRED
    assert (await store.check(new_plaintext)).outcome is AuthOutcome.OK
    with pytest.raises(KeyStateError, match="cannot be rotated"):
        await store.rotate(old.id, overlap_s=10)
    revoked, _ = await store.create("ci", "acme")
    await store.revoke(revoked.id)
    with pytest.raises(KeyStateError, match="revoked"):
        await store.rotate(revoked.id, overlap_s=10)
    with pytest.raises(KeyNotFoundError):
        await store.rotate("BBBBBBBBBBBB", overlap_s=10)


async def test_rotating_twice_is_refused(store: KeyStore) -> None:
    old, _ = await store.create("ci", "acme")
    await store.rotate(old.id, overlap_s=60)
    with pytest.raises(KeyStateError, match="already rotated"):
        await store.rotate(old.id, overlap_s=60)


async def test_expired_key_is_refused(store: KeyStore) -> None:
    _, plaintext = await store.create("old", "acme", expires_at=utc_now() - timedelta(seconds=1))
    decision = await store.check(plaintext)
    assert decision.outcome is AuthOutcome.EXPIRED
    assert await store.authenticate(plaintext) is None
    _, soon = await store.create("soon", "acme", expires_at=utc_now() + timedelta(seconds=0.3))
    assert (await store.check(soon)).outcome is AuthOutcome.OK
    await poll_outcome(store, soon, AuthOutcome.EXPIRED, 3.0)


async def test_old_pepper_version_still_verifies(redis_client: aioredis.Redis) -> None:
    before = KeyStore(redis_client, Peppers({1: b"p" * 32}))
    record, plaintext = await before.create("ci", "acme")
    assert record.pepper_version == 1
    after = KeyStore(redis_client, PEPPERS)  # pepper 2 added and now current
    assert (await after.check(plaintext)).outcome is AuthOutcome.OK
    assert (await after.create("new", "acme"))[0].pepper_version == 2


async def test_concurrent_misses_share_one_lookup(store: KeyStore) -> None:
    record, plaintext = await store.create("ci", "acme")
    decisions = await asyncio.gather(*(store.check(plaintext) for _ in range(50)))
    assert {d.outcome for d in decisions} == {AuthOutcome.OK}
    assert (await store.get_cached(record.id)) is not None
    assert await store.get_cached("not-an-id") is None


async def test_list_is_oldest_first(store: KeyStore) -> None:
    ids = [(await store.create(f"k{i}", "acme"))[0].id for i in range(3)]
    assert [r.id for r in await store.list()] == ids
