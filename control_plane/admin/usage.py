"""Admin REST: the usage ledger (requests and tokens per key, model and UTC day).

Edge layer: reads what the safety filter settles into Redis (frugal.accounting.ledger).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from frugal.accounting.ledger import UsageRow, read_all_usage, read_usage
from frugal.accounting.windows import utc_day
from frugal.redis_connection import RedisClient


class UsageEntry(BaseModel):
    key_id: str
    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageList(BaseModel):
    object: str = "list"
    data: list[UsageEntry]


def _entry(row: UsageRow) -> UsageEntry:
    return UsageEntry(**asdict(row), total_tokens=row.tokens)


def usage_router(redis: RedisClient) -> APIRouter:
    router = APIRouter(prefix="/admin/v1/usage", tags=["usage"])

    @router.get("", response_model=UsageList)
    async def get_usage(
        key_id: Annotated[str | None, Query(description="one key; all keys if absent")] = None,
        day: Annotated[date | None, Query(description="UTC day; today if absent")] = None,
    ) -> UsageList:
        when = day or utc_day(time.time())
        rows = await (read_usage(redis, key_id, when) if key_id else read_all_usage(redis, when))
        return UsageList(data=[_entry(row) for row in rows])

    return router
