"""Tokens per minute per API key: settle a request's real count in place of its reservation.

I/O layer over Redis: a Lua script, one atomic step. The window arithmetic is in
`frugal.accounting.windows`, the ledger layout in `frugal.accounting.ledger`.

A request's token count is only known when it ends, so admission works in two steps:
- reserve (before forwarding; `frugal.accounting.admission`, in the same script as the rpm
  check): in the fixed minute window containing `now`, admit the request only if
  `used + reserved + tokens <= tpm_limit`; then add `tokens` to `reserved` and record the
  reservation under the request id. Fixed windows, not sliding: a settle must land in the very
  window its reservation was taken from, and the TPM limit tolerates boundary bursts.
- `settle` (when the response ends): move the reservation into `used` at its real size, in the
  window it was reserved from even when the minute has turned since, and add the same charge
  to the usage ledger, all in one script. Exactly once: the reservation becomes a "settled"
  marker, and settling it again changes nothing and returns 0, so a settle whose answer was
  lost can be retried for as long as the marker lives (`SETTLED_TTL_S`). A settle with no
  reservation (never reserved, or the reservation expired) still charges, to the window and
  day of `now`: tokens that were served are billed.
A reservation that is never settled (a crashed gateway) expires after `reservation_ttl_s`; its
tokens stay counted in their window until that window ends, which only errs on the safe side.

Redis keys (the braces are a literal Redis Cluster hash tag, so one key's data share a slot):
    frugal:tpm:{<key_id>}:<window_start_unix_s>   hash {used, reserved}; expires
        2 * window_s + reservation_ttl_s after its last write, so a late settle still finds it
    frugal:reservation:{<key_id>}:<request_id>    hash {state: reserved|settled, tokens
        (reserved, then charged), window, output (the output cap reserved)}; expires
        reservation_ttl_s after the reserve, settled_ttl_s after the settle
    frugal:usage:{<key_id>}:<YYYY-MM-DD>          the ledger (see `ledger`), UTC day of settle
The settle script derives the window key from the reservation it reads, a key it was not handed:
fine on a single Redis, and on a Cluster too, as it shares the hash tag (the slot) of the
declared keys (tests/integration/test_redis_cluster.py runs it on a real cluster).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from frugal.accounting import ledger, windows
from frugal.redis_connection import RedisClient

RESERVATION_TTL_S = 600.0
# Longer than any retry of a settle (frugal.accounting.settlements), so a retry never charges twice.
SETTLED_TTL_S = 3600.0

_SETTLE_SCRIPT = """
-- KEYS[1] reservation hash, KEYS[2] ledger hash
-- ARGV[1] window key prefix, ARGV[2] window start of now, ARGV[3] prompt tokens,
-- ARGV[4] completion tokens, ARGV[5] model, ARGV[6] settled marker ttl ms, ARGV[7] window ttl s,
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


def window_ttl_s(window_s: int, reservation_ttl_s: float) -> int:
    """How long a token window outlives its last write: a late settle still finds it."""
    return 2 * window_s + math.ceil(reservation_ttl_s)


def reservation_key(key_id: str, request_id: str) -> str:
    """Redis key of the reservation (then settled marker) of one request."""
    return f"frugal:reservation:{{{key_id}}}:{request_id}"


@dataclass(frozen=True)
class Charge:
    """One request's real usage, to settle in place of its reservation."""

    key_id: str
    request_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    now: float | None = None  # Unix time it is billed at (default: when settled)


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
        redis: RedisClient,
        window_s: int = windows.WINDOW_S,
        reservation_ttl_s: float = RESERVATION_TTL_S,
        settled_ttl_s: float = SETTLED_TTL_S,
        ledger_ttl_s: int = ledger.LEDGER_TTL_S,
    ) -> None:
        self._redis = redis
        self._window_s = window_s
        self._settled_ttl_ms = max(1, round(settled_ttl_s * 1000))
        self._window_ttl_s = window_ttl_s(window_s, reservation_ttl_s)
        self._ledger_ttl_s = ledger_ttl_s
        self._settle = redis.register_script(_SETTLE_SCRIPT)

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
        charge = Charge(key_id, request_id, model, prompt_tokens, completion_tokens, now)
        keys, args = self._settle_call(charge)
        return int(await self._settle(keys=keys, args=args))

    async def settle_many(self, charges: Sequence[Charge]) -> list[int | RedisError]:
        """`settle` for each charge, in one round trip (a pipeline, not a transaction: each
        script is atomic on its own). Each answer is the tokens charged, or the error of
        that one charge; raises `redis.RedisError` when Redis cannot answer at all."""
        calls = [self._settle_call(charge) for charge in charges]
        answers = await self._pipelined(calls)
        if any(isinstance(answer, NoScriptError) for answer in answers):
            # Redis restarted (or was flushed) since the script was loaded: load, resend.
            await self._redis.script_load(_SETTLE_SCRIPT)
            answers = await self._pipelined(calls)
        return [a if isinstance(a, RedisError) else int(a) for a in answers]

    async def _pipelined(self, calls: Sequence[tuple[list[str], list[str | int]]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # What `pipe.evalsha` sends, which redis-py's cluster pipeline blocks; the
                # command itself is routed by its keys' slot, so each node gets its part.
                pipe.execute_command("EVALSHA", self._settle.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

    def _settle_call(self, charge: Charge) -> tuple[list[str], list[str | int]]:
        _check_ids(charge.key_id, charge.request_id)
        if charge.prompt_tokens < 0 or charge.completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        if not charge.model:
            raise ValueError("model must not be empty")
        now = time.time() if charge.now is None else charge.now
        keys = [
            reservation_key(charge.key_id, charge.request_id),
            ledger.usage_key(charge.key_id, windows.utc_day(now)),
        ]
        args: list[str | int] = [
            _tpm_prefix(charge.key_id),
            windows.window_start(now, self._window_s),
            charge.prompt_tokens,
            charge.completion_tokens,
            charge.model,
            self._settled_ttl_ms,
            self._window_ttl_s,
            self._ledger_ttl_s,
        ]
        return keys, args

    async def window_usage(self, key_id: str, now: float | None = None) -> WindowUsage:
        """Counters of the window containing `now` (default the current one), for operators."""
        now = time.time() if now is None else now
        start = windows.window_start(now, self._window_s)
        used, reserved = await self._redis.hmget(tpm_key(key_id, start), ["used", "reserved"])
        return WindowUsage(start, int(used or 0), int(reserved or 0))


def _check_ids(key_id: str, request_id: str) -> None:
    if not key_id or not request_id:
        raise ValueError("key_id and request_id must not be empty")
