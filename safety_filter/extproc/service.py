"""The ext_proc gRPC service: one RequestProcessor per stream, phases dispatched by name.

I/O edge: reads ProcessingRequests from Envoy, hands each phase to the processor,
and has the processor turn a refusal (ApiError) into an immediate response, in this
one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc

from safety_filter.errors import ApiError
from safety_filter.extproc.processor import ProcessorContext, RequestProcessor, Responses

log = logging.getLogger(__name__)

REQUEST_PHASES = frozenset({"request_headers", "request_body", "request_trailers"})
PHASES: dict[str, Callable[[RequestProcessor, Any], Awaitable[Responses]]] = {
    "request_headers": RequestProcessor.on_request_headers,
    "request_body": RequestProcessor.on_request_body,
    "request_trailers": RequestProcessor.on_request_trailers,
    "response_headers": RequestProcessor.on_response_headers,
    "response_trailers": RequestProcessor.on_response_trailers,
}


class ExternalProcessorService(ext_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, context: ProcessorContext) -> None:
        self._context = context

    async def Process(
        self, request_iterator: AsyncIterator[ext.ProcessingRequest], context: Any
    ) -> AsyncIterator[ext.ProcessingResponse]:
        processor = RequestProcessor(self._context)
        metrics = self._context.metrics
        try:
            async for request in request_iterator:
                phase = request.WhichOneof("request")
                handler = PHASES.get(phase or "")
                if handler is None:
                    log.warning("ext_proc phase %s is not configured; ignoring it", phase)
                    continue
                started = time.perf_counter()
                if request.attributes:
                    processor.note_attributes(request)
                turns = metrics.request_turns if phase in REQUEST_PHASES else metrics.response_turns
                try:
                    responses = await handler(processor, getattr(request, phase))
                except ApiError as error:
                    turns.inc()
                    yield processor.refuse(error)
                    return
                finally:
                    metrics.observe_phase(phase, time.perf_counter() - started)
                if responses:
                    turns.inc()
                for response in responses:
                    yield response
                # Resumed: grpc has written them (a stream Envoy closed is not resumed).
                if responses and phase in REQUEST_PHASES:
                    processor.released()
        finally:
            await processor.close()
