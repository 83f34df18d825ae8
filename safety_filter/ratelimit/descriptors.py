"""What Envoy asks the rate limit service, and what it is told back, as plain data.

Pure layer: turns a `RateLimitRequest` into `RequestLimit`s and a list of decisions into a
`RateLimitResponse`; the servicer (`service.py`) does the Redis I/O in between.

Envoy's filter-level `rate_limits` build one descriptor per request from the headers ext_authz
set (`request_headers` actions): entries `("key_id", x-frugal-key-id)` and
`("rpm", x-frugal-key-rpm)`, an empty or missing rpm meaning unlimited. Descriptors without a
`key_id` entry are not ours and are answered OK.

Envoy's ratelimit filter adds `response_headers_to_add` to the client's response on OK and on
OVER_LIMIT alike (the 429 is a local reply), and `request_headers_to_add` to the upstream
request on OK only; the OpenAI-style `x-ratelimit-*-requests` headers are client-facing, so
they go in `response_headers_to_add`. `raw_body` becomes the 429 body, a plain-text message
that Envoy's local_reply_config wraps into OpenAI's `{"error": {...}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2

from frugal import wire
from frugal.accounting import windows
from frugal.accounting.request_rate import RateDecision

HEADER_LIMIT = "x-ratelimit-limit-requests"
HEADER_REMAINING = "x-ratelimit-remaining-requests"
HEADER_RESET = "x-ratelimit-reset-requests"
HEADER_RETRY_AFTER = "retry-after"

Code = rls_pb2.RateLimitResponse.Code
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit


class DescriptorError(ValueError):
    """A descriptor Envoy sent cannot be read (a configuration bug): gRPC INVALID_ARGUMENT."""


@dataclass(frozen=True)
class RequestLimit:
    """One descriptor of ours: count `hits` for `key_id` against `rpm` (None: unlimited)."""

    key_id: str
    rpm: int | None
    hits: int


def parse_request(request: rls_pb2.RateLimitRequest) -> list[RequestLimit | None]:
    """One entry per descriptor, in order; None for a descriptor that is not ours.

    Hits: the descriptor's own `hits_addend` when set (0 only checks), else the request's,
    whose 0 means 1 (rls.proto).
    """
    default_hits = request.hits_addend or 1
    limits: list[RequestLimit | None] = []
    for descriptor in request.descriptors:
        entries = {entry.key: entry.value for entry in descriptor.entries}
        key_id = entries.get(wire.RATE_LIMIT_KEY_ID, "")
        if not key_id:
            limits.append(None)
            continue
        hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
        limits.append(RequestLimit(key_id, _parse_rpm(entries.get(wire.RATE_LIMIT_RPM, "")), hits))
    return limits


def _parse_rpm(raw: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    try:
        rpm = int(text)
    except ValueError:
        raise DescriptorError(f"rpm entry is not an integer: {raw!r}") from None
    if rpm < 0:
        raise DescriptorError(f"rpm entry is negative: {rpm}")
    return rpm


Outcome = tuple[RequestLimit | None, RateDecision | None]


def build_response(outcomes: Sequence[Outcome]) -> rls_pb2.RateLimitResponse:
    """The answer to Envoy: one status per descriptor, headers from the tightest limit."""
    decided = [(limit, decision) for limit, decision in outcomes if limit and decision]
    refused = [(limit, decision) for limit, decision in decided if not decision.allowed]
    response = rls_pb2.RateLimitResponse(
        overall_code=Code.OVER_LIMIT if refused else Code.OK,
        statuses=[_status(decision) for _, decision in outcomes],
    )
    if refused:
        limit, decision = refused[0]
        response.response_headers_to_add.extend(_headers(decision))
        response.response_headers_to_add.append(
            _header(HEADER_RETRY_AFTER, str(windows.whole_seconds(decision.reset_s)))
        )
        response.raw_body = over_limit_message(limit, decision).encode()
    elif decided:
        _, tightest = min(decided, key=lambda pair: pair[1].remaining)
        response.response_headers_to_add.extend(_headers(tightest))
    return response


def over_limit_message(limit: RequestLimit, decision: RateDecision) -> str:
    wait = windows.format_reset(decision.reset_s)
    return (
        f"Rate limit reached for requests per min (RPM): Limit {decision.limit}, "
        f"Requested {limit.hits}. Please try again in {wait}."
    )


def decision_label(outcomes: Sequence[Outcome]) -> str:
    """The `decision` label of `frugal_ratelimit_decisions_total` for one request."""
    decisions = [decision for _, decision in outcomes if decision is not None]
    if any(not decision.allowed for decision in decisions):
        return "over_limit"
    return "ok" if decisions else "unlimited"


def _status(decision: RateDecision | None) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    if decision is None:
        return rls_pb2.RateLimitResponse.DescriptorStatus(code=Code.OK)
    return rls_pb2.RateLimitResponse.DescriptorStatus(
        code=Code.OK if decision.allowed else Code.OVER_LIMIT,
        current_limit=rls_pb2.RateLimitResponse.RateLimit(
            name="rpm", requests_per_unit=decision.limit, unit=Unit.MINUTE
        ),
        limit_remaining=decision.remaining,
        duration_until_reset=duration_pb2.Duration(seconds=windows.whole_seconds(decision.reset_s)),
    )


def _headers(decision: RateDecision) -> list[base_pb2.HeaderValue]:
    return [
        _header(HEADER_LIMIT, str(decision.limit)),
        _header(HEADER_REMAINING, str(decision.remaining)),
        _header(HEADER_RESET, windows.format_reset(decision.reset_s)),
    ]


def _header(key: str, value: str) -> base_pb2.HeaderValue:
    return base_pb2.HeaderValue(key=key, value=value)
