"""The request processor: one object per ext_proc stream, one method per phase.

Converts between Envoy's ext_proc messages and the pure rules beside it. Phases
(ARCHITECTURE, "One request"; ext_authz and the rate limits ran before):
- request headers: the path, and the key's id, models and token limit that
  ext_authz put in headers;
- request body (BUFFERED): parse and validate once; unknown model 404, a model the
  key may not use 403; prompt checks (block / redact / log); reserve the token
  budget; set `x-frugal-model`; move streams to their `:stream` binding;
- request body, streams: the output checks of the request's policy go to the engine
  in the body's `output_checks` (a client's own copy is dropped): the worker writes
  the SSE itself, checks included, and ends every stream with `data: [DONE]` or an
  error event (engine_workers/answer_events.py);
- response headers: drop the gRPC headers the transcoder leaks; a stream that
  started (200) takes its body off this processor's path (`mode_override`: Envoy
  passes the events straight through, and the first ones came with the headers,
  which is when the client's first token left);
- response body (whole bodies only: unary answers and errors): output checks on a
  unary answer; an error body becomes OpenAI-shaped;
- response trailers: settle the real usage, and note what the engine reported (its
  time, an error status, what its output checks redacted or blocked).
`close` settles what is still open when the stream ends early (client gone).
Each inference request keeps a RequestRecord: the response that ends it carries the
record as `frugal.request` dynamic metadata (the request body's response already
names the model, so an early end still logs it) and the metrics observe it once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from frugal import wire
from frugal.accounting.token_budget import TokenBudget
from frugal.content_checks import ContentPolicy
from frugal.request_log import bind_request_id
from safety_filter.errors import (
    ApiError,
    body_too_large,
    invalid_request,
    model_not_allowed,
    model_not_found,
    upstream_error,
)
from safety_filter.extproc.engine_report import (
    engine_times,
    output_findings,
    usage_from_trailers,
)
from safety_filter.extproc.messages import (
    Namespaces,
    dynamic_metadata,
    header_value,
    immediate_response,
    set_header,
    skip_response_body,
    whole_body,
)
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.openai_request import SCHEMAS, InferenceRequest, parse_inference_request
from safety_filter.extproc.output_filter import check_whole_body, output_checks
from safety_filter.extproc.policies import PolicyBook
from safety_filter.extproc.prompt_check import (
    check_prompt,
    policy_violation,
    prompt_characters,
)
from safety_filter.extproc.request_record import (
    CLIENT_DISCONNECTED,
    CLOSED_BEFORE_RESPONSE,
    OUTPUT_BLOCKED,
    RequestRecord,
)
from safety_filter.extproc.upstream_errors import (
    error_from_grpc_status,
    openai_error_body,
)
from safety_filter.extproc.usage import UsageMeter, estimate_tokens

log = logging.getLogger(__name__)

OUTPUT_CHECKS_FIELD = "output_checks"
STREAM_SUFFIX = ":stream"
LEAKED_GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-accept-encoding")

Responses = list[ext.ProcessingResponse]


@dataclass(frozen=True)
class ProcessorContext:
    """What every request processor of one server shares."""

    models: frozenset[str]
    max_body_bytes: int
    policies: PolicyBook
    budget: TokenBudget
    # Reserved for a request that sets no max_tokens (the engine's own cap applies).
    default_max_tokens: int = 4096
    metrics: ExtProcMetrics = field(default_factory=ExtProcMetrics)


@dataclass(frozen=True)
class KeyGrant:
    """What ext_authz found out about the caller's key (x-frugal-key-* headers)."""

    key_id: str
    models: frozenset[str] | None  # None: every model
    tpm: int | None

    @classmethod
    def from_headers(cls, headers: ext.HttpHeaders) -> KeyGrant | None:
        key_id = header_value(headers, wire.KEY_ID_HEADER)
        if not key_id:
            return None
        models = header_value(headers, wire.KEY_MODELS_HEADER)
        tpm = header_value(headers, wire.KEY_TPM_HEADER)
        return cls(
            key_id,
            None if models in ("", wire.ALL_MODELS) else frozenset(models.split(",")),
            int(tpm) if tpm.isdigit() else None,
        )


def _trailers_answer(metadata: Namespaces | None = None) -> ext.ProcessingResponse:
    return ext.ProcessingResponse(
        response_trailers=ext.TrailersResponse(),
        dynamic_metadata=dynamic_metadata(metadata) if metadata else None,
    )


