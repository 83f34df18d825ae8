"""One balancer leader among the control-plane replicas: a lease in Redis (I/O layer).

Every replica serves xDS; only the lease holder decides route weights and finishes
drains, so two replicas never publish different weights. The holder renews the lease on
every balancer tick; another replica takes it over once it has not been renewed for
`ttl_s` (its holder died or lost Redis), and a holder that finds the lease taken stops
deciding at once. Each step is one Redis script, so taking over and renewing cannot
interleave with another replica's.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from frugal.redis_connection import RedisClient

log = logging.getLogger(__name__)

LEASE_KEY = "frugal:cp:leader"

# Holder's id -> 1 once this replica holds the lease (taken, or renewed), else 0.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    """Whether this replica leads, kept current by `refresh` (call it every tick)."""

    def __init__(self, redis: RedisClient, holder: str, ttl_s: float = 2.0) -> None:
        self._redis = redis
        self.holder = holder
        self._ttl_ms = int(ttl_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self.leading = False

    async def refresh(self) -> bool:
        """Take or renew the lease; a Redis that does not answer means not leading
        (another replica may take over once the lease runs out)."""
        try:
            leading = bool(await self._acquire([LEASE_KEY], [self.holder, self._ttl_ms]))
        except RedisError as error:
            log.warning("cannot reach Redis for the balancer lease: %s", error)
            leading = False
        if leading != self.leading:
            log.info("balancer %s: %s", "leader" if leading else "follower", self.holder)
        self.leading = leading
        return leading

    async def release(self) -> None:
        """Give the lease up now (a clean stop), so another replica need not wait it out."""
        if self.leading:
            try:
                await self._release([LEASE_KEY], [self.holder])
            except RedisError as error:
                log.warning("cannot release the balancer lease: %s", error)
            self.leading = False
