"""Integration tests of the token budget (reserve / settle) and the usage ledger on real Redis.

The reserve half is admission's (frugal.accounting.admission), used here without an rpm
limit and with the output asked for, so it reserves exactly `tokens`. Time is driven
through `now`; the one sleep waits for a 50 ms Redis expiry, nothing is timed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from frugal.accounting import ledger, windows
from frugal.accounting.admission import (
    Admission,
    AdmissionRequest,
    Admitted,
    Refused,
    TokenWindow,
)
from frugal.accounting.ledger import read_all_usage, read_usage
from frugal.accounting.token_budget import (
    TokenBudget,
    WindowUsage,
    reservation_key,
    tpm_key,
)
from tests.helpers.redis_server import RedisServer

T0 = 60 * 28_333_334  # a minute boundary on 2023-11-14 (UTC), far from midnight
DAY = date(2023, 11, 14)


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis_server.flush()
    pool = BlockingConnectionPool.from_url(redis_server.url, max_connections=32)
    client = Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.aclose()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Budget:
    """A key's token budget as a request sees it: reserve (admission, tokens only), settle."""

    def __init__(self, redis: Redis, reservation_ttl_s: float = 600.0) -> None:
        self._admission = Admission(redis, reservation_ttl_s=reservation_ttl_s)
        self._budget = TokenBudget(redis, reservation_ttl_s=reservation_ttl_s)

    async def reserve(
        self, key: str, limit: int | None, tokens: int, request: str, now: float | None = None
    ) -> Admitted | Refused:
        asked = AdmissionRequest(key, request, 0, tokens, tokens, rpm=None, tpm=limit)
        return await self._admission.admit(asked, now=now)

    async def settle(
        self, key: str, request: str, model: str, prompt: int, completion: int,
        now: float | None = None,
    ) -> int:  # fmt: skip
        return await self._budget.settle(key, request, model, prompt, completion, now=now)

    async def window_usage(self, key: str, now: float | None = None) -> WindowUsage:
        return await self._budget.window_usage(key, now=now)


async def test_reserve_within_the_limit_then_refuse(redis: Redis) -> None:
    budget = Budget(redis)
    key = new_id("key")
    first = await budget.reserve(key, 1000, 600, new_id("req"), now=T0 + 20)
    assert isinstance(first, Admitted)
    assert (first.output_tokens, first.tokens) == (600, TokenWindow(1000, 400, 40))
    refused = await budget.reserve(key, 1000, 500, new_id("req"), now=T0 + 30)
    assert refused == Refused("tokens", None, TokenWindow(1000, 400, 30), tokens_asked=500)
    usage = await budget.window_usage(key, now=T0 + 30)
    assert (usage.used, usage.reserved) == (0, 600)
    # The next window starts empty.
    assert isinstance(await budget.reserve(key, 1000, 1000, new_id("req"), now=T0 + 60), Admitted)