class RequestProcessor:
    """Holds what one HTTP request's phases need to know of each other."""

    def __init__(self, context: ProcessorContext) -> None:
        self._context = context
        self._schema_path: str | None = None
        self._stream = False
        self._grant: KeyGrant | None = None
        self._request_id = ""
        self._request: InferenceRequest | None = None
        self._policy: ContentPolicy | None = None
        self._meter: UsageMeter | None = None
        self._response_status = 0
        self._finished = False
        # An inference request's record until it is observed; then None.
        self._record: RequestRecord | None = None

    async def on_request_headers(self, headers: ext.HttpHeaders) -> Responses:
        started = time.perf_counter()
        path = header_value(headers, ":path").split("?", 1)[0]
        self._stream = path.endswith(STREAM_SUFFIX)
        base = path.removesuffix(STREAM_SUFFIX)
        self._schema_path = base if base in SCHEMAS else None
        self._grant = KeyGrant.from_headers(headers)
        self._request_id = header_value(headers, wire.REQUEST_ID_HEADER)
        bind_request_id(self._request_id)
        if self._schema_path:
            self._record = RequestRecord(started)
        if self._schema_path and headers.end_of_stream:
            raise invalid_request("The request has no body; send a JSON object.", "invalid_json")
        return [ext.ProcessingResponse(request_headers=ext.HeadersResponse())]

    async def on_request_body(self, body: ext.HttpBody) -> Responses:
        if self._schema_path is None:
            return [ext.ProcessingResponse(request_body=ext.BodyResponse())]
        if len(body.body) > self._context.max_body_bytes:
            raise body_too_large(self._context.max_body_bytes)
        request = parse_inference_request(self._schema_path, body.body)
        if request.model not in self._context.models:
            raise model_not_found(request.model)
        record = self._record
        assert record is not None
        record.model = request.model
        grant = self._grant
        if grant is not None and grant.models is not None and request.model not in grant.models:
            raise model_not_allowed(request.model)
        self._request = request
        key_id = self._grant.key_id if self._grant else None
        policy = await self._context.policies.policy_for(request.model, key_id)
        self._policy = policy
        verdict = check_prompt(request.body, policy)
        self._context.metrics.detected(verdict.matches, "prompt", policy.prompt_action)
        if verdict.blocked is not None:
            raise policy_violation(verdict.blocked)
        await self._reserve(request)
        self._stream = record.stream = self._stream or request.stream
        set_headers = [set_header(wire.MODEL_HEADER, request.model)]
        if self._stream:
            set_headers.append(set_header(":path", self._schema_path + STREAM_SUFFIX))
        mutation = None
        checks = output_checks(policy) if self._stream else None
        if verdict.redacted or checks is not None or OUTPUT_CHECKS_FIELD in request.body:
            request.body.pop(OUTPUT_CHECKS_FIELD, None)
            if checks is not None:
                request.body[OUTPUT_CHECKS_FIELD] = checks
            new_body = json.dumps(request.body, ensure_ascii=False).encode()
            set_headers.append(set_header("content-length", str(len(new_body))))
            mutation = ext.BodyMutation(body=new_body)
        common = ext.CommonResponse(
            header_mutation=ext.HeaderMutation(set_headers=set_headers),
            body_mutation=mutation,
            clear_route_cache=True,
        )
        return [
            ext.ProcessingResponse(
                request_body=ext.BodyResponse(response=common),
                dynamic_metadata=dynamic_metadata(
                    {wire.REQUEST_METADATA_NAMESPACE: {"model": request.model}}
                ),
            )
        ]

    async def _reserve(self, request: InferenceRequest) -> None:
        if self._grant is None:
            return
        meter = UsageMeter(
            self._context.budget,
            self._grant.key_id,
            self._request_id or f"anonymous-{uuid.uuid4().hex}",
            request.model,
            estimate_tokens(prompt_characters(request.body)),
        )
        max_output = request.max_output_tokens or self._context.default_max_tokens
        await meter.reserve(self._grant.tpm, max_output)
        self._meter = meter

    async def on_response_headers(self, headers: ext.HttpHeaders) -> Responses:
        status = header_value(headers, ":status")
        self._response_status = int(status) if status.isdigit() else 0
        streaming = self._stream and self._response_status == 200
        record = self._record
        if record is not None:
            record.status = self._response_status
            record.engine_reported(*engine_times(headers))
            if streaming:
                record.first_text = time.perf_counter()
        set_headers = [set_header("cache-control", "no-cache")] if streaming else []
        # A whole body may be rewritten here, after its headers left: no length is fixed.
        remove = [*LEAKED_GRPC_HEADERS, *(() if streaming else ("content-length",))]
        mutation = ext.HeaderMutation(set_headers=set_headers, remove_headers=remove)
        common = ext.CommonResponse(header_mutation=mutation)
        answer = ext.ProcessingResponse(response_headers=ext.HeadersResponse(response=common))
        return [skip_response_body(answer) if streaming else answer]

    async def on_response_body(self, body: ext.HttpBody) -> Responses:
        """The whole body (BUFFERED), once: a unary answer or an error. A started
        stream's events never come here (they skip this processor)."""
        if self._finished or not self._holds_body():
            return [whole_body(None)]
        return [await self._finish_held(body.body)]

    def _holds_body(self) -> bool:
        """Whole bodies come here: an engine error (rewritten to OpenAI's shape) and a
        unary answer (its text checked as a whole)."""
        unary = self._request is not None and not self._stream
        return self._response_status != 200 or unary

    async def _finish_held(self, body: bytes) -> ext.ProcessingResponse:
        if self._response_status != 200:
            await self._settle((0, 0))  # the engine answered nothing
            self._failed(upstream_error(self._response_status, "").code)
            return self._finish(openai_error_body(self._response_status, body))
        assert self._request is not None
        policy = self._policy or self._context.policies.for_model(self._request.model)
        checked = check_whole_body(body, policy)
        self._context.metrics.detected(checked.matches, "output", policy.output_action)
        await self._settle(checked.usage)
        return self._finish(checked.body)

    async def on_response_trailers(self, trailers: ext.HttpTrailers) -> Responses:
        if self._record is not None:
            self._record.engine_reported(*engine_times(trailers))
        if self._finished or self._holds_body():
            return [_trailers_answer()]
        self._note_output(trailers)
        status = header_value(trailers, "grpc-status") or "0"
        if status != "0":
            self._failed(error_from_grpc_status(status, "").code)
        await self._settle(usage_from_trailers(trailers))
        return [_trailers_answer(self._end())]

    def _note_output(self, trailers: ext.HttpTrailers) -> None:
        """What the engine's output checks found (a stream's checks run in the worker)."""
        redacted, blocked = output_findings(trailers)
        metrics = self._context.metrics
        metrics.detected_categories(redacted, "output", "redact")
        if blocked is not None:
            metrics.detected_categories([blocked], "output", "block")
            self._failed(OUTPUT_BLOCKED)

    def _failed(self, reason: str) -> None:
        if self._record is not None:
            self._record.error = reason

    async def _settle(self, usage: tuple[int, int] | None) -> None:
        """Charge the engine's count; without one (the engine never got to report it),
        the prompt's estimate and no output."""
        if usage is not None and self._record is not None:
            self._record.prompt_tokens, self._record.completion_tokens = usage
        if self._meter is None:
            return
        await self._meter.settle(*(usage or (None, 0)))

    async def close(self) -> None:
        """The stream is over, however it ended: charge what was not charged yet. The
        metrics come first: when the client left, this runs in a cancelled RPC, and the
        Redis call may not get to finish."""
        record = self._record
        if record is not None:  # the response never ended
            record.status = record.status or CLOSED_BEFORE_RESPONSE
            record.error = CLIENT_DISCONNECTED
            self._observe()
        await self._settle(None)

    def refuse(self, error: ApiError) -> ext.ProcessingResponse:
        """The immediate response that refuses the request, which ends it."""
        self._context.metrics.refusals.labels(error.code).inc()
        record = self._record
        if record is None:
            return immediate_response(error)
        record.status, record.error = error.status, error.code
        metadata = {wire.REQUEST_METADATA_NAMESPACE: record.metadata()}
        self._observe()
        return immediate_response(error, metadata)

    def _finish(self, body: bytes) -> ext.ProcessingResponse:
        """The whole body, as it goes out, carrying the request's record."""
        return whole_body(body, metadata=self._end())

    def _end(self) -> Namespaces | None:
        """The response is over: stamp the record, observe it, and give its metadata."""
        self._finished = True
        record = self._record
        if record is None:
            return None
        record.ended = time.perf_counter()
        if record.first_text is None and record.status == 200:
            record.first_text = record.ended  # a unary answer's first token comes with it
        metadata = {wire.REQUEST_METADATA_NAMESPACE: record.metadata()}
        self._observe()
        return metadata

    def _observe(self) -> None:
        record, self._record = self._record, None
        if record is None:
            return
        self._context.metrics.finished(record)
        if log.isEnabledFor(logging.DEBUG):
            e2e = record.e2e_s()
            e2e_ms = "-" if e2e is None else f"{e2e * 1000:.3f}"
            log.debug(
                "request done: status %d, %s ms, %s", record.status, e2e_ms, record.metadata()
            )
