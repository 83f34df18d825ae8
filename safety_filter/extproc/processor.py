"""The request processor: one object per ext_proc stream, one method per phase.

Converts between Envoy's ext_proc messages and the pure rules in
openai_request.py / sse.py. Phases (ARCHITECTURE, "One request"):
- request headers: remember the path; an inference call without a body is refused;
- request body (BUFFERED): parse and validate once, refuse unknown models, set
  `x-frugal-model` for routing, rewrite `:path` to the `:stream` binding;
- response headers: mark SSE, drop the gRPC headers the transcoder leaks;
- response body (FULL_DUPLEX_STREAMED): pass chunks on; an error body becomes
  OpenAI-shaped;
- response trailers: end a stream with `data: [DONE]`, or with an error event
  when the engine failed, so no failure looks like a clean end.
Auth, quotas and content checks (issue 3) add their steps to these methods.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf.struct_pb2 import Struct

from safety_filter.errors import ApiError, body_too_large, invalid_request, model_not_found
from safety_filter.extproc.openai_request import SCHEMAS, parse_inference_request
from safety_filter.extproc.sse import (
    DONE_EVENT,
    error_event,
    error_from_grpc_status,
    error_json,
    openai_error_body,
)

MODEL_HEADER = "x-frugal-model"
ERROR_METADATA_NAMESPACE = "frugal.error"
STREAM_SUFFIX = ":stream"
LEAKED_GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-accept-encoding")

Responses = Iterable[ext.ProcessingResponse]


def header_value(headers: ext.HttpHeaders | ext.HttpTrailers, name: str) -> str:
    source = headers.headers if isinstance(headers, ext.HttpHeaders) else headers.trailers
    for header in source.headers:
        if header.key == name:
            return str(header.raw_value.decode() if header.raw_value else header.value)
    return ""


def _set_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, raw_value=value.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _body_chunk(body: bytes, end_of_stream: bool) -> ext.ProcessingResponse:
    streamed = ext.StreamedBodyResponse(body=body, end_of_stream=end_of_stream)
    mutation = ext.BodyMutation(streamed_response=streamed)
    common = ext.CommonResponse(body_mutation=mutation)
    return ext.ProcessingResponse(response_body=ext.BodyResponse(response=common))


class RequestProcessor:
    """Holds what one HTTP request's phases need to know of each other."""

    def __init__(self, models: frozenset[str], max_body_bytes: int) -> None:
        self._models = models
        self._max_body_bytes = max_body_bytes
        self._schema_path: str | None = None
        self._stream = False
        self._response_status = 0
        self._error_body = bytearray()
        self._finished = False

    def on_request_headers(self, headers: ext.HttpHeaders) -> Responses:
        path = header_value(headers, ":path").split("?", 1)[0]
        self._stream = path.endswith(STREAM_SUFFIX)
        base = path.removesuffix(STREAM_SUFFIX)
        self._schema_path = base if base in SCHEMAS else None
        if self._schema_path and headers.end_of_stream:
            raise invalid_request("The request has no body; send a JSON object.", "invalid_json")
        yield ext.ProcessingResponse(request_headers=ext.HeadersResponse())

    def on_request_body(self, body: ext.HttpBody) -> Responses:
        if self._schema_path is None:
            yield ext.ProcessingResponse(request_body=ext.BodyResponse())
            return
        if len(body.body) > self._max_body_bytes:
            raise body_too_large(self._max_body_bytes)
        request = parse_inference_request(self._schema_path, body.body)
        if request.model not in self._models:
            raise model_not_found(request.model)
        self._stream = self._stream or request.stream
        set_headers = [_set_header(MODEL_HEADER, request.model)]
        if self._stream:
            set_headers.append(_set_header(":path", self._schema_path + STREAM_SUFFIX))
        common = ext.CommonResponse(
            header_mutation=ext.HeaderMutation(set_headers=set_headers), clear_route_cache=True
        )
        yield ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))

    def on_response_headers(self, headers: ext.HttpHeaders) -> Responses:
        status = header_value(headers, ":status")
        self._response_status = int(status) if status.isdigit() else 0
        set_headers = []
        if self._stream and self._response_status == 200:
            set_headers = [
                _set_header("content-type", "text/event-stream"),
                _set_header("cache-control", "no-cache"),
            ]
        mutation = ext.HeaderMutation(
            set_headers=set_headers, remove_headers=list(LEAKED_GRPC_HEADERS)
        )
        common = ext.CommonResponse(header_mutation=mutation)
        yield ext.ProcessingResponse(response_headers=ext.HeadersResponse(response=common))

    def on_response_body(self, body: ext.HttpBody) -> Responses:
        if self._response_status != 200:
            # An engine error before the first byte: the transcoder's {"code", "message"}
            # body is replaced by OpenAI's shape once it is complete.
            self._error_body += body.body
            if body.end_of_stream:
                yield self._finish(self._rewritten_error())
            return
        if body.end_of_stream and self._stream:
            yield _body_chunk(body.body, end_of_stream=False)
            yield self._finish(DONE_EVENT)
            return
        self._finished = body.end_of_stream
        yield _body_chunk(body.body, body.end_of_stream)

    def on_response_trailers(self, trailers: ext.HttpTrailers) -> Responses:
        if not self._finished:
            yield self._finish(self._stream_ending(trailers))
        yield ext.ProcessingResponse(response_trailers=ext.TrailersResponse())

    def _stream_ending(self, trailers: ext.HttpTrailers) -> bytes:
        if self._response_status != 200:
            return self._rewritten_error()
        status = header_value(trailers, "grpc-status") or "0"
        if status == "0":
            return DONE_EVENT if self._stream else b""
        error = error_from_grpc_status(status, header_value(trailers, "grpc-message"))
        return error_event(error) if self._stream else error_json(error)

    def _rewritten_error(self) -> bytes:
        return openai_error_body(self._response_status, bytes(self._error_body))

    def _finish(self, last_chunk: bytes) -> ext.ProcessingResponse:
        self._finished = True
        return _body_chunk(last_chunk, end_of_stream=True)


def immediate_response(error: ApiError) -> ext.ProcessingResponse:
    """A refusal. Envoy's local_reply_config turns the plain message into OpenAI's shape
    with the type and code sent as dynamic metadata (control_plane/translate/local_replies.py)."""
    metadata = Struct()
    metadata.update({ERROR_METADATA_NAMESPACE: {"type": error.type, "code": error.code}})
    return ext.ProcessingResponse(
        immediate_response=ext.ImmediateResponse(
            status={"code": error.status}, body=error.message.encode()
        ),
        dynamic_metadata=metadata,
    )
