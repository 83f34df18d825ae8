"""The bill of each request the RequestProcessor admitted: settled once, in the background,
from what the engine reported, what its replica says it generated, or the prompt's estimate;
and a settlement made while Redis is not answering lands once it answers again.

Integration layer: real keys, admission and settlements over the session's `redis_server`
(a frozen Redis: one of this module's own, SIGSTOPped); real sim engine workers on loopback,
asked over `frugal.v1.EngineUsage`. Each test uses its own keys and request ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine_workers.backends.sim_model import SimProfile
from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal import wire
from frugal.accounting.admission import Admission
from frugal.accounting.ledger import read_usage
from frugal.accounting.settlements import Settlements
from frugal.accounting.token_budget import TokenBudget, reservation_key
from frugal.engine_usage import EngineUsage, EngineUsageClient
from frugal.v1 import inference_pb2 as pb
from safety_filter.extproc.usage import Accounting, estimate_tokens
from tests.helpers.engine_worker import inference_stub, proto_value, serving
from tests.helpers.redis_server import RedisServer, _free_port
from tests.integration.test_extproc_harness import (
    Gateway,
    Key,
    chat,
    engine_usage_headers,
    new_id,
    only,
    open_gateway,
    response_headers,
    send_request,
    started,
    upstream_attributes,
    usage_trailers,
)

# About 8.5 ms a token (the tp2 step model unscaled): a stream outlives any test's wait.
LONG_SIM = {"time_scale": 1.0, "jitter": 0.0, "output_tokens_min": 50_000,
            "output_tokens_max": 50_000}  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    async with open_gateway(redis_server) as opened:
        yield opened


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def worker() -> AsyncIterator[EngineWorker]:
    settings = EngineSettings(port=0, model="sim-echo", sim=SimProfile.model_validate(LONG_SIM))
    async with serving(settings) as started_worker:
        yield started_worker


@pytest_asyncio.fixture(loop_scope="session")
async def engine_usage() -> AsyncIterator[EngineUsageClient]:
    client = EngineUsageClient()
    try:
        yield client
    finally:
        await client.close()


async def billed(gateway: Gateway, key: Key, request_id: str) -> tuple[int, int, int, int]:
    """(requests, prompt tokens, completion tokens) on the key's ledger, and the tokens its
    window holds reserved, once every settlement is in."""
    row = await gateway.usage_row(key)
    usage = await gateway.window_of(key, request_id)
    assert usage.used == row.tokens
    return row.requests, row.prompt_tokens, row.completion_tokens, usage.reserved


# --- what is billed ---------------------------------------------------------------------------


async def test_a_stream_settles_the_trailer_counts(gateway: Gateway) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = await started(gateway.processor(), key, request_id=request_id, max_tokens=100)
    await processor.on_response_trailers(usage_trailers(17, 23))
    assert await billed(gateway, key, request_id) == (1, 17, 23, 0)
    assert (await gateway.usage_row(key)).model == "sim-echo"


async def test_settlement_happens_once_when_close_follows_trailers(gateway: Gateway) -> None:
    key, request_id = await gateway.new_key(), new_id("req")
    processor = await started(gateway.processor(), key, request_id=request_id)
    await processor.on_response_trailers(usage_trailers(3, 4))
    await processor.close()
    await processor.close()
    assert await billed(gateway, key, request_id) == (1, 3, 4, 0)


async def test_a_unary_answer_settles_what_its_headers_report(gateway: Gateway) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = gateway.processor()
    await send_request(processor, key, chat(max_tokens=50), request_id=request_id)
    reported = engine_usage_headers(9, 5)
    only(await processor.on_response_headers(response_headers(200, *reported)))
    only(await processor.on_response_trailers(usage_trailers(9, 5)))
    await processor.close()
    assert await billed(gateway, key, request_id) == (1, 9, 5, 0)


async def test_a_unary_answer_without_a_report_settles_the_prompt_estimate(
    gateway: Gateway,
) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = gateway.processor()
    await send_request(processor, key, chat(content="z" * 40), request_id=request_id)
    only(await processor.on_response_headers(response_headers(200)))
    assert await billed(gateway, key, request_id) == (1, estimate_tokens(40), 0, 0)


async def test_a_stream_ended_early_settles_the_prompt_estimate(gateway: Gateway) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = gateway.processor()
    await started(processor, key, request_id=request_id, content="y" * 40)
    await processor.close()  # the client went away: Envoy reset the engine, no trailers
    assert await billed(gateway, key, request_id) == (1, estimate_tokens(40), 0, 0)


@pytest.mark.parametrize("stream", [True, False])
async def test_an_engine_error_charges_nothing(gateway: Gateway, stream: bool) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = gateway.processor()
    await send_request(processor, key, chat(stream=stream), request_id=request_id)
    only(await processor.on_response_headers(response_headers(503)))
    await processor.close()
    assert await billed(gateway, key, request_id) == (1, 0, 0, 0)


async def test_a_request_whose_answers_envoy_never_got_is_billed_nothing(
    gateway: Gateway,
) -> None:
    """Admitted, then answered after Envoy's message_timeout: Envoy sent its fail-closed
    503 and closed the stream, so no engine saw the request (the soak's start burst)."""
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = gateway.processor()
    body = chat(content="w" * 40, stream=True)
    await send_request(processor, key, body, request_id=request_id, delivered=False)
    await processor.close()
    assert await billed(gateway, key, request_id) == (1, 0, 0, 0)


# --- a stream whose client left: its replica says what it generated ---------------------------


async def generate_then_leave(worker: EngineWorker, request_id: str, texts: int) -> None:
    """What the engine does for a stream whose client leaves after `texts` texts."""
    message = pb.ChatMessage(role="user", content=proto_value("Hi"))
    request = pb.ChatCompletionRequest(model="sim-echo", messages=[message], max_tokens=2_000)
    async with inference_stub(worker.address) as stub:
        call: Any = stub.StreamChatCompletion(
            request, metadata=((wire.REQUEST_ID_HEADER, request_id),)
        )
        received = 0
        async for chunk in call:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                if received == texts:
                    break
        call.cancel()


async def test_a_stream_whose_client_left_is_billed_what_its_replica_generated(
    gateway: Gateway, worker: EngineWorker, engine_usage: EngineUsageClient
) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = gateway.processor(engine_usage=engine_usage)
    await send_request(processor, key, chat(stream=True, max_tokens=2_000), request_id=request_id)
    processor.note_attributes(upstream_attributes(worker.address))  # with the response headers
    only(await processor.on_response_headers(response_headers(200)))
    await generate_then_leave(worker, request_id, texts=5)
    await processor.close()  # no trailers: the client left, Envoy reset the engine's stream
    requests, prompt, completion, reserved = await billed(gateway, key, request_id)
    recorded = await engine_usage.request_usage(worker.address, request_id, wait_s=0)
    assert recorded == EngineUsage(True, prompt, completion)
    assert (requests, reserved) == (1, 0)
    assert 5 <= completion < 2_000


@pytest.mark.parametrize("reachable", [True, False], ids=["unknown-request", "unreachable"])
async def test_a_replica_that_cannot_say_leaves_the_prompt_estimate(
    gateway: Gateway, worker: EngineWorker, engine_usage: EngineUsageClient, reachable: bool
) -> None:
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    address = worker.address if reachable else f"127.0.0.1:{_free_port()}"
    processor = gateway.processor(engine_usage=engine_usage)
    await send_request(processor, key, chat(content="w" * 40, stream=True), request_id=request_id)
    processor.note_attributes(upstream_attributes(address))
    only(await processor.on_response_headers(response_headers(200)))
    await processor.close()
    assert await billed(gateway, key, request_id) == (1, estimate_tokens(40), 0, 0)


# --- a Redis that stops answering -------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def frozen_redis() -> AsyncIterator[tuple[RedisServer, Redis]]:
    """A Redis of this test's own (it is frozen, then thawed) and a client that gives up on
    a command within 0.2 s, as the server's pool does within its socket timeout."""
    server = RedisServer()
    client = Redis.from_url(
        server.url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield server, client
    finally:
        server.thaw()
        await client.aclose()
        server.stop()


async def test_a_settlement_made_while_redis_is_frozen_lands_once_after(
    gateway: Gateway, frozen_redis: tuple[RedisServer, Redis]
) -> None:
    server, redis = frozen_redis
    budget = TokenBudget(redis)
    settlements = Settlements(budget)
    accounting = Accounting(Admission(redis), settlements)
    processor = gateway.processor(accounting=accounting)
    # A first request settles normally (the settle script is loaded, as in a running gateway).
    warm_key = await gateway.new_key()
    warm = await started(processor, warm_key, max_tokens=5)
    await warm.on_response_trailers(usage_trailers(1, 1))
    await gateway.settled(settlements)
    key, request_id = await gateway.new_key(tpm=10_000), new_id("req")
    processor = await started(
        gateway.processor(accounting=accounting), key, request_id=request_id, max_tokens=100
    )
    server.freeze()
    try:
        await processor.on_response_trailers(usage_trailers(17, 23))  # answers at once
        deadline = time.monotonic() + 5.0
        while settlements.retries < 3:
            assert time.monotonic() < deadline, "the settlement was never retried"
            await asyncio.sleep(0.05)
        assert (settlements.pending, settlements.settled) == (1, 1)
    finally:
        server.thaw()
    # A try that timed out may still run once the server thaws (it was queued there): the
    # settled marker lets only one try charge.
    await gateway.settled(settlements)
    assert (settlements.settled, settlements.abandoned) == (2, 0)
    rows = await read_usage(redis, key.id)
    assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [(1, 17, 23)]
    window = await redis.hget(reservation_key(key.id, request_id), "window")
    assert window is not None
    usage = await budget.window_usage(key.id, now=float(window))
    assert (usage.used, usage.reserved) == (40, 0)
    assert await redis.hget(reservation_key(key.id, request_id), "state") == b"settled"