async def test_settle_replaces_the_reservation_exactly_once(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    await budget.reserve(key, 1000, 600, request, now=T0 + 1)
    assert await budget.settle(key, request, "sim", 70, 30, now=T0 + 5) == 100
    assert await budget.settle(key, request, "sim", 70, 30, now=T0 + 6) == 0
    assert await budget.settle(key, request, "sim", 500, 500, now=T0 + 7) == 0
    usage = await budget.window_usage(key, now=T0 + 7)
    assert (usage.used, usage.reserved) == (100, 0)
    # The freed 500 tokens are available again.
    assert isinstance(await budget.reserve(key, 1000, 900, new_id("req"), now=T0 + 8), Admitted)
    rows = await read_usage(redis, key, DAY)
    assert [(r.model, r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("sim", 1, 70, 30)
    ]


async def test_a_settle_above_the_reservation_charges_the_real_count(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    await budget.reserve(key, 1000, 100, request, now=T0 + 1)
    assert await budget.settle(key, request, "sim", 300, 900, now=T0 + 2) == 1200
    usage = await budget.window_usage(key, now=T0 + 2)
    assert (usage.used, usage.reserved) == (1200, 0)
    refused = await budget.reserve(key, 1000, 1, new_id("req"), now=T0 + 3)
    assert isinstance(refused, Refused) and refused.tokens is not None
    assert refused.tokens.remaining == 0


async def test_a_reservation_settles_into_its_own_window(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    await budget.reserve(key, 1000, 400, request, now=T0 + 59.5)
    assert await budget.settle(key, request, "sim", 100, 200, now=T0 + 61) == 300
    reserved_in = await budget.window_usage(key, now=T0 + 59.5)
    settled_at = await budget.window_usage(key, now=T0 + 61)
    assert (reserved_in.used, reserved_in.reserved) == (300, 0)
    assert (settled_at.used, settled_at.reserved) == (0, 0)


async def test_unlimited_keys_reserve_and_settle_alike(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    reservation = await budget.reserve(key, None, 10**9, request, now=T0)
    assert isinstance(reservation, Admitted) and reservation.tokens is None
    assert await budget.settle(key, request, "sim", 5, 5, now=T0 + 1) == 10


async def test_a_repeated_reserve_reserves_nothing_more(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    await budget.reserve(key, 1000, 300, request, now=T0 + 1)
    again = await budget.reserve(key, 1000, 700, request, now=T0 + 2)
    assert isinstance(again, Admitted) and again.duplicate
    assert again.output_tokens == 300
    assert (await budget.window_usage(key, now=T0 + 2)).reserved == 300
    await budget.settle(key, request, "sim", 10, 0, now=T0 + 3)
    after_settle = await budget.reserve(key, 1000, 700, request, now=T0 + 4)
    assert isinstance(after_settle, Admitted) and after_settle.duplicate
    assert await budget.settle(key, request, "sim", 10, 0, now=T0 + 5) == 0


async def test_reservations_expire_and_a_late_settle_still_charges(redis: Redis) -> None:
    budget = Budget(redis, reservation_ttl_s=0.05)
    key, request = new_id("key"), new_id("req")
    await budget.reserve(key, 1000, 300, request, now=T0 + 1)
    await asyncio.sleep(0.2)
    assert await redis.exists(reservation_key(key, request)) == 0
    # The lost reservation keeps counting in its window (the safe side) ...
    assert (await budget.window_usage(key, now=T0 + 1)).reserved == 300
    # ... and served tokens are still billed, once, in the window and day of the settle.
    assert await budget.settle(key, request, "sim", 20, 20, now=T0 + 70) == 40
    assert await budget.settle(key, request, "sim", 20, 20, now=T0 + 71) == 0
    assert (await budget.window_usage(key, now=T0 + 70)).used == 40
    assert [r.tokens for r in await read_usage(redis, key, DAY)] == [40]


async def test_records_carry_time_to_live(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    await budget.reserve(key, 1000, 300, request, now=T0 + 1)
    assert 0 < await redis.pttl(reservation_key(key, request)) <= 600_000
    assert 0 < await redis.ttl(tpm_key(key, T0)) <= 2 * 60 + 600
    await budget.settle(key, request, "sim", 1, 1, now=T0 + 2)
    assert 0 < await redis.ttl(ledger.usage_key(key, DAY)) <= ledger.LEDGER_TTL_S


async def test_invalid_arguments_are_refused(redis: Redis) -> None:
    budget = Budget(redis)
    with pytest.raises(ValueError):
        await budget.reserve("", 10, 1, "r")
    with pytest.raises(ValueError):
        await budget.reserve("k", 10, -1, "r")
    with pytest.raises(ValueError):
        await budget.settle("k", "r", "sim", -1, 0)
    with pytest.raises(ValueError):
        await budget.settle("k", "r", "", 1, 0)


@dataclass
class Outcome:
    reserved: bool
    charged: int = 0
    prompt: int = 0
    completion: int = 0


async def _reserve_then_settle(
    budget: Budget, key: str, limit: int, rng: random.Random, actual_may_exceed: bool
) -> Outcome:
    tokens = rng.randint(1, 1000)
    reserve_at = T0 + rng.uniform(0, 120)
    settle_at = reserve_at + rng.uniform(0, 90)  # often in a later window than the reservation
    prompt = rng.randint(0, tokens // 2)
    completion = rng.randint(0, tokens * (3 if actual_may_exceed else 1) - prompt)
    request = new_id("req")
    reservation = await budget.reserve(key, limit, tokens, request, now=reserve_at)
    if isinstance(reservation, Refused):
        return Outcome(reserved=False)
    await asyncio.sleep(0)  # let other requests interleave between reserve and settle
    charged = await budget.settle(key, request, "sim", prompt, completion, now=settle_at)
    assert await budget.settle(key, request, "sim", prompt, completion, now=settle_at) == 0
    return Outcome(True, charged, prompt, completion)


async def _assert_counters_match(redis: Redis, key: str, outcomes: list[Outcome]) -> None:
    budget = Budget(redis)
    settled = [o for o in outcomes if o.reserved]
    total = sum(o.charged for o in settled)
    assert total == sum(o.prompt + o.completion for o in settled)
    usages = [await budget.window_usage(key, now=T0 + 60 * w) for w in range(-1, 5)]
    assert sum(u.used for u in usages) == total
    assert all(u.reserved == 0 for u in usages), "a reservation was left behind"
    [row] = await read_usage(redis, key, DAY)
    assert (row.requests, row.tokens) == (len(settled), total)
    assert (row.prompt_tokens, row.completion_tokens) == (
        sum(o.prompt for o in settled),
        sum(o.completion for o in settled),
    )


async def test_256_concurrent_requests_leave_windows_and_ledger_equal_to_the_charges(
    redis: Redis,
) -> None:
    budget, key, rng = Budget(redis), new_id("key"), random.Random(1)
    outcomes = await asyncio.gather(
        *(_reserve_then_settle(budget, key, 10**9, rng, True) for _ in range(256))
    )
    assert all(o.reserved for o in outcomes)
    await _assert_counters_match(redis, key, outcomes)


async def test_256_concurrent_requests_under_a_tight_limit_never_overspend(redis: Redis) -> None:
    budget, key, rng = Budget(redis), new_id("key"), random.Random(2)
    limit = 10_000
    outcomes = await asyncio.gather(
        *(_reserve_then_settle(budget, key, limit, rng, False) for _ in range(256))
    )
    assert any(o.reserved for o in outcomes) and not all(o.reserved for o in outcomes)
    await _assert_counters_match(redis, key, outcomes)
    for w in range(-1, 5):
        assert (await budget.window_usage(key, now=T0 + 60 * w)).used <= limit


async def test_ledger_rows_per_key_model_and_day(redis: Redis) -> None:
    budget = Budget(redis)
    alice, bob = new_id("alice"), new_id("bob")
    next_day = T0 + 24 * 3600
    for key, model, prompt, completion, now in [
        (alice, "llama3:8b", 10, 5, T0),
        (alice, "llama3:8b", 20, 7, T0 + 1),
        (alice, "sim", 1, 1, T0 + 2),
        (bob, "sim", 3, 4, T0 + 3),
        (bob, "sim", 100, 100, next_day),
    ]:
        request = new_id("req")
        await budget.reserve(key, None, prompt + completion, request, now=now)
        await budget.settle(key, request, model, prompt, completion, now=now)
    rows = await read_usage(redis, alice, DAY)
    assert [
        (r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.tokens) for r in rows
    ] == [
        ("llama3:8b", 2, 30, 12, 42),
        ("sim", 1, 1, 1, 2),
    ]
    everyone = [r for r in await read_all_usage(redis, DAY) if r.key_id in (alice, bob)]
    assert [(r.key_id, r.model, r.tokens) for r in everyone] == [
        (alice, "llama3:8b", 42),
        (alice, "sim", 2),
        (bob, "sim", 7),
    ]
    assert [r.tokens for r in await read_usage(redis, bob, windows.utc_day(next_day))] == [200]
    assert await read_usage(redis, new_id("nobody"), DAY) == []


async def test_read_usage_defaults_to_today(redis: Redis) -> None:
    budget = Budget(redis)
    key, request = new_id("key"), new_id("req")
    today = datetime.now(tz=UTC).date()
    await budget.reserve(key, 100, 10, request)
    await budget.settle(key, request, "sim", 4, 6)
    rows = await read_usage(redis, key)
    if datetime.now(tz=UTC).date() == today:  # else UTC midnight passed: nothing to compare
        assert [(r.day, r.tokens) for r in rows] == [(today, 10)]
