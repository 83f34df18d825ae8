"""Admitting one request against its key's limits: the rpm window and the token reservation, in
one Redis round trip.

I/O layer over Redis: one Lua script, one atomic step. The request-rate half uses the layout
and the sliding-window estimate of `request_rate`, the token half the window and reservation
layout of `token_budget` (which settles what this reserves). Both are decided before either
is written: a request refused for its rate reserves no tokens, one refused for its tokens is
not counted against the rate.

Tokens reserved: the prompt's estimate plus the output cap. A request that names its
`max_output_tokens` reserves exactly that and is refused when it does not fit. One that names
none reserves what the key can still afford, at most `default_output_tokens` and at least one
token beyond the prompt; the caller caps the generation at `Admitted.output_tokens`. It is
refused only when not even the prompt and one token fit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from frugal.accounting import windows
from frugal.accounting.request_rate import RateDecision, rate_decision, rpm_key
from frugal.accounting.token_budget import (
    RESERVATION_TTL_S,
    reservation_key,
    tpm_key,
    window_ttl_s,
)
from frugal.redis_connection import RedisClient

_ADMIT_SCRIPT = """
-- KEYS[1] rpm counter (current window), KEYS[2] rpm counter (previous window),
-- KEYS[3] token window hash, KEYS[4] reservation hash
-- ARGV[1] rpm limit (-1: none), ARGV[2] weight of the previous rpm window, ARGV[3] rpm ttl s,
-- ARGV[4] tpm limit (-1: none), ARGV[5] prompt tokens, ARGV[6] output tokens (-1: what fits),
-- ARGV[7] default output tokens, ARGV[8] token window start, ARGV[9] reservation ttl ms,
-- ARGV[10] token window ttl s
-- Returns {outcome, output tokens, used, reserved, rpm current, rpm previous};
-- outcome 1 admitted, 2 already admitted (id seen), 0 refused (rate), 3 refused (tokens).
local seen = redis.call('HMGET', KEYS[4], 'state', 'output')
if seen[1] then
  return {2, tonumber(seen[2] or '0'), 0, 0, 0, 0}
end
local counts = redis.call('HMGET', KEYS[3], 'used', 'reserved')
local used = tonumber(counts[1] or '0')
local reserved = tonumber(counts[2] or '0')
local rpm_limit = tonumber(ARGV[1])
local current, previous = 0, 0
if rpm_limit >= 0 then
  current = tonumber(redis.call('GET', KEYS[1]) or '0')
  previous = tonumber(redis.call('GET', KEYS[2]) or '0')
  if previous * tonumber(ARGV[2]) + current + 1 > rpm_limit then
    return {0, 0, used, reserved, current, previous}
  end
end
local tpm_limit = tonumber(ARGV[4])
local prompt = tonumber(ARGV[5])
local output = tonumber(ARGV[6])
if output < 0 then
  output = tonumber(ARGV[7])
  if tpm_limit >= 0 then
    output = math.min(output, tpm_limit - used - reserved - prompt)
  end
  if output < 1 then
    return {3, 0, used, reserved, current, previous}
  end
elseif tpm_limit >= 0 and used + reserved + prompt + output > tpm_limit then
  return {3, 0, used, reserved, current, previous}
end
if rpm_limit >= 0 then
  current = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local tokens = prompt + output
redis.call('HINCRBY', KEYS[3], 'reserved', tokens)
redis.call('EXPIRE', KEYS[3], ARGV[10])
redis.call('HSET', KEYS[4], 'state', 'reserved', 'tokens', tokens, 'window', ARGV[8],
  'output', output)
