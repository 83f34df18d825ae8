"""Tokens per minute per API key: reserve before a request, settle with the real count after.

I/O layer over Redis: two Lua scripts, each one atomic step. The window arithmetic is in
`frugal.accounting.windows`, the ledger layout in `frugal.accounting.ledger`.

A request's token count is only known when it ends, so admission works in two steps:
- `reserve` (before forwarding): in the fixed minute window containing `now`, admit the request
  only if `used + reserved + tokens <= tpm_limit`; then add `tokens` to `reserved` and record
  the reservation under the request id. Fixed windows, not sliding: a settle must land in the
  very window its reservation was taken from, and the TPM limit tolerates boundary bursts.
- `settle` (when the response ends): move the reservation into `used` at its real size, in the
  window it was reserved from even when the minute has turned since, and add the same charge
  to the usage ledger, all in one script. Exactly once: the reservation becomes a "settled"
  marker, and settling it again changes nothing and returns 0. A settle with no reservation
  (never reserved, or the reservation expired) still charges, to the window and day of `now`:
  tokens that were served are billed.
A reservation that is never settled (a crashed gateway) expires after `reservation_ttl_s`; its
tokens stay counted in their window until that window ends, which only errs on the safe side.

Redis keys (the braces are a literal Redis Cluster hash tag, so one key's data share a slot):
    frugal:tpm:{<key_id>}:<window_start_unix_s>   hash {used, reserved}; expires
        2 * window_s + reservation_ttl_s after its last write, so a late settle still finds it
    frugal:reservation:{<key_id>}:<request_id>    hash {state: reserved|settled, tokens
        (reserved, then charged), window}; expires reservation_ttl_s after its last write
    frugal:usage:{<key_id>}:<YYYY-MM-DD>          the ledger (see `ledger`), UTC day of settle
The settle script derives the window key from the reservation it reads, a key it was not handed:
fine on a single Redis, and on a Cluster it shares the hash tag of the declared keys.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from frugal.accounting import ledger, windows

RESERVATION_TTL_S = 600.0

_RESERVE_SCRIPT = """
-- KEYS[1] window hash, KEYS[2] reservation hash
-- ARGV[1] limit (-1: unlimited), ARGV[2] tokens, ARGV[3] window start,
-- ARGV[4] reservation ttl ms, ARGV[5] window ttl s
local existing = redis.call('HMGET', KEYS[2], 'state', 'tokens', 'window')
if existing[1] then
  return {2, tonumber(existing[2]), tonumber(existing[3])}
end
local counts = redis.call('HMGET', KEYS[1], 'used', 'reserved')
local used = tonumber(counts[1] or '0')
local reserved = tonumber(counts[2] or '0')
local limit = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
if limit >= 0 and used + reserved + tokens > limit then
  return {0, used, reserved}
end
redis.call('HINCRBY', KEYS[1], 'reserved', tokens)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[2], 'state', 'reserved', 'tokens', tokens, 'window', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {1, used, reserved + tokens}
"""

_SETTLE_SCRIPT = """
-- KEYS[1] reservation hash, KEYS[2] ledger hash
-- ARGV[1] window key prefix, ARGV[2] window start of now, ARGV[3] prompt tokens,
-- ARGV[4] completion tokens, ARGV[5] model, ARGV[6] reservation ttl ms, ARGV[7] window ttl s,
-- ARGV[8] ledger ttl s
local record = redis.call('HMGET', KEYS[1], 'state', 'tokens', 'window')
if record[1] == 'settled' then
  return 0
end
local reserved = 0
local window = ARGV[2]
if record[1] == 'reserved' then
  reserved = tonumber(record[2])
  window = record[3]
end
local charge = tonumber(ARGV[3]) + tonumber(ARGV[4])
local window_key = ARGV[1] .. window
redis.call('HINCRBY', window_key, 'used', charge)
if reserved ~= 0 then
  redis.call('HINCRBY', window_key, 'reserved', -reserved)
end
redis.call('EXPIRE', window_key, ARGV[7])
local model = ARGV[5]
redis.call('HINCRBY', KEYS[2], model .. ':requests', 1)
redis.call('HINCRBY', KEYS[2], model .. ':prompt_tokens', ARGV[3])
redis.call('HINCRBY', KEYS[2], model .. ':completion_tokens', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'settled', 'tokens', charge, 'window', window)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return charge
"""


def tpm_key(key_id: str, start: int) -> str:
    """Redis key of one fixed window's token counters (`used`, `reserved`) for `key_id`."""
    return f"{_tpm_prefix(key_id)}{start}"


def _tpm_prefix(key_id: str) -> str:
    return f"frugal:tpm:{{{key_id}}}:"


