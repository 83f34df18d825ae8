"""The safety filter's gRPC server: ext_authz, RateLimitService and ext_proc on one port.

I/O edge, wiring only: one Redis client (its pool shared by every service), one
Prometheus registry, the three services Envoy calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from frugal.accounting.token_budget import TokenBudget
from frugal.keys import KeyStore
from frugal.keys.hashing import Peppers
from frugal.policy_store import PolicyStore
from safety_filter.authz.service import add_authorization_servicer
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.policies import NO_CHECKS, PolicyBook
from safety_filter.extproc.processor import ProcessorContext
from safety_filter.extproc.service import ExternalProcessorService
from safety_filter.ratelimit.service import add_ratelimit_servicer
from safety_filter.settings import SafetyFilterSettings

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
    redis: aioredis.Redis
    registry: CollectorRegistry

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.server.stop(grace=grace_s)
        await self.redis.aclose()


async def start_server(settings: SafetyFilterSettings, peppers: Peppers) -> SafetyFilterServer:
    """Start serving (settings.port 0 = any free port)."""
    # Fail fast: Envoy waits at most 1 s for a policy answer, and a retried Redis call
    # would only make a closed failure slower.
    redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    registry = CollectorRegistry()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_authorization_servicer(server, KeyStore(redis, peppers), registry)
    add_ratelimit_servicer(server, redis, registry)
    overrides = PolicyStore(redis)
    policies = (
        PolicyBook.from_config(settings.policies, overrides) if settings.enforce else NO_CHECKS
    )
    context = ProcessorContext(
        models=settings.models,
        max_body_bytes=settings.max_body_bytes,
        policies=policies,
        budget=TokenBudget(redis),
        metrics=ExtProcMetrics(registry),
    )
    ext_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessorService(context), server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    return SafetyFilterServer(server, port, redis, registry)
