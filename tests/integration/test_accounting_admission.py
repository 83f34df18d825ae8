"""Admission on real Redis: the rpm window and the token reservation in one script, and
settlements that reach Redis exactly once through a frozen Redis.

Time is driven through `now`; nothing is timed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from frugal.accounting.admission import (
    Admission,
    AdmissionRequest,
    Admitted,
    Refused,
    TokenWindow,
)
from frugal.accounting.ledger import read_usage
from frugal.accounting.settlements import Settlement, Settlements
from frugal.accounting.token_budget import Charge, TokenBudget
from frugal.accounting.windows import utc_day
from tests.helpers.redis_monitor import sent_while
from tests.helpers.redis_server import RedisServer

T0 = 60 * 28_333_334  # a minute boundary, far from UTC midnight


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    pool = BlockingConnectionPool.from_url(redis_server.url, max_connections=64)
    client = Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.aclose()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def asking(
    key: str,
    *,
    prompt: int = 10,
    output: int | None = 20,
    default: int = 100,
    rpm: int | None = None,
    tpm: int | None = None,
) -> AdmissionRequest:
    return AdmissionRequest(key, new_id("req"), prompt, output, default, rpm, tpm)


async def test_admitting_is_one_redis_command(redis: Redis) -> None:
    admission = Admission(redis)
    await admission.admit(asking(new_id("warm"), rpm=10, tpm=1000), now=T0)  # loads the script
    admit = admission.admit(asking(new_id("key"), rpm=10, tpm=1000), now=T0 + 5)
    assert await sent_while(redis, admit) == ["EVALSHA"]


async def test_the_rate_and_the_tokens_are_decided_together(redis: Redis) -> None:
    admission, key = Admission(redis), new_id("key")
    for _ in range(2):
        assert isinstance(await admission.admit(asking(key, rpm=2, tpm=1000), now=T0 + 1), Admitted)
    by_rate = await admission.admit(asking(key, rpm=2, tpm=1000), now=T0 + 2)
    assert isinstance(by_rate, Refused) and by_rate.limit == "requests"
    assert by_rate.requests is not None and by_rate.requests.remaining == 0
    assert by_rate.requests.reset_s > 0
    # Refused for its rate: nothing was reserved (60 of 1000 tokens are held, not 90).
    assert by_rate.tokens == TokenWindow(1000, 940, 58)


async def test_a_request_refused_for_its_tokens_is_not_counted_against_the_rate(
    redis: Redis,
) -> None:
    admission, key = Admission(redis), new_id("key")
    too_big = await admission.admit(asking(key, output=2000, rpm=1, tpm=1000), now=T0 + 1)
    assert isinstance(too_big, Refused) and too_big.limit == "tokens"
    assert too_big.tokens_asked == 2010
    # The one request a minute is still there.
    assert isinstance(await admission.admit(asking(key, rpm=1, tpm=1000), now=T0 + 2), Admitted)


async def test_without_max_tokens_the_key_gets_what_it_can_afford(redis: Redis) -> None:
    admission, key = Admission(redis), new_id("key")
    first = await admission.admit(asking(key, prompt=30, output=None, tpm=100), now=T0 + 1)
    assert isinstance(first, Admitted) and first.output_tokens == 70  # not the default 100
    assert first.tokens == TokenWindow(100, 0, 59)
    # Nothing left: not even the prompt and one token fit.
    second = await admission.admit(asking(key, prompt=1, output=None, tpm=100), now=T0 + 2)
    assert isinstance(second, Refused) and second.limit == "tokens"
    # Without a limit the default applies.
    free = await admission.admit(asking(new_id("key"), output=None), now=T0 + 3)
    assert isinstance(free, Admitted) and free.output_tokens == 100 and free.tokens is None


async def test_a_repeated_request_id_is_admitted_once(redis: Redis) -> None:
    admission, key = Admission(redis), new_id("key")
    request = asking(key, rpm=5, tpm=1000)
    assert isinstance(await admission.admit(request, now=T0 + 1), Admitted)
    again = await admission.admit(request, now=T0 + 2)
    assert isinstance(again, Admitted) and again.duplicate and again.output_tokens == 20
    check = await admission.admit(asking(key, rpm=5, tpm=1000, output=0), now=T0 + 3)
    assert isinstance(check, Admitted) and check.requests is not None
    assert check.requests.remaining == 3  # two admitted, not three


async def test_concurrent_admissions_never_pass_the_rate(redis: Redis) -> None:
    admission, key = Admission(redis), new_id("key")
    outcomes = await asyncio.gather(
        *(admission.admit(asking(key, rpm=100), now=T0 + 10) for _ in range(300))
    )
    assert sum(isinstance(o, Admitted) for o in outcomes) == 100


async def test_invalid_requests_are_refused(redis: Redis) -> None:
    admission = Admission(redis)
    with pytest.raises(ValueError):
        await admission.admit(AdmissionRequest("", "r", 1, 1, 1, None, None))
    with pytest.raises(ValueError):
        await admission.admit(AdmissionRequest("k", "r", -1, 1, 1, None, None))


async def test_a_settlement_through_a_frozen_redis_lands_exactly_once() -> None:
    server = RedisServer()
    client = Redis.from_url(server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        admission = Admission(client)
        settlements = Settlements(TokenBudget(client))
        key, now = new_id("key"), T0 + 30.0
        admitted = [asking(key, tpm=10_000) for _ in range(5)]
        for request in admitted:
            assert isinstance(await admission.admit(request, now=now), Admitted)
        server.freeze()
        for request in admitted:
            settlements.submit(Settlement(key, request.request_id, "sim", 7, 3, now))
        while settlements.retries < len(admitted):  # every first try timed out
            await asyncio.sleep(0.05)
        server.thaw()  # the timed-out calls may now run too: the settle script is idempotent
        assert await settlements.drain(30.0)
        assert (settlements.settled, settlements.abandoned) == (5, 0)
        [row] = await read_usage(client, key, utc_day(now))
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (5, 35, 15)
        usage = await TokenBudget(client).window_usage(key, now=now)
        assert (usage.used, usage.reserved) == (50, 0)
    finally:
        server.thaw()
        await client.aclose()
        server.stop()


async def test_a_batch_of_settlements_survives_a_script_flush(redis: Redis) -> None:
    budget, key, now = TokenBudget(redis), new_id("key"), T0 + 40.0
    charges = [Charge(key, new_id("req"), "sim", 2, 3, now) for _ in range(3)]
    assert await budget.settle_many(charges[:1]) == [5]
    await redis.script_flush()  # as after a Redis restart without persistence
    assert await budget.settle_many(charges) == [0, 5, 5]  # the first was settled already
    [row] = await read_usage(redis, key, utc_day(now))
    assert (row.requests, row.tokens) == (3, 15)