redis.call('PEXPIRE', KEYS[4], ARGV[9])
return {1, output, used, reserved + tokens, current, previous}
"""

ADMITTED, DUPLICATE, RATE_REFUSED, TOKENS_REFUSED = 1, 2, 0, 3


@dataclass(frozen=True)
class AdmissionRequest:
    key_id: str
    request_id: str
    prompt_tokens: int
    # None: as many as the key can afford, up to `default_output_tokens`.
    max_output_tokens: int | None
    default_output_tokens: int
    rpm: int | None  # None: unlimited (and not counted)
    tpm: int | None  # None: unlimited (still reserved, so settling works the same)


@dataclass(frozen=True)
class TokenWindow:
    """The token limit as a client is told it: what is left and when the window turns."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class Admitted:
    """Reserved: the generation may produce up to `output_tokens`.

    `duplicate`: the request id was admitted before; nothing new was counted or reserved.
    """

    output_tokens: int
    requests: RateDecision | None  # None: the key has no rpm limit
    tokens: TokenWindow | None  # None: the key has no tpm limit
    duplicate: bool = False


@dataclass(frozen=True)
class Refused:
    """Not admitted, because of `limit`; nothing was counted or reserved."""

    limit: Literal["requests", "tokens"]
    requests: RateDecision | None
    tokens: TokenWindow | None
    tokens_asked: int  # prompt plus the output asked for (or one token, when none was)


class Admission:
    """Per-key admission over one `redis.asyncio` client (its pool is shared)."""

    def __init__(
        self,
        redis: RedisClient,
        window_s: int = windows.WINDOW_S,
        reservation_ttl_s: float = RESERVATION_TTL_S,
    ) -> None:
        self._window_s = window_s
        self._reservation_ttl_ms = max(1, round(reservation_ttl_s * 1000))
        self._window_ttl_s = window_ttl_s(window_s, reservation_ttl_s)
        self._script = redis.register_script(_ADMIT_SCRIPT)

    async def admit(
        self, request: AdmissionRequest, now: float | None = None
    ) -> Admitted | Refused:
        """Count and reserve, or refuse. Raises `redis.RedisError` when Redis cannot answer;
        callers fail closed."""
        _check(request)
        now = time.time() if now is None else now
        start = windows.window_start(now, self._window_s)
        weight = windows.previous_weight(now, self._window_s)
        keys = [
            rpm_key(request.key_id, start),
            rpm_key(request.key_id, start - self._window_s),
            tpm_key(request.key_id, start),
            reservation_key(request.key_id, request.request_id),
        ]
        output = -1 if request.max_output_tokens is None else request.max_output_tokens
        args: list[str | int] = [
            -1 if request.rpm is None else request.rpm,
            repr(weight),
            2 * self._window_s + 1,
            -1 if request.tpm is None else request.tpm,
            request.prompt_tokens,
            output,
            request.default_output_tokens,
            start,
            self._reservation_ttl_ms,
            self._window_ttl_s,
        ]
        answer = [int(value) for value in await self._script(keys=keys, args=args)]
        return self._outcome(request, answer, now, start)

    def _outcome(
        self, request: AdmissionRequest, answer: list[int], now: float, start: int
    ) -> Admitted | Refused:
        outcome, output, used, reserved, current, previous = answer
        if outcome == DUPLICATE:
            return Admitted(output, None, None, duplicate=True)
        admitted = outcome == ADMITTED
        requests = None
        if request.rpm is not None:
            # A request refused for its tokens was not counted: its rate is only reported.
            hits = 0 if outcome == TOKENS_REFUSED else 1
            allowed = outcome != RATE_REFUSED
            requests = rate_decision(
                allowed, request.rpm, hits, current, previous, now, self._window_s
            )
        tokens = None
        if request.tpm is not None:
            left = max(0, request.tpm - used - reserved)
            tokens = TokenWindow(request.tpm, left, start + self._window_s - now)
        if admitted:
            return Admitted(output, requests, tokens)
        asked = request.prompt_tokens + (request.max_output_tokens or 1)
        limit: Literal["requests", "tokens"] = "requests" if outcome == RATE_REFUSED else "tokens"
        return Refused(limit, requests, tokens, asked)


def _check(request: AdmissionRequest) -> None:
    if not request.key_id or not request.request_id:
        raise ValueError("key_id and request_id must not be empty")
    numbers = (request.prompt_tokens, request.default_output_tokens, request.rpm, request.tpm)
    if any(n is not None and n < 0 for n in numbers) or (request.max_output_tokens or 0) < 0:
        raise ValueError("token counts and limits must not be negative")
