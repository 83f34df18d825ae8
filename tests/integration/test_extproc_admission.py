"""The RequestProcessor admitting requests under their key's limits: the rpm window and the
token reservation in one Redis script, OpenAI's `x-ratelimit-*` headers, the output cap of a
request that names none, Envoy's rate limit mode, shedding, and a Redis that is down.

Integration layer: real keys, admission and settlements over the session's `redis_server`
(a Redis that is down: a loopback port nothing listens on); each test uses its own keys and
request ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from frugal import wire
from frugal.accounting.admission import Admission
from safety_filter.errors import ApiError
from safety_filter.extproc.limit_headers import (
    HEADER_LIMIT_TOKENS,
    HEADER_REMAINING_TOKENS,
    HEADER_RESET_TOKENS,
)
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.processor import CLIENT_HEADERS_REMOVED, RequestProcessor
from safety_filter.extproc.usage import Accounting, estimate_tokens
from safety_filter.ratelimit.descriptors import (
    HEADER_LIMIT,
    HEADER_REMAINING,
    HEADER_RESET,
    HEADER_RETRY_AFTER,
)
from tests.helpers.redis_server import RedisServer, _free_port
from tests.integration.test_extproc_harness import (
    CHAT,
    UNCHECKED,
    Gateway,
    Key,
    RequestAnswer,
    chat,
    in_one_window,
    new_id,
    only,
    open_gateway,
    response_headers,
    sample,
    send_request,
    set_headers,
)

PROMPT = "x" * 40  # 10 tokens by the estimate
PROMPT_TOKENS = 10


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    async with open_gateway(redis_server) as opened:
        yield opened


def test_the_prompt_estimates_ten_tokens() -> None:
    assert estimate_tokens(len(PROMPT)) == PROMPT_TOKENS


async def admit(
    processor: RequestProcessor, key: Key, request_id: str | None = None, **fields: object
) -> RequestAnswer:
    """The answer to a chat call of PROMPT that `processor` admitted."""
    body = chat("sim-echo", PROMPT, **fields)
    return await send_request(processor, key, body, request_id=request_id)


async def refused(
    processor: RequestProcessor, key: Key, request_id: str | None = None, **fields: object
) -> ApiError:
    """The error that refused a chat call of PROMPT."""
    with pytest.raises(ApiError) as caught:
        await admit(processor, key, request_id, **fields)
    return caught.value


def down_redis() -> Redis:
    """A client of a Redis that is not there, failing as fast as the server's does."""
    return Redis.from_url(
        f"redis://127.0.0.1:{_free_port()}/0",
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


# --- tokens -----------------------------------------------------------------------------------


async def test_a_request_reserves_its_prompt_estimate_plus_max_tokens(gateway: Gateway) -> None:
    key, request_id = await gateway.new_key(tpm=1000), new_id("req")
    await admit(gateway.processor(), key, request_id, max_tokens=50)
    usage = await gateway.window_of(key, request_id)
    assert (usage.used, usage.reserved) == (0, PROMPT_TOKENS + 50)


async def test_a_key_without_enough_tokens_is_refused_with_429(gateway: Gateway) -> None:
    key = await gateway.new_key(tpm=100)
    # 10 prompt tokens with 91 to generate is one too many.
    error = await refused(gateway.processor(), key, max_tokens=91)
    assert (error.status, error.type, error.code) == (
        429,
        "rate_limit_error",
        "tokens_per_minute_exceeded",
    )
    headers = dict(error.headers)
    assert headers[HEADER_LIMIT_TOKENS] == "100"
    assert headers[HEADER_REMAINING_TOKENS] == "100"
    assert headers[HEADER_RESET_TOKENS].endswith("s")
    assert 0 < int(headers[HEADER_RETRY_AFTER]) <= 60
    assert HEADER_LIMIT not in headers  # the key has no rpm
    usage = await gateway.budget.window_usage(key.id)
    assert (usage.used, usage.reserved) == (0, 0)
    # Exactly the limit fits.
    await admit(gateway.processor(), key, max_tokens=90)


async def test_a_request_without_max_tokens_reserves_the_default_and_is_not_rewritten(
    gateway: Gateway,
) -> None:
    key, request_id = await gateway.new_key(tpm=100_000), new_id("req")
    processor = gateway.processor(UNCHECKED, default_max_tokens=500)
    assert not (await admit(processor, key, request_id)).rewritten
    usage = await gateway.window_of(key, request_id)
    assert usage.reserved == PROMPT_TOKENS + 500


async def test_a_request_without_max_tokens_is_capped_to_what_the_key_can_afford(
    gateway: Gateway,
) -> None:
    await in_one_window()
    key = await gateway.new_key(tpm=100)
    first, second = new_id("req"), new_id("req")
    answer = await admit(gateway.processor(UNCHECKED), key, first)
    assert answer.forwarded()["max_tokens"] == 100 - PROMPT_TOKENS
    assert (await gateway.window_of(key, first)).reserved == 100
    # The first request settles 79 tokens: 21 are left, 11 of them to generate.
    await gateway.budget.settle(key.id, first, "sim-echo", PROMPT_TOKENS, 69)
    body = (await admit(gateway.processor(UNCHECKED), key, second)).forwarded()
    assert body["max_tokens"] == 100 - 79 - PROMPT_TOKENS
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert (await gateway.window_of(key, second)).reserved == 21


async def test_a_request_without_max_tokens_is_refused_only_when_its_prompt_cannot_fit(
    gateway: Gateway,
) -> None:
    await in_one_window()
    key = await gateway.new_key(tpm=100)
    await admit(gateway.processor(), key, max_tokens=100 - 2 * PROMPT_TOKENS - 1)
    # 11 tokens left: the prompt and one generated token still fit.
    assert (await admit(gateway.processor(UNCHECKED), key)).forwarded()["max_tokens"] == 1
    error = await refused(gateway.processor(), key)
    assert (error.status, error.code) == (429, "tokens_per_minute_exceeded")
    assert dict(error.headers)[HEADER_REMAINING_TOKENS] == "0"


# --- requests per minute, and the standing every answer carries -------------------------------


async def test_a_key_over_its_rpm_is_refused_with_429_and_openais_headers(
    gateway: Gateway,
) -> None:
    metrics = ExtProcMetrics()
    context = gateway.context(metrics=metrics)
    key = await gateway.new_key(rpm=2, tpm=1000)
    for _ in range(2):
        await admit(RequestProcessor(context), key, max_tokens=5)
    request_id = new_id("req")
    processor = RequestProcessor(context)
    error = await refused(processor, key, request_id, max_tokens=5)
    assert (error.status, error.type, error.code) == (
        429,
        "rate_limit_error",
        "requests_per_minute_exceeded",
    )
    assert "Limit 2" in error.message
    headers = dict(error.headers)
    assert (headers[HEADER_LIMIT], headers[HEADER_REMAINING]) == ("2", "0")
    assert headers[HEADER_RESET].endswith("s")
    assert 0 < int(headers[HEADER_RETRY_AFTER]) <= 120
    assert headers[HEADER_LIMIT_TOKENS] == "1000"
    # Refused for its rate: nothing reserved, and the refusal is not counted as a request.
    assert not await gateway.reserved_anything(key, request_id)
    response = processor.refuse(error)
    assert response.immediate_response.status.code == 429
    assert set_headers(response.immediate_response.headers) == headers
    assert sample(metrics, "frugal_ratelimit_decisions_total", decision="ok") == 2
    assert sample(metrics, "frugal_ratelimit_decisions_total", decision="over_limit") == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_an_admitted_requests_response_carries_the_keys_standing(
    gateway: Gateway, stream: bool
) -> None:
    await in_one_window()
    key = await gateway.new_key(rpm=5, tpm=1000)
    processor = gateway.processor()
    await admit(processor, key, max_tokens=50, stream=stream)
    response = only(await processor.on_response_headers(response_headers(200)))
    headers = set_headers(response.response_headers.response.header_mutation)
    headers.pop("cache-control", None)
    assert {name: value for name, value in headers.items() if "reset" not in name} == {
        HEADER_LIMIT: "5",
        HEADER_REMAINING: "4",
        HEADER_LIMIT_TOKENS: "1000",
        HEADER_REMAINING_TOKENS: str(1000 - PROMPT_TOKENS - 50),
    }
    assert headers[HEADER_RESET].endswith("s") and headers[HEADER_RESET_TOKENS].endswith("s")
    # A unary answer was billed at its headers (the estimate: its engine reported nothing).
    await gateway.settled()
    spent = PROMPT_TOKENS + 50 if stream else PROMPT_TOKENS
    # An error answer carries the standing too.
    processor = gateway.processor()
    await admit(processor, key, max_tokens=50, stream=stream)
    response = only(await processor.on_response_headers(response_headers(503)))
    headers = set_headers(response.response_headers.response.header_mutation)
    remaining = str(1000 - spent - PROMPT_TOKENS - 50)
    assert (headers[HEADER_REMAINING], headers[HEADER_REMAINING_TOKENS]) == ("3", remaining)


async def test_a_key_with_only_an_rpm_gets_only_the_requests_headers(gateway: Gateway) -> None:
    key = await gateway.new_key(rpm=3)
    processor = gateway.processor()
    await admit(processor, key)
    response = only(await processor.on_response_headers(response_headers(200)))
    headers = set_headers(response.response_headers.response.header_mutation)
    assert set(headers) == {HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET}


# --- Envoy's global rate limit checks the rpm -------------------------------------------------


@pytest.mark.parametrize(("rpm", "expected"), [(1, "1"), (None, None)])
async def test_with_envoys_rate_limit_the_key_goes_on_as_identity_headers(
    gateway: Gateway, rpm: int | None, expected: str | None
) -> None:
    await in_one_window()
    key = await gateway.new_key(rpm=rpm, tpm=1000)
    for _ in range(2):  # an rpm of 1 is Envoy's to enforce: both are admitted here
        processor = gateway.processor(rate_limit_inline=False)
        answer = await admit(processor, key, max_tokens=5, stream=True)
        wanted = {
            wire.MODEL_HEADER: "sim-echo",
            ":path": CHAT + ":stream",
            wire.KEY_ID_HEADER: key.id,
        }
        if expected is not None:
            wanted[wire.KEY_RPM_HEADER] = expected
        assert answer.set_headers == wanted
        assert set(answer.mutation.remove_headers) == set(CLIENT_HEADERS_REMOVED) - set(wanted)
        response = only(await processor.on_response_headers(response_headers(200)))
        mutation = response.response_headers.response.header_mutation
        # Envoy's filter adds the requests' standing.
        assert set_headers(mutation) == {"cache-control": "no-cache"}
    # The tokens are still reserved here.
    usage = await gateway.budget.window_usage(key.id)
    assert usage.reserved == 2 * (PROMPT_TOKENS + 5)


# --- shedding and a Redis that is down --------------------------------------------------------


async def test_a_request_that_cannot_start_admission_in_time_is_shed_with_503(
    gateway: Gateway,
) -> None:
    metrics = ExtProcMetrics()
    accounting = gateway.accounting(admitting=1, admit_wait_s=0.05)
    key, request_id = await gateway.new_key(rpm=10, tpm=1000), new_id("req")
    processor = gateway.processor(metrics=metrics, accounting=accounting)
    async with accounting.slot():  # another request is being admitted
        error = await refused(processor, key, request_id, max_tokens=5)
    assert (error.status, error.type, error.code) == (503, "server_error", "overloaded")
    assert dict(error.headers) == {HEADER_RETRY_AFTER: "1"}
    assert accounting.shed == 1
    processor.refuse(error)
    await processor.close()
    assert sample(metrics, "frugal_extproc_refusals_total", code="overloaded") == 1
    # Nothing was counted or reserved for it.
    assert not await gateway.reserved_anything(key, request_id)
    usage = await gateway.budget.window_usage(key.id)
    assert (usage.used, usage.reserved) == (0, 0)
    processor = gateway.processor(accounting=accounting)
    await admit(processor, key, max_tokens=5)
    response = only(await processor.on_response_headers(response_headers(200)))
    headers = set_headers(response.response_headers.response.header_mutation)
    assert headers[HEADER_REMAINING] == "9"


async def test_a_slot_freed_within_the_wait_admits_the_request(gateway: Gateway) -> None:
    accounting = gateway.accounting(admitting=1, admit_wait_s=1.0)
    key = await gateway.new_key(tpm=1000)

    async def hold_briefly() -> None:
        async with accounting.slot():
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold_briefly())
    await asyncio.sleep(0)
    assert not holder.done()  # it holds the only slot
    await admit(gateway.processor(accounting=accounting), key, max_tokens=5)
    await holder
    assert accounting.shed == 0


