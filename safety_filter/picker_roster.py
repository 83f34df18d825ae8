"""How many safety filter processes share the requests, counted in Redis.

I/O edge. Envoy spreads ext_proc streams over every safety filter process, so each sees
its share of a model's requests, and the group picker scales its own counts by how many
processes there are (safety_filter/extproc/group_tally.py). That number is not
configured: `frugal up`'s processes, compose's replicas and a Kubernetes autoscaler's pods
all change it. Each process stamps its name into one sorted set every second, by Redis's
clock (the processes' own clocks may differ), and counts the names stamped within
`STALE_S`; a process that stops takes its name out, one that dies drops out within
`STALE_S`. One key and one script, so a single-key command on a Redis Cluster too.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from frugal.process_name import process_name
from frugal.redis_connection import RedisClient

log = logging.getLogger(__name__)

ROSTER_KEY = "frugal:sf:pickers"
# A few of the processes' one-second stamps: one late stamp does not drop a process.
STALE_S = 3.0

# Stamp this process, forget the stale, count the rest; the key outlives its last stamp
# by STALE_S only, so a stack that is gone leaves nothing behind.
_STAMP = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local stale_ms = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - stale_ms)
redis.call('PEXPIRE', KEYS[1], stale_ms)
return redis.call('ZCARD', KEYS[1])
"""


class PickerRoster:
    def __init__(self, redis: RedisClient, name: str | None = None) -> None:
        self._redis = redis
        self.name = name or process_name()
        self._stamp = redis.register_script(_STAMP)

    async def stamp(self) -> int:
        """Count this process as live now; the processes live, this one included."""
        return int(await self._stamp([ROSTER_KEY], [self.name, int(STALE_S * 1000)]))

    async def leave(self) -> None:
        """Take this process out now (a clean stop): the others' shares grow at once."""
        try:
            await self._redis.zrem(ROSTER_KEY, self.name)
        except RedisError as error:
            log.warning("could not leave the group picker's roster: %s", error)
