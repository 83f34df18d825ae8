"""The engine worker's servers (edge layer): gRPC Inference, EngineUsage and health, and
/metrics over HTTP.

`EngineWorker` is started and stopped in-process by tests and by `__main__`; `serve` runs one
until an event is set. Health reports SERVING only once the backend has started, and
NOT_SERVING as soon as a graceful stop begins, so balancers drain the replica first.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine_workers.backends import build_backend
from engine_workers.core import EngineCore
from engine_workers.engine import EngineBackend
from engine_workers.first_token_wait import WaitPlan
from engine_workers.metrics import EngineMetrics
from engine_workers.servicer import InferenceServicer
from engine_workers.settings import EngineSettings
from engine_workers.usage_log import RequestUsageLog
from engine_workers.usage_servicer import add_usage_servicer
from frugal.v1 import inference_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = "frugal.v1.Inference"

# A replica carries hundreds of concurrent streams from one Envoy connection; gRPC's default
# HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS would be the first limit hit, so lift it well above
# the largest max_batch plus its queue.
GRPC_SERVER_OPTIONS = (
    ("grpc.max_concurrent_streams", 4096),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


class EngineWorker:
    """One engine replica: its backend, gRPC server, health state and metrics endpoint."""

    def __init__(self, settings: EngineSettings, backend: EngineBackend | None = None) -> None:
        self.settings = settings
        self.backend = backend if backend is not None else build_backend(settings)
        self.metrics = EngineMetrics(self.backend.load, settings.model, settings.group)
        self.usage = RequestUsageLog(settings.usage_records, settings.usage_record_seconds)
        self.core = EngineCore(
            self.backend,
            self.metrics,
            model=settings.model,
            echo=settings.echo,
            usage=self.usage,
        )
        self.health = health.aio.HealthServicer()
        self._server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
        inference_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(
                self.core, WaitPlan(settings.headers_after_s, settings.keepalive_interval_s)
            ),
            self._server,
        )
        add_usage_servicer(self.usage, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = 0
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind, start the backend, then report SERVING; return the bound gRPC port."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {self.settings.host}:{self.settings.port}")
        await self._server.start()
        await self.backend.start()
        if self.settings.metrics_port:
            self.metrics_port = self.metrics.serve_http(
                self.settings.host, self.settings.metrics_port
            )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "engine worker serving model %s on %s (metrics port %s)",
            self.settings.model,
            self.address,
            self.metrics_port,
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING first, let in-flight RPCs finish within grace, then stop."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.settings.grace_seconds if grace is None else grace)
        await self.backend.stop()
        await self.metrics.stop_http()
        logger.info("engine worker on %s stopped", self.address)


async def serve(
    settings: EngineSettings,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run a worker until `stop` is set (forever if None); return the port it was bound to."""
    worker = EngineWorker(settings)
    port = await worker.start()
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await worker.stop()
    return port
