"""Requests per minute per API key, counted in Redis: the rpm half of Frugal's key limits.

I/O layer over Redis; the window arithmetic lives in `frugal.accounting.windows`.

Algorithm: sliding-window approximation over two fixed one-minute windows (see `windows`).
One Lua script reads both counters, decides, and increments the current one, so concurrent
gateways never admit more than the estimate allows: the decision and the increment are one
atomic step in Redis. A refused request is not counted, so a client that keeps retrying while
refused is admitted as soon as the window has room again (Envoy's reference ratelimit service
counts refusals too; we chose not to punish retries).

Redis keys (strings holding an integer), one per key and fixed window:
    frugal:rpm:{<key_id>}:<window_start_unix_s>
The braces are literal: a Redis Cluster hash tag, so both windows a script touches live in the
same slot. Each key expires `2 * window_s + 1` seconds after its last increment, long enough to
serve as the "previous" window for the whole of the next one.

Times come from the caller (`now`, Unix seconds, default the local clock); gateways sharing a
Redis need synchronised clocks (NTP), as any windowed limiter keyed by wall time does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from frugal.accounting import windows
from frugal.redis_connection import RedisClient

_HIT_SCRIPT = """
-- KEYS[1] current window counter, KEYS[2] previous window counter
-- ARGV[1] limit, ARGV[2] hits, ARGV[3] weight of the previous window, ARGV[4] ttl seconds
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local hits = tonumber(ARGV[2])
if previous * tonumber(ARGV[3]) + current + hits > tonumber(ARGV[1]) then
  return {0, current, previous}
end
if hits > 0 then
  current = redis.call('INCRBY', KEYS[1], hits)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return {1, current, previous}
"""


def rpm_key(key_id: str, start: int) -> str:
    """Redis key of one fixed window's request counter for `key_id`."""
    return f"frugal:rpm:{{{key_id}}}:{start}"


@dataclass(frozen=True)
class RateDecision:
    """Outcome of one `hit`.

    `remaining`: further requests the window admits after this one (0 when refused).
    `reset_s`: when allowed, seconds until the whole limit is available again; when refused,
    seconds until the refused hits would be admitted (what a client should wait).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float


class RequestRateLimiter:
    """Per-key requests-per-window limiter over one `redis.asyncio` client (its pool is shared)."""

    def __init__(self, redis: RedisClient, window_s: int = windows.WINDOW_S) -> None:
        self._window_s = window_s
        self._script = redis.register_script(_HIT_SCRIPT)

    async def hit(
        self, key_id: str, limit: int, hits: int = 1, now: float | None = None
    ) -> RateDecision:
        """Count `hits` requests for `key_id` against `limit` per window, if they fit.

        `hits=0` only reads the state. Raises `redis.RedisError` when Redis cannot answer;
        callers fail closed.
        """
        if limit < 0 or hits < 0:
            raise ValueError("limit and hits must not be negative")
        now = time.time() if now is None else now
        start = windows.window_start(now, self._window_s)
        weight = windows.previous_weight(now, self._window_s)
        keys = [rpm_key(key_id, start), rpm_key(key_id, start - self._window_s)]
        args: list[str | int] = [limit, hits, repr(weight), 2 * self._window_s + 1]
        allowed, current, previous = await self._script(keys=keys, args=args)
        return rate_decision(
            bool(allowed), limit, hits, int(current), int(previous), now, self._window_s
        )


def rate_decision(
    allowed: bool, limit: int, hits: int, current: int, previous: int, now: float, window_s: int
) -> RateDecision:
    """What a client is told of the window after a decision on `hits` (`current` includes
    them when they were admitted)."""
    elapsed = windows.elapsed_in_window(now, window_s)
    weight = windows.previous_weight(now, window_s)
    remaining = windows.remaining_hits(limit, previous, current, weight)
    if allowed:
        reset_s = windows.seconds_until_reset(previous, current, elapsed, window_s)
        return RateDecision(True, limit, remaining, reset_s)
    wait_s = windows.seconds_until_fits(limit, previous, current, elapsed, hits, window_s)
    return RateDecision(False, limit, remaining, wait_s)
