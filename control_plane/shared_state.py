"""What every control-plane replica must serve alike, kept in Redis (I/O layer).

With several replicas, each Envoy may be on any of them, so they must serve the same
snapshot: the same fleet (frugal.yaml, DNS and the persisted fleet changes, fleet.py),
the same route weights (decided by the balancer leader alone, leadership.py, and read
here by the others) and the same model-card timestamp (the first replica's start).
Identical inputs give identical resource versions (content hashes), so an Envoy that
moves to another replica gets nothing new.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from frugal.redis_connection import RedisClient

log = logging.getLogger(__name__)

WEIGHTS_KEY = "frugal:cp:live-weights"
CREATED_KEY = "frugal:cp:created"

# model -> group -> route weight, for the models whose balancer sets them live
LiveWeights = dict[str, dict[str, int]]


async def shared_created(redis: RedisClient, now: int) -> int:
    """The fleet's model-card timestamp: the first replica's start, kept by all."""
    await redis.set(CREATED_KEY, now, nx=True)
    stored = await redis.get(CREATED_KEY)
    return int(stored) if stored is not None else now


class SharedWeights:
    """The leader writes the route weights it publishes; followers read them."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._written: LiveWeights | None = None

    async def write(self, weights: Mapping[str, Mapping[str, int]]) -> None:
        current = {model: dict(groups) for model, groups in weights.items()}
        if current != self._written:
            await self._redis.set(WEIGHTS_KEY, json.dumps(current, sort_keys=True))
            self._written = current

    async def read(self) -> LiveWeights:
        raw = await self._redis.get(WEIGHTS_KEY)
        self._written = None  # a follower that becomes leader writes its first weights
        if raw is None:
            return {}
        parsed: LiveWeights = json.loads(raw)
        return parsed