async def test_a_redis_down_at_admission_refuses_with_503_before_the_engine(
    gateway: Gateway,
) -> None:
    down = down_redis()
    try:
        metrics = ExtProcMetrics()
        accounting = Accounting(Admission(down), gateway.settlements)
        processor = gateway.processor(metrics=metrics, accounting=accounting)
        # The key is checked against the key store (up); only the usage store is down.
        error = await refused(processor, gateway.caller)
        assert (error.status, error.type, error.code) == (
            503,
            "server_error",
            "service_unavailable",
        )
        assert dict(error.headers) == {HEADER_RETRY_AFTER: "1"}
        # The request ends in an immediate response: the engine never sees it.
        response = processor.refuse(error)
        assert response.WhichOneof("response") == "immediate_response"
        assert response.immediate_response.status.code == 503
        await processor.close()
        assert gateway.settlements.pending == 0  # nothing admitted, nothing to settle
        assert sample(metrics, "frugal_extproc_refusals_total", code="service_unavailable") == 1
    finally:
        await down.aclose()


async def test_a_unary_answer_of_an_unlimited_key_carries_no_standing(gateway: Gateway) -> None:
    processor = gateway.processor()
    await admit(processor, gateway.caller)
    response = only(await processor.on_response_headers(response_headers(200)))
    assert set_headers(response.response_headers.response.header_mutation) == {}
