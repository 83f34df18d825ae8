"""Integration tests of the rate limit service: a real grpc.aio server and channel on loopback,
real `RateLimitRequest` messages as Envoy sends them, counting in a real redis-server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from frugal import wire
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.ratelimit import add_ratelimit_servicer
from tests.helpers.redis_server import RedisServer

Code = rls_pb2.RateLimitResponse.Code
MINUTE = rls_pb2.RateLimitResponse.RateLimit.Unit.MINUTE


@dataclass
class RateLimitEnv:
    stub: Any
    registry: CollectorRegistry

    def decisions(self, decision: str) -> float:
        value = self.registry.get_sample_value(
            "frugal_ratelimit_decisions_total", {"decision": decision}
        )
        return value or 0.0


@contextlib.asynccontextmanager
async def serving(redis_url: str) -> AsyncIterator[RateLimitEnv]:
    # No retries: a dead store should answer at once (Envoy's own timeout is short).
    redis = Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
    registry = CollectorRegistry()
    server = grpc.aio.server()
    add_ratelimit_servicer(server, redis, ExtProcMetrics(registry).rate_decisions)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield RateLimitEnv(rls_pb2_grpc.RateLimitServiceStub(channel), registry)
    finally:
        await server.stop(grace=None)
        await redis.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def env(redis_server: RedisServer) -> AsyncIterator[RateLimitEnv]:
    async with serving(redis_server.url) as started:
        yield started


def descriptor(
    key_id: str | None, rpm: str | None, hits: int | None = None
) -> ratelimit_pb2.RateLimitDescriptor:
    entries = [(wire.RATE_LIMIT_KEY_ID, key_id), (wire.RATE_LIMIT_RPM, rpm)]
    message = ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
            for key, value in entries
            if value is not None
        ]
    )
    if hits is not None:
        message.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return message


def request(*descriptors: ratelimit_pb2.RateLimitDescriptor, hits: int = 0) -> Any:
    return rls_pb2.RateLimitRequest(
        domain=wire.RATE_LIMIT_DOMAIN, descriptors=descriptors, hits_addend=hits
    )


def headers(response: Any) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


def new_key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


async def test_ok_until_the_limit_then_over_limit(env: RateLimitEnv) -> None:
    key = new_key()
    answers = [await env.stub.ShouldRateLimit(request(descriptor(key, "3"))) for _ in range(3)]
    assert [a.overall_code for a in answers] == [Code.OK] * 3
    assert [headers(a)["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    first = answers[0]
    assert headers(first)["x-ratelimit-limit-requests"] == "3"
    assert headers(first)["x-ratelimit-reset-requests"].endswith("s")
    assert not first.raw_body and not first.request_headers_to_add
    [status] = first.statuses
    assert status.code == Code.OK
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (3, MINUTE)
    assert status.limit_remaining == 2

    refused = await env.stub.ShouldRateLimit(request(descriptor(key, "3")))
    assert refused.overall_code == Code.OVER_LIMIT
    over = headers(refused)
    assert (over["x-ratelimit-limit-requests"], over["x-ratelimit-remaining-requests"]) == (
        "3",
        "0",
    )
    wait_s = int(over["retry-after"])
    assert 0 < wait_s <= 120
    assert over["x-ratelimit-reset-requests"].endswith("s")
    body = refused.raw_body.decode()
    assert body.startswith("Rate limit reached for requests per min (RPM): Limit 3, Requested 1.")
    [status] = refused.statuses
    assert (status.code, status.limit_remaining) == (Code.OVER_LIMIT, 0)
    assert status.duration_until_reset.seconds == wait_s
    assert env.decisions("over_limit") >= 1 and env.decisions("ok") >= 3


async def test_unlimited_and_foreign_descriptors_are_ok_without_headers(env: RateLimitEnv) -> None:
    key = new_key()
    before = env.decisions("unlimited")
    for answer in [
        await env.stub.ShouldRateLimit(request(descriptor(key, ""))),
        await env.stub.ShouldRateLimit(request(descriptor(key, None))),
        await env.stub.ShouldRateLimit(request(descriptor(None, "1"))),
    ]:
        assert answer.overall_code == Code.OK
        assert not answer.response_headers_to_add
        assert [s.code for s in answer.statuses] == [Code.OK]
        assert not answer.statuses[0].HasField("current_limit")
    assert env.decisions("unlimited") == before + 3


async def test_hits_addend_of_the_request_and_of_a_descriptor(env: RateLimitEnv) -> None:
    key = new_key()
    three = await env.stub.ShouldRateLimit(request(descriptor(key, "5"), hits=3))
    assert (three.overall_code, headers(three)["x-ratelimit-remaining-requests"]) == (Code.OK, "2")
    probe = await env.stub.ShouldRateLimit(request(descriptor(key, "5", hits=0), hits=3))
    assert (probe.overall_code, headers(probe)["x-ratelimit-remaining-requests"]) == (Code.OK, "2")
    refused = await env.stub.ShouldRateLimit(request(descriptor(key, "5"), hits=3))
    assert refused.overall_code == Code.OVER_LIMIT
    assert "Requested 3" in refused.raw_body.decode()
    two = await env.stub.ShouldRateLimit(request(descriptor(key, "5", hits=2), hits=3))
    assert (two.overall_code, headers(two)["x-ratelimit-remaining-requests"]) == (Code.OK, "0")


async def test_several_descriptors_report_each_and_the_tightest(env: RateLimitEnv) -> None:
    roomy, tight = new_key(), new_key()
    answer = await env.stub.ShouldRateLimit(
        request(descriptor(roomy, "100"), descriptor(tight, "2"), descriptor(None, None))
    )
    assert answer.overall_code == Code.OK
    assert [s.limit_remaining for s in answer.statuses] == [99, 1, 0]
    assert headers(answer)["x-ratelimit-limit-requests"] == "2"
    await env.stub.ShouldRateLimit(request(descriptor(tight, "2")))
    refused = await env.stub.ShouldRateLimit(
        request(descriptor(roomy, "100"), descriptor(tight, "2"))
    )
    assert refused.overall_code == Code.OVER_LIMIT
    assert [s.code for s in refused.statuses] == [Code.OK, Code.OVER_LIMIT]
    assert headers(refused)["x-ratelimit-limit-requests"] == "2"


async def test_a_zero_limit_refuses_everything(env: RateLimitEnv) -> None:
    answer = await env.stub.ShouldRateLimit(request(descriptor(new_key(), "0")))
    assert answer.overall_code == Code.OVER_LIMIT


@pytest.mark.parametrize("rpm", ["ten", "-1", "1.5"])
async def test_an_unreadable_rpm_is_invalid_argument(env: RateLimitEnv, rpm: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.stub.ShouldRateLimit(request(descriptor(new_key(), rpm)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_redis_down_is_unavailable_so_envoy_fails_closed() -> None:
    store = RedisServer()
    try:
        async with serving(store.url) as env:
            ok = await env.stub.ShouldRateLimit(request(descriptor(new_key(), "10")))
            assert ok.overall_code == Code.OK
            store.stop()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await env.stub.ShouldRateLimit(request(descriptor(new_key(), "10")))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert env.decisions("error") == 1
            # An unlimited key needs no store and is still answered.
            unlimited = await env.stub.ShouldRateLimit(request(descriptor(new_key(), "")))
            assert unlimited.overall_code == Code.OK
    finally:
        store.stop()
