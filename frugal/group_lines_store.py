"""The group picker's lines in Redis: the balancer leader writes them, the safety filter reads them.

I/O edge, shared by the control plane and the safety filter. One key holds every picked
model's `frugal.group_picker.ModelPicker` (its settings, each serving group's step line
and serving replicas) as JSON, written by the control plane's balancer leader every tick
with a TTL of `TTL_S`. Lines older than that are gone: a processor that finds none sets
no group header, and the route weights split the model's requests, as they do before the
picker's first lines. One key, so one read a second serves every model; it is a single-key
command on a Redis Cluster too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from frugal.group_picker import ModelPicker, decode_pickers, encode_pickers
from frugal.redis_connection import RedisClient

log = logging.getLogger(__name__)

LINES_KEY = "frugal:cp:group-lines"
# A few balancer ticks (250 ms) and a few of the readers' seconds: a leader that stops
# leaves lines for no longer than this; a new leader writes its own within a tick.
TTL_S = 3.0
READ_EVERY_S = 1.0  # how often a safety filter process reads them


class GroupLinesStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._published = False

    async def write(self, pickers: Mapping[str, ModelPicker]) -> None:
        """Publish these models' lines. None, after some were: the key is deleted, so no
        processor picks by lines that no longer hold (a model's picker was switched off)."""
        if pickers:
            await self._redis.set(LINES_KEY, encode_pickers(pickers), px=int(TTL_S * 1000))
            self._published = True
        elif self._published:
            await self._redis.delete(LINES_KEY)
            self._published = False

    async def read(self) -> dict[str, ModelPicker]:
        """The models' lines as last published; none once they expired or were unreadable."""
        raw = await self._redis.get(LINES_KEY)
        if raw is None:
            return {}
        try:
            return decode_pickers(raw)
        except ValueError as error:
            log.warning("ignoring unreadable group picker lines in %s: %s", LINES_KEY, error)
            return {}
