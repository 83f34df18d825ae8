"""Envoy's RateLimitService v3 over Redis: per-key requests per minute.

I/O edge: reads a `RateLimitRequest`, counts each of our descriptors with
`frugal.accounting.RequestRateLimiter`, and answers through the pure `descriptors` module.
Errors are mapped to gRPC codes here, in one place: an unreadable descriptor is
INVALID_ARGUMENT; an unreachable Redis is UNAVAILABLE, which Envoy's ratelimit filter with
`failure_mode_deny: true` turns into a refusal (fail closed; its default is to fail open).

Descriptors are counted one after another; if one of several is refused, hits already counted
for the others stay counted (Envoy's reference service behaves the same).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client import Counter
from redis.exceptions import RedisError

from frugal.accounting.request_rate import RateDecision, RequestRateLimiter
from frugal.redis_connection import RedisClient
from safety_filter.ratelimit.descriptors import (
    DescriptorError,
    Outcome,
    RequestLimit,
    build_response,
    decision_label,
    parse_request,
)

log = logging.getLogger(__name__)


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, limiter: RequestRateLimiter, decisions: Counter) -> None:
        self._limiter = limiter
        self._decisions = decisions  # frugal_ratelimit_decisions_total{decision}

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Any
    ) -> rls_pb2.RateLimitResponse:
        try:
            outcomes = [(limit, await self._decide(limit)) for limit in parse_request(request)]
        except DescriptorError as error:
            self._decisions.labels("invalid").inc()
            log.warning("rate limit request refused: %s", error)
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except RedisError as error:
            self._decisions.labels("error").inc()
            log.warning("rate limit store unavailable: %s", error)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "rate limit store unavailable")
        return self._answer(outcomes)

    async def _decide(self, limit: RequestLimit | None) -> RateDecision | None:
        if limit is None or limit.rpm is None:
            return None
        return await self._limiter.hit(limit.key_id, limit.rpm, limit.hits)

    def _answer(self, outcomes: list[Outcome]) -> rls_pb2.RateLimitResponse:
        self._decisions.labels(decision_label(outcomes)).inc()
        return build_response(outcomes)


async def _abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("grpc.aio context.abort returned")  # it always raises


def add_ratelimit_servicer(
    server: grpc.aio.Server, redis: RedisClient, decisions: Counter
) -> RateLimitService:
    """Serve Envoy's RateLimitService on `server`, counting in `redis`, decisions in
    `decisions` (a Counter with a `decision` label)."""
    service = RateLimitService(RequestRateLimiter(redis), decisions)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
    return service
