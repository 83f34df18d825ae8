"""The safety filter's gRPC server: ext_proc (the whole chain) and the RateLimitService.

I/O edge, wiring only: one Redis client over one bounded pool shared by every part, one
Prometheus registry, the services Envoy calls. The RateLimitService answers only when
the stack runs with `safety_filter.rate_limit: envoy`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from frugal.accounting.admission import Admission
from frugal.accounting.settlements import Settlements
from frugal.accounting.token_budget import TokenBudget
from frugal.engine_usage import EngineUsageClient
from frugal.group_lines_store import READ_EVERY_S, GroupLinesStore
from frugal.keys import KeyStore, KeyStoreUnavailable
from frugal.keys.hashing import Peppers
from frugal.policy_store import PolicyStore
from frugal.redis_connection import SAFETY_FILTER_CLIENT, PoolBounds, RedisClient, redis_client
from safety_filter.authz.key_check import KeyCheck
from safety_filter.extproc.group_tally import GroupTally
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.policies import NO_CHECKS, PolicyBook
from safety_filter.extproc.processor import Enforcement, ProcessorContext
from safety_filter.extproc.service import ExternalProcessorService
from safety_filter.extproc.usage import Accounting
from safety_filter.picker_roster import PickerRoster
from safety_filter.ratelimit.service import add_ratelimit_servicer
from safety_filter.settings import SafetyFilterSettings

# Connections besides the admissions': the settlements' one pipeline at a time, the
# cache refresher's, and use-stamp writes.
OTHER_CONNECTIONS = 8
# How long a shutdown waits for open settlements to reach Redis.
DRAIN_S = 5.0
# Key records and policy overrides in use are reloaded this often, under half the key
# cache's 0.5 s, so a request of a key in use never waits for either (one pipeline each).
REFRESH_EVERY_S = 0.2

log = logging.getLogger(__name__)


async def refresh_caches(store: KeyStore, policies: PolicyBook) -> None:
    while True:
        await asyncio.sleep(REFRESH_EVERY_S)
        try:
            await store.refresh_active()
            await policies.refresh_active()
        except (KeyStoreUnavailable, RedisError) as error:
            # Requests then load what they need themselves, and fail closed without Redis.
            log.warning("could not refresh the key and policy caches: %s", error)


async def refresh_group_picking(
    store: GroupLinesStore, roster: PickerRoster, tally: GroupTally
) -> None:
    """The group picker's lines and the processes sharing the requests, once a second.
    Unreadable, no lines are kept: the route weights split every request until they are
    back (lines must not outlive their TTL)."""
    failing = False
    while True:
        try:
            tally.set_views(await roster.stamp())
            tally.set_pickers(await store.read())
            failing = False
        except RedisError as error:
            tally.set_pickers({})
            if not failing:  # once an outage, not once a second
                log.warning("could not read the group picker's lines: %s", error)
            failing = True
        await asyncio.sleep(READ_EVERY_S)


# One ext_proc stream per HTTP request: allow as many as Envoy may open.
SERVER_OPTIONS = [
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


@dataclass
class SafetyFilterServer:
    server: grpc.aio.Server
    port: int
    redis: RedisClient
    registry: CollectorRegistry
    settlements: Settlements
    engine_usage: EngineUsageClient
    refreshers: tuple[asyncio.Task[None], ...]
    health: health.aio.HealthServicer
    roster: PickerRoster

    async def stop(self, grace_s: float = 2.0) -> None:
        for refresher in self.refreshers:
            refresher.cancel()
        await self.roster.leave()
        await self.health.enter_graceful_shutdown()  # NOT_SERVING while streams finish
        await self.server.stop(grace=grace_s)
        await self.settlements.drain(DRAIN_S)
        await self.engine_usage.close()
        await self.redis.aclose()


async def start_server(settings: SafetyFilterSettings, peppers: Peppers) -> SafetyFilterServer:
    """Start serving (settings.port 0 = any free port)."""
    # Every part shares one pool of a size chosen on purpose: admissions (bounded by
    # `admitting`), the settlements' pipeline and a few reads. A caller waits for a free
    # connection rather than failing (on one instance; a cluster client cannot wait, see
    # frugal.redis_connection). A Redis that is gone refuses connections at once (fail
    # closed, Envoy's 503); the read timeout only bounds a frozen one, and is as long as a
    # slot's wait: at 0.5 s, on 2 busy cores at 256 streams, replies that had arrived were
    # read late and admitted requests failed as if Redis were down.
    bounds = PoolBounds(
        max_connections=settings.admitting + OTHER_CONNECTIONS,
        wait_s=settings.admit_wait_s,
        connect_timeout_s=0.5,
    )
    redis = redis_client(settings.redis_url, settings.redis_cluster, bounds, SAFETY_FILTER_CLIENT)
    registry = CollectorRegistry()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    metrics = ExtProcMetrics(registry)
    add_ratelimit_servicer(server, redis, metrics.rate_decisions)
    settlements = Settlements(TokenBudget(redis))
    accounting = Accounting(
        Admission(redis), settlements, settings.admitting, settings.admit_wait_s
    )
    metrics.watch_accounting(accounting)
    engine_usage = EngineUsageClient()
    enforcement = None
    policies = NO_CHECKS
    groups = GroupTally()
    metrics.watch_groups(groups)
    roster = PickerRoster(redis)
    refreshers = [
        asyncio.ensure_future(refresh_group_picking(GroupLinesStore(redis), roster, groups))
    ]
    if settings.enforce:
        policies = PolicyBook.from_config(
            settings.policies,
            PolicyStore(redis),
            settings.policy_cache_ttl_s,
            settings.cache_entries,
        )
        store = KeyStore(
            redis, peppers, settings.key_cache_ttl_s, cache_entries=settings.cache_entries
        )
        refreshers.append(asyncio.ensure_future(refresh_caches(store, policies)))
        enforcement = Enforcement(
            KeyCheck(store, registry),
            accounting,
            rate_limit_inline=settings.rate_limit == "inline",
            engine_usage=engine_usage,
        )
    context = ProcessorContext(
        models=settings.models,
        max_body_bytes=settings.max_body_bytes,
        policies=policies,
        enforcement=enforcement,
        metrics=metrics,
        prefix_block_chars=settings.prefix_block_chars,
        groups=groups,
    )
    ext_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessorService(context), server)
    # grpc.health.v1 for the orchestrators' probes (compose, Kubernetes): SERVING once bound.
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return SafetyFilterServer(
        server, port, redis, registry, settlements, engine_usage, tuple(refreshers),
        health_servicer, roster,
    )  # fmt: skip
