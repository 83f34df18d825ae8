"""The Redis client every Frugal service uses: one instance, or a Redis Cluster, by config.

I/O edge, shared by the services (frugal.yaml's `redis.url` and `redis.cluster`, passed as
FRUGAL_REDIS_URL and FRUGAL_REDIS_CLUSTER). Every key Frugal writes is cluster-safe: the keys
of one Lua script, transaction or multi-key read share a hash tag (each module's docstring
gives its layout), and pipelines are not transactions, so redis-py's cluster pipeline may
send each node its part.

`PoolBounds` is for a service whose callers have a deadline (the safety filter's admissions).
On one instance the pool is a `BlockingConnectionPool`: at most `max_connections`, and a
caller waits up to `wait_s` for a free one. redis-py's cluster client has no blocking pool:
`max_connections` bounds each node's connections, and a caller that finds none free gets
`MaxConnectionsError` (a `ConnectionError`) at once instead of waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

RedisClient: TypeAlias = Redis | RedisCluster

# Connection names of the services (CLIENT SETNAME).
SAFETY_FILTER_CLIENT = "frugal-safety-filter"
CONTROL_PLANE_CLIENT = "frugal-control-plane"

# A cluster client that meets a dead node (connection refused, or reset) reads the slot
# map again; one retry then sends the command to the replica promoted in its place, so
# only the requests of the failover itself fail. Redirections (MOVED, ASK) are followed
# apart from this, and the scripts and settles are idempotent per request id, so a retry
# after a lost answer changes nothing.
CLUSTER_RETRIES = 1
# One instance: a pooled connection whose Redis restarted is dead but looks connected, and
# fails its first command (measured: after a restart, the first request on each such
# connection was refused with 503, tests/e2e/test_redis_restart.py). One retry on a fresh
# connection, for connection errors only: a Redis that is gone refuses it at once (still
# failing closed at once), and a read timeout (a frozen Redis) is never retried, so a
# caller's wait stays one `wait_s`. The scripts and settles are idempotent per request id.
STALE_CONNECTION_RETRIES = 1


@dataclass(frozen=True)
class PoolBounds:
    """Connection bounds of a client whose callers have a deadline."""

    max_connections: int  # one instance: in all; a cluster: per node
    wait_s: float  # wait for a free connection (one instance) and for a reply
    connect_timeout_s: float


def redis_client(
    url: str, cluster: bool, bounds: PoolBounds | None = None, name: str | None = None
) -> RedisClient:
    """A client for `url` (with `cluster`, any node of the cluster); connects on first use.

    On one instance a command is retried once after a connection error only
    (STALE_CONNECTION_RETRIES; a Redis that is gone still fails the caller at once, who
    fails closed). Without `bounds`: redis-py's pool defaults. With them, on a cluster
    it is retried `CLUSTER_RETRIES` times, over a fresh slot map. `name` is each
    connection's CLIENT SETNAME, so `CLIENT LIST` and MONITOR tell the services apart.
    """
    if cluster:
        if bounds is None:
            return RedisCluster.from_url(url, client_name=name)
        return RedisCluster.from_url(
            url,
            client_name=name,
            max_connections=bounds.max_connections,
            socket_timeout=bounds.wait_s,
            socket_connect_timeout=bounds.connect_timeout_s,
            retry=Retry(NoBackoff(), CLUSTER_RETRIES),
        )
    if bounds is None:
        return Redis.from_url(url, client_name=name, retry=_stale_connection_retry())
    pool = BlockingConnectionPool.from_url(
        url,
        client_name=name,
        max_connections=bounds.max_connections,
        timeout=bounds.wait_s,
        socket_timeout=bounds.wait_s,
        socket_connect_timeout=bounds.connect_timeout_s,
        retry=_stale_connection_retry(),
    )
    return Redis(connection_pool=pool)


def _stale_connection_retry() -> Retry:
    return Retry(NoBackoff(), STALE_CONNECTION_RETRIES, supported_errors=(RedisConnectionError,))
