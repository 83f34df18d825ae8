"""The safety filter's gRPC server: ext_proc today; ext_authz and rate limits join it (issue 3)."""

from __future__ import annotations

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc

from safety_filter.extproc.service import ExternalProcessorService
from safety_filter.settings import SafetyFilterSettings

# One ext_proc stream per HTTP request: allow as many as Envoy may open.
SERVER_OPTIONS = [
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


async def start_server(settings: SafetyFilterSettings) -> tuple[grpc.aio.Server, int]:
    """Start serving; returns the server and the bound port (settings.port 0 = any)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ext_grpc.add_ExternalProcessorServicer_to_server(
        ExternalProcessorService(settings.models, settings.max_body_bytes), server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    return server, port
