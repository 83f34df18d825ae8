"""The `frugal.v1.EngineUsage` servicer (edge layer): a request's usage, by the gateway's id.

Served on the worker's gRPC server next to Inference, for the safety filter only (Envoy's
transcoder does not list it, so it is no public route). It converts the question into a
look-up in the worker's usage log and the record into the reply; the wait a caller asks
for is capped at `frugal.engine_usage.MAX_WAIT_SECONDS` (that module is the client).
"""

from __future__ import annotations

from typing import Any

from engine_workers.usage_log import RequestUsageLog
from frugal.engine_usage import MAX_WAIT_SECONDS
from frugal.v1 import engine_usage_pb2 as pb
from frugal.v1 import engine_usage_pb2_grpc as pb_grpc


def add_usage_servicer(log: RequestUsageLog, server: Any) -> None:
    """Serve the usage log on `server` (a grpc.aio server)."""
    # The generated registration is untyped (grpc's stubs are not installed here).
    register: Any = pb_grpc.add_EngineUsageServicer_to_server
    register(EngineUsageServicer(log), server)


class EngineUsageServicer:
    """Implements every method of the generated `EngineUsageServicer` base (one)."""

    def __init__(self, log: RequestUsageLog) -> None:
        self._log = log

    async def RequestUsage(self, request: Any, context: Any) -> Any:
        if not request.request_id:
            return pb.RequestUsageReply(found=False)
        wait_seconds = min(request.wait_ms / 1000.0, MAX_WAIT_SECONDS)
        usage = await self._log.wait(request.request_id, wait_seconds)
        if usage is None:
            return pb.RequestUsageReply(found=False)
        return pb.RequestUsageReply(
            found=True,
            finished=usage.finished,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
