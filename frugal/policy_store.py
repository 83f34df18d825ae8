"""Content-policy overrides set at run time through the admin REST, kept in Redis.

Shared by the control plane (writes, through the admin REST) and the safety filter
(reads, with a short cache). A policy here states only what it changes; the safety
filter lays a model's override over its configured policy, and merges a key's
override into the model's (the stricter action wins).
Redis: `frugal:{policy}:model:<name>` and `frugal:{policy}:key:<key id>`, JSON. The braces
are a literal Redis Cluster hash tag: every override lives in one slot, so the safety filter's
refresh of all the overrides in use stays one MGET on a cluster too (they are few and small).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from frugal.content_checks import DETECTORS
from frugal.redis_connection import RedisClient

Scope = Literal["model", "key"]


class PolicySpec(BaseModel):
    """A content-policy override; fields left out keep what applies without it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detectors: list[str] | None = None
    prompt_action: Literal["log", "redact", "block"] | None = None
    output_action: Literal["redact", "block"] | None = None
    blocklist: list[str] | None = None

    @field_validator("detectors")
    @classmethod
    def _known(cls, names: list[str] | None) -> list[str] | None:
        unknown = sorted(set(names or ()) - set(DETECTORS.names()))
        if unknown:
            raise ValueError(f"unknown detectors {unknown}; known: {list(DETECTORS.names())}")
        return names

    def fields(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


# Every override under one hash tag: `get_many` is one MGET, also on a Redis Cluster.
POLICY_PREFIX = "frugal:{policy}:"


def policy_key(scope: Scope, name: str) -> str:
    """Redis key of one override."""
    return f"{POLICY_PREFIX}{scope}:{name}"


class PolicyStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def get(self, scope: Scope, name: str) -> PolicySpec | None:
        raw = await self._redis.get(policy_key(scope, name))
        return None if raw is None else PolicySpec.model_validate(json.loads(raw))

    async def get_many(self, names: list[tuple[Scope, str]]) -> list[PolicySpec | None]:
        """Several overrides in one round trip (MGET), in the order asked."""
        if not names:
            return []
        raws = await self._redis.mget([policy_key(scope, name) for scope, name in names])
        return [None if raw is None else PolicySpec.model_validate(json.loads(raw)) for raw in raws]

    async def put(self, scope: Scope, name: str, spec: PolicySpec) -> None:
        await self._redis.set(policy_key(scope, name), json.dumps(spec.fields()))

    async def delete(self, scope: Scope, name: str) -> bool:
        return bool(await self._redis.delete(policy_key(scope, name)))
