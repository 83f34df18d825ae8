"""The usage ledger: requests and tokens per API key, model and UTC day, kept in Redis.

I/O layer over Redis (reads), plus the key layout that `token_budget`'s settle script writes
in the same atomic step as it charges a key's token window, so the ledger and the windows
can never disagree.

Redis layout, one hash per key and UTC day:
    frugal:usage:{<key_id>}:<YYYY-MM-DD>
        <model>:requests           settled requests
        <model>:prompt_tokens      prompt tokens charged
        <model>:completion_tokens  completion tokens charged
The braces are a literal Redis Cluster hash tag (the same tag as the key's token windows and
reservations). Model names may contain ':'; a field splits at its last ':'. Hashes expire
`LEDGER_TTL_S` after their last write: export them for billing before then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from frugal.redis_connection import RedisClient

LEDGER_TTL_S = 400 * 24 * 3600  # a year and a month: long enough for yearly reconciliation
FIELD_REQUESTS = "requests"
FIELD_PROMPT_TOKENS = "prompt_tokens"
FIELD_COMPLETION_TOKENS = "completion_tokens"
_FIELDS = (FIELD_REQUESTS, FIELD_PROMPT_TOKENS, FIELD_COMPLETION_TOKENS)
_PREFIX = "frugal:usage:{"


def usage_key(key_id: str, day: date) -> str:
    """Redis key of the ledger hash for `key_id` on the UTC `day`."""
    return f"{_PREFIX}{key_id}}}:{day.isoformat()}"


@dataclass(frozen=True)
class UsageRow:
    """One key's usage of one model on one UTC day."""

    key_id: str
    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def rows_from_hash(
    key_id: str, day: date, fields: Mapping[bytes | str, bytes | str]
) -> list[UsageRow]:
    """One ledger hash as rows, one per model, sorted by model; unknown fields are ignored."""
    counts: dict[str, dict[str, int]] = {}
    for raw_field, raw_value in fields.items():
        model, _, name = _text(raw_field).rpartition(":")
        if model and name in _FIELDS:
            counts.setdefault(model, dict.fromkeys(_FIELDS, 0))[name] = int(_text(raw_value))
    return [
        UsageRow(
            key_id,
            day,
            model,
            requests=numbers[FIELD_REQUESTS],
            prompt_tokens=numbers[FIELD_PROMPT_TOKENS],
            completion_tokens=numbers[FIELD_COMPLETION_TOKENS],
        )
        for model, numbers in sorted(counts.items())
    ]


def key_id_from_usage_key(key: str, day: date) -> str | None:
    """Inverse of `usage_key` for a known day; None when `key` is not a ledger key of that day."""
    suffix = f"}}:{day.isoformat()}"
    if key.startswith(_PREFIX) and key.endswith(suffix) and len(key) > len(_PREFIX) + len(suffix):
        return key[len(_PREFIX) : -len(suffix)]
    return None


async def read_usage(redis: RedisClient, key_id: str, day: date | None = None) -> list[UsageRow]:
    """Usage of `key_id` on the UTC `day` (default today), one row per model."""
    day = datetime.now(tz=UTC).date() if day is None else day
    fields = await redis.hgetall(usage_key(key_id, day))
    return rows_from_hash(key_id, day, fields)


async def read_all_usage(redis: RedisClient, day: date) -> list[UsageRow]:
    """Usage of every key on the UTC `day`, sorted by key then model (SCANs, never KEYS)."""
    pattern = f"{_PREFIX}*}}:{day.isoformat()}"
    rows: list[UsageRow] = []
    async for raw_key in redis.scan_iter(match=pattern, count=500):
        key = _text(raw_key)
        key_id = key_id_from_usage_key(key, day)
        if key_id is not None:
            rows.extend(rows_from_hash(key_id, day, await redis.hgetall(key)))
    return sorted(rows, key=lambda row: (row.key_id, row.model))