def reservation_key(key_id: str, request_id: str) -> str:
    """Redis key of the reservation (then settled marker) of one request."""
    return f"frugal:reservation:{{{key_id}}}:{request_id}"


@dataclass(frozen=True)
class Reservation:
    """Tokens set aside for one request. `remaining` is None for an unlimited key.

    `duplicate`: the request id had already reserved (or settled); nothing new was reserved and
    `tokens`/`window_start` describe the earlier reservation (or, once settled, its charge).
    """

    key_id: str
    request_id: str
    tokens: int
    window_start: int
    limit: int | None
    remaining: int | None
    reset_s: float
    duplicate: bool = False


@dataclass(frozen=True)
class Refusal:
    """The window cannot cover the request: `remaining` tokens are left until `reset_s` passes."""

    key_id: str
    tokens: int
    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class WindowUsage:
    """Counters of one key's fixed token window."""

    window_start: int
    used: int
    reserved: int


class TokenBudget:
    """Per-key tokens-per-window budget over one `redis.asyncio` client (its pool is shared)."""

    def __init__(
        self,
        redis: Redis,
        window_s: int = windows.WINDOW_S,
        reservation_ttl_s: float = RESERVATION_TTL_S,
        ledger_ttl_s: int = ledger.LEDGER_TTL_S,
    ) -> None:
        self._redis = redis
        self._window_s = window_s
        self._reservation_ttl_ms = max(1, round(reservation_ttl_s * 1000))
        self._window_ttl_s = 2 * window_s + math.ceil(reservation_ttl_s)
        self._ledger_ttl_s = ledger_ttl_s
        self._reserve = redis.register_script(_RESERVE_SCRIPT)
        self._settle = redis.register_script(_SETTLE_SCRIPT)

    async def reserve(
        self,
        key_id: str,
        tpm_limit: int | None,
        tokens: int,
        request_id: str,
        now: float | None = None,
    ) -> Reservation | Refusal:
        """Set `tokens` aside for `request_id` in the current window, or refuse.

        `tpm_limit=None` means unlimited: the reservation is still recorded, so settling works
        the same for every key. Raises `redis.RedisError` when Redis cannot answer.
        """
        _check_ids(key_id, request_id)
        if tokens < 0 or (tpm_limit is not None and tpm_limit < 0):
            raise ValueError("tokens and tpm_limit must not be negative")
        now = time.time() if now is None else now
        start = windows.window_start(now, self._window_s)
        reset_s = start + self._window_s - now
        keys = [tpm_key(key_id, start), reservation_key(key_id, request_id)]
        limit_arg = -1 if tpm_limit is None else tpm_limit
        args = [limit_arg, tokens, start, self._reservation_ttl_ms, self._window_ttl_s]
        outcome, first, second = (int(v) for v in await self._reserve(keys=keys, args=args))
        if outcome == 2:
            return Reservation(key_id, request_id, first, second, tpm_limit, None, reset_s, True)
        left = None if tpm_limit is None else max(0, tpm_limit - first - second)
        if outcome == 0:
            assert tpm_limit is not None and left is not None  # the script refuses only limits
            return Refusal(key_id, tokens, tpm_limit, left, reset_s)
        return Reservation(key_id, request_id, tokens, start, tpm_limit, left, reset_s)

    async def settle(
        self,
        key_id: str,
        request_id: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        now: float | None = None,
    ) -> int:
        """Charge the real token count of `request_id` in place of its reservation, once.

        Returns the tokens charged (prompt + completion), or 0 when the request was already
        settled. The ledger row of `model` on the UTC day of `now` gains one request and the
        tokens. Raises `redis.RedisError` when Redis cannot answer.
        """
        _check_ids(key_id, request_id)
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        if not model:
            raise ValueError("model must not be empty")
        now = time.time() if now is None else now
        keys = [reservation_key(key_id, request_id), ledger.usage_key(key_id, windows.utc_day(now))]
        args: list[str | int] = [
            _tpm_prefix(key_id),
            windows.window_start(now, self._window_s),
            prompt_tokens,
            completion_tokens,
            model,
            self._reservation_ttl_ms,
            self._window_ttl_s,
            self._ledger_ttl_s,
        ]
        return int(await self._settle(keys=keys, args=args))

    async def window_usage(self, key_id: str, now: float | None = None) -> WindowUsage:
        """Counters of the window containing `now` (default the current one), for operators."""
        now = time.time() if now is None else now
        start = windows.window_start(now, self._window_s)
        used, reserved = await self._redis.hmget(tpm_key(key_id, start), ["used", "reserved"])
        return WindowUsage(start, int(used or 0), int(reserved or 0))


def _check_ids(key_id: str, request_id: str) -> None:
    if not key_id or not request_id:
        raise ValueError("key_id and request_id must not be empty")
