"""The request processor: one object per ext_proc stream, one method per phase.

Converts between Envoy's ext_proc messages and the pure rules beside it. The whole
safety chain runs here, in one round trip before the engine (ARCHITECTURE, "One
request"; Envoy's local rate limit ran before, as a per-Envoy backstop):
- request headers: the path and the caller's key (checked against the cached key
  store: no Redis round trip for a key in use). A refused key ends the request here.
  An inference request's headers are answered only once its body is in: the request
  body is STREAMED with send_body_without_waiting_for_header_response, so Envoy sends
  headers and body chunks without waiting, and all are answered in one turn.
- request body: parse and validate once; unknown model 404, a model the key may not
  use 403; prompt checks (block / redact / log); admit (the key's rpm and token
  reservation in one Redis script, or only the reservation when Envoy's global rate
  limit checks the rpm); pick the replica group where the model has a group picker
  (group_tally); then the headers' answer (`x-frugal-model`, the prompt's
  `x-frugal-prefix` key for prefix-aware routing, the picked `x-frugal-group`, the
  `:stream` binding, the key's identity headers removed or set) and the body's. A stream's
  output checks go to the engine in the body's `output_checks` (a client's own copy
  is dropped): the worker writes the SSE itself, checks included, and ends every
  stream with `data: [DONE]` or an error event (engine_workers/answer_events.py);
- response headers: drop the gRPC headers the transcoder leaks; add the key's
  rate-limit standing; note the replica (`upstream.address`); a stream that started
  (200) takes its body off this processor's path (`mode_override`);
- response body (whole bodies only: unary answers and errors): output checks on a
  unary answer; an error body becomes OpenAI-shaped;
- response trailers: settle the real usage, and note what the engine reported (its
  time, an error status, what its output checks redacted or blocked).
`close` settles what is still open when the stream ends early (client gone), with
what the replica says it generated, and takes the request off its group's count.
Settlements never wait on the request's path.
Each inference request keeps a RequestRecord: the response that ends it carries the
record as `frugal.request` dynamic metadata and the metrics observe it once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from frugal import wire
from frugal.content_checks import ContentPolicy
from frugal.engine_usage import EngineUsageClient
from frugal.prefix_key import prefix_key
from frugal.request_log import bind_request_id
from safety_filter.authz.credentials import CREDENTIAL_HEADERS
from safety_filter.authz.key_check import KeyCheck, KeyGrant
from safety_filter.errors import (
    RATE_REFUSAL_CODE,
    ApiError,
    body_too_large,
    invalid_request,
    method_not_allowed,
    model_not_allowed,
    model_not_found,
    upstream_error,
)
from safety_filter.extproc.engine_report import (
    Reported,
    engine_times,
    output_findings,
    reported_usage,
)
from safety_filter.extproc.group_tally import GroupTally, GroupTicket
from safety_filter.extproc.limit_headers import Headers, admitted_headers
from safety_filter.extproc.messages import (
    Namespaces,
    attribute,
    dynamic_metadata,
    header_dict,
    header_value,
    immediate_response,
    set_header,
)
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.openai_request import SCHEMAS, InferenceRequest, parse_inference_request
from safety_filter.extproc.output_filter import output_checks
from safety_filter.extproc.policies import PolicyBook
from safety_filter.extproc.prompt_check import (
    check_prompt,
    policy_violation,
    prompt_characters,
    prompt_parts,
)
from safety_filter.extproc.request_record import (
    CLIENT_DISCONNECTED,
    CLOSED_BEFORE_RESPONSE,
    OUTPUT_BLOCKED,
    RequestRecord,
)
from safety_filter.extproc.upstream_errors import (
    error_from_grpc_status,
)
from safety_filter.extproc.usage import Accounting, Usage, UsageMeter, estimate_tokens

log = logging.getLogger(__name__)

OUTPUT_CHECKS_FIELD = "output_checks"
STREAM_SUFFIX = ":stream"
# What the client never sees: the gRPC headers the transcoder leaks, and the engine's
# report of a unary answer (the gateway's usage headers are the client's).
RESPONSE_REMOVED = (
    "grpc-status", "grpc-message", "grpc-accept-encoding",
    wire.PROMPT_TOKENS, wire.COMPLETION_TOKENS, wire.OUTPUT_REDACTED, wire.OUTPUT_BLOCKED,
)  # fmt: skip
# Never forwarded as the client sent them: the key, and what only the gateway may set.
CLIENT_HEADERS_REMOVED = (*CREDENTIAL_HEADERS, *wire.IDENTITY_HEADERS, wire.MODEL_HEADER)
# Every header of this prefix is the gateway's to set: a client's copy never goes on, in
# any configuration (e.g. an engine's usage header, or a key id to be counted under).
GATEWAY_HEADER_PREFIX = "x-frugal-"
# How long a stream that ended early waits for its replica to say what it generated.
ENGINE_USAGE_WAIT_S = 2.0

Responses = list[ext.ProcessingResponse]


@dataclass(frozen=True)
class Enforcement:
    """Keys, limits and the bill (absent when the stack runs with `enforce: false`)."""

    keys: KeyCheck
    accounting: Accounting
    # False: Envoy's global rate limit filter checks the rpm (`safety_filter.rate_limit:
    # envoy`); the processor then only reserves tokens and sets the identity headers.
    rate_limit_inline: bool = True
    engine_usage: EngineUsageClient | None = None


@dataclass(frozen=True)
class ProcessorContext:
    """What every request processor of one server shares."""

    models: frozenset[str]
    max_body_bytes: int
    policies: PolicyBook
    enforcement: Enforcement | None
    # The most a request that sets no max_tokens may generate (the key's budget may cap it
    # lower; the engine's own cap applies too).
    default_max_tokens: int = 4096
    metrics: ExtProcMetrics = field(default_factory=ExtProcMetrics)
    prefix_block_chars: int = 2048  # the block of the prompt's prefix key
    # What this process sent each group, and the lines it picks by (a model without lines
    # is not picked for: the route weights split it).
    groups: GroupTally = field(default_factory=GroupTally)


def _headers_answer(common: ext.CommonResponse) -> ext.ProcessingResponse:
    return ext.ProcessingResponse(request_headers=ext.HeadersResponse(response=common))


def _body_answer(mutation: ext.BodyMutation | None = None) -> ext.ProcessingResponse:
    common = ext.CommonResponse(body_mutation=mutation) if mutation is not None else None
    return ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))


def _response_headers_answer(common: ext.CommonResponse) -> ext.ProcessingResponse:
    return ext.ProcessingResponse(response_headers=ext.HeadersResponse(response=common))


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
        self._chunks: list[bytes] = []
        self._body_bytes = 0
        self._answered = False
        self._request: InferenceRequest | None = None
        self._policy: ContentPolicy | None = None
        self._meter: UsageMeter | None = None
        self._standing: Headers = ()
        self._client_gateway_headers: tuple[str, ...] = ()
        self._upstream = ""
        self._group: GroupTicket | None = None  # its place in the group's count, if picked
        # Envoy has the answers that let the request go on to an engine.
        self._released = False
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
        self._request_id = header_value(headers, wire.REQUEST_ID_HEADER)
        bind_request_id(self._request_id)
        self._client_gateway_headers = tuple(
            dict.fromkeys(
                h.key
                for h in headers.headers.headers
                if h.key.startswith(GATEWAY_HEADER_PREFIX) and h.key not in CLIENT_HEADERS_REMOVED
            )
        )
        if self._schema_path:
            self._record = RequestRecord(started)
        enforcement = self._context.enforcement
        if enforcement is not None:
            self._grant = await enforcement.keys.grant(header_dict(headers))
            if self._record is not None:
                self._record.key_id, self._record.tenant = self._grant.key_id, self._grant.tenant
        if self._schema_path is None:  # not ours to check: on at once
            return [_headers_answer(ext.CommonResponse(header_mutation=self._identity()))]
        if (method := header_value(headers, ":method")) != "POST":
            raise method_not_allowed(method, self._schema_path)
        if headers.end_of_stream:
            raise invalid_request("The request has no body; send a JSON object.", "invalid_json")
        return []  # answered with the body's answer, once the body is in

    def _identity(self, *extra: tuple[str, str]) -> ext.HeaderMutation:
        """What the request goes on with: none of the client's credentials, nor any header
        of the gateway's prefix it sent; with Envoy's rate limit filter, the key id and rpm
        it counts by."""
        to_set = [*extra]
        grant = self._grant
        enforcement = self._context.enforcement
        if grant is not None and enforcement is not None and not enforcement.rate_limit_inline:
            to_set.append((wire.KEY_ID_HEADER, grant.key_id))
            if grant.rpm is not None:
                to_set.append((wire.KEY_RPM_HEADER, str(grant.rpm)))
        names = {name for name, _ in to_set}
        removed = (*CLIENT_HEADERS_REMOVED, *self._client_gateway_headers)
        return ext.HeaderMutation(
            set_headers=[set_header(name, value) for name, value in to_set],
            remove_headers=[name for name in removed if name not in names],
        )

    async def on_request_body(self, body: ext.HttpBody) -> Responses:
        """A body chunk (STREAMED; Envoy sends them without waiting for the headers'
        answer). Each gets its answer, in order, once the last is in."""
        if self._schema_path is None:
            return [_body_answer()]
        self._chunks.append(body.body)
        self._body_bytes += len(body.body)
        if self._body_bytes > self._context.max_body_bytes:
            raise body_too_large(self._context.max_body_bytes)
        if not body.end_of_stream:
            return []
        return await self._answer_request()

    async def on_request_trailers(self, trailers: ext.HttpTrailers) -> Responses:
        """Trailers end a body whose last chunk did not say so (an HTTP/2 client's)."""
        answer = ext.ProcessingResponse(request_trailers=ext.TrailersResponse())
        if self._schema_path is None or self._answered:
            return [answer]
        return [*await self._answer_request(), answer]

    async def _answer_request(self) -> Responses:
        """The whole body is in: decide; then answer the headers (routing mutations
        included), then each body chunk."""
        assert self._schema_path is not None
        self._answered = True
        body = b"".join(self._chunks)
        request = parse_inference_request(self._schema_path, body)
        if request.model not in self._context.models:
            raise model_not_found(request.model)
        record = self._record
        assert record is not None
        record.model = request.model
        grant = self._grant
        if grant is not None and grant.models is not None and request.model not in grant.models:
            raise model_not_allowed(request.model)
        self._request = request
        policy = await self._context.policies.policy_for(
            request.model, grant.key_id if grant else None
        )
        self._policy = policy
        verdict = check_prompt(request.body, policy)
        self._context.metrics.detected(verdict.matches, "prompt", policy.prompt_action)
        if verdict.blocked is not None:
            raise policy_violation(verdict.blocked)
        prompt_tokens = estimate_tokens(prompt_characters(request.body))
        capped = await self._admit(request, prompt_tokens)
        self._stream = record.stream = self._stream or request.stream
        set_headers = [(wire.MODEL_HEADER, request.model)]
        prefix = prefix_key(prompt_parts(request.body), self._context.prefix_block_chars)
        if prefix is not None:
            set_headers.append((wire.PREFIX_HEADER, str(prefix)))
        self._group = self._context.groups.pick(request.model, prompt_tokens)
        if self._group is not None:
            set_headers.append((wire.GROUP_HEADER, self._group.group))
            self._context.metrics.group_picks.labels(request.model, self._group.group).inc()
        if self._stream:
            set_headers.append((":path", self._schema_path + STREAM_SUFFIX))
        checks = output_checks(policy)
        new_body = None
        if (
            verdict.redacted
            or checks is not None
            or capped is not None
            or (OUTPUT_CHECKS_FIELD in request.body)
        ):
            request.body.pop(OUTPUT_CHECKS_FIELD, None)
            if checks is not None:
                request.body[OUTPUT_CHECKS_FIELD] = checks
            if capped is not None:
                request.body["max_tokens"] = capped
            new_body = orjson.dumps(request.body)
        common = ext.CommonResponse(
            header_mutation=self._identity(*set_headers), clear_route_cache=True
        )
        metadata = {wire.REQUEST_METADATA_NAMESPACE: {"model": request.model}}
        headers = _headers_answer(common)
        headers.dynamic_metadata.CopyFrom(dynamic_metadata(metadata))
        # Envoy drops the content-length of a STREAMED body it lets a processor change.
        changed = new_body is not None
        first = _body_answer(ext.BodyMutation(body=new_body) if changed else None)
        rest = _body_answer(ext.BodyMutation(clear_body=True) if changed else None)
        return [headers, first, *(rest for _ in self._chunks[1:])]

    async def _admit(self, request: InferenceRequest, prompt_tokens: int) -> int | None:
        """Admit the request under its key's limits; the output cap to set when the key can
        afford less than the default and the request named none (None: leave it)."""
        grant, enforcement = self._grant, self._context.enforcement
        if grant is None or enforcement is None:
            return None
        meter = UsageMeter(
            enforcement.accounting,
            grant.key_id,
            self._request_id or f"anonymous-{uuid.uuid4().hex}",
            request.model,
            prompt_tokens,
        )
        default = self._context.default_max_tokens
        rpm = grant.rpm if enforcement.rate_limit_inline else None
        try:
            admitted = await meter.admit(rpm, grant.tpm, request.max_output_tokens, default)
        except ApiError as error:
            if error.code == RATE_REFUSAL_CODE:
                self._context.metrics.rate_decisions.labels("over_limit").inc()
            raise
        self._meter = meter
        if enforcement.rate_limit_inline:
            self._standing = admitted_headers(admitted)
            decision = "unlimited" if admitted.requests is None else "ok"
            self._context.metrics.rate_decisions.labels(decision).inc()
        capped = request.max_output_tokens is None and admitted.output_tokens < default
        return admitted.output_tokens if capped else None

    def released(self) -> None:
        """The request phase's answers have been written to Envoy: from now on the
        request may reach an engine. (Until then it cannot: Envoy holds it, and if Envoy
        gave up waiting, its fail-closed 503 went out instead.)"""
        self._released = True

    def note_attributes(self, request: ext.ProcessingRequest) -> None:
        """Keep what Envoy's attributes say of the request (the replica, on the response)."""
        if upstream := attribute(request, wire.UPSTREAM_ADDRESS_ATTRIBUTE):
            self._upstream = upstream

    async def on_response_headers(self, headers: ext.HttpHeaders) -> Responses:
        """A stream's first text comes with its headers; a unary answer or an error is
        whole by now, and its headers say what the engine used and its checks found."""
        status = header_value(headers, ":status")
        self._response_status = int(status) if status.isdigit() else 0
        if self._group is not None:
            self._group.first_token()
        streaming = self._stream and self._response_status == 200
        record = self._record
        if record is not None:
            record.status = self._response_status
            record.engine_reported(*engine_times(headers))
            if streaming:
                record.first_text = time.perf_counter()
        set_headers = [set_header(name, value) for name, value in self._standing]
        if streaming:
            set_headers.append(set_header("cache-control", "no-cache"))
        mutation = ext.HeaderMutation(set_headers=set_headers, remove_headers=RESPONSE_REMOVED)
        answer = _response_headers_answer(ext.CommonResponse(header_mutation=mutation))
        if self._request is None or streaming:
            return [answer]
        if self._response_status != 200:
            self._settle((0, 0))  # the engine answered nothing
            self._failed(upstream_error(self._response_status, "").code)
        else:
            self._note_output(headers)
            self._settle(reported_usage(headers))
        if (metadata := self._end()) is not None:
            answer.dynamic_metadata.CopyFrom(dynamic_metadata(metadata))
        return [answer]

    async def on_response_trailers(self, trailers: ext.HttpTrailers) -> Responses:
        if self._finished or self._record is None:
            return [_trailers_answer()]
        self._record.engine_reported(*engine_times(trailers))
        self._note_output(trailers)
        status = header_value(trailers, "grpc-status") or "0"
        if status != "0":
            self._failed(error_from_grpc_status(status, "").code)
        self._settle(reported_usage(trailers))
        return [_trailers_answer(self._end())]

    def _note_output(self, reported: Reported) -> None:
        """What the engine's output checks found (they run in the worker)."""
        redacted, blocked = output_findings(reported)
        metrics = self._context.metrics
        metrics.detected_categories(redacted, "output", "redact")
        if blocked is not None:
            metrics.detected_categories([blocked], "output", "block")
            self._failed(OUTPUT_BLOCKED)

    def _failed(self, reason: str) -> None:
        if self._record is not None:
            self._record.error = reason

    def _settle(self, usage: Usage | None) -> None:
        """Bill the engine's count; without one (the engine never got to report it), the
        prompt's estimate and no output."""
        if usage is not None and self._record is not None:
            self._record.prompt_tokens, self._record.completion_tokens = usage
        if self._meter is not None:
            self._meter.settle(usage)

    async def close(self) -> None:
        """The stream is over, however it ended. When the client left, this runs in a
        cancelled RPC: it only records, and bills in the background what the replica says
        it generated (the prompt's estimate when no replica is known). A request Envoy
        never let go on (it gave up waiting for these answers) is billed nothing."""
        if self._group is not None:
            self._group.release()
        record = self._record
        if record is not None:  # the response never ended
            record.status = record.status or CLOSED_BEFORE_RESPONSE
            record.error = CLIENT_DISCONNECTED
            self._observe()
        meter, enforcement = self._meter, self._context.enforcement
        if meter is None or meter.settled or enforcement is None:
            return
        if not self._released:
            meter.settle((0, 0))  # no engine was asked: nothing to bill
            return
        client = enforcement.engine_usage
        if client is None or not self._upstream:
            meter.settle(None)
            return
        meter.settle_when(self._engine_usage(client, self._upstream, meter.request_id))

    @staticmethod
    async def _engine_usage(
        client: EngineUsageClient, address: str, request_id: str
    ) -> Usage | None:
        usage = await client.request_usage(address, request_id, ENGINE_USAGE_WAIT_S)
        if usage is None:
            return None
        return usage.prompt_tokens, usage.completion_tokens

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

    def _end(self) -> Namespaces | None:
        """The response is over: stamp the record, observe it, and give its metadata."""
        self._finished = True
        if self._group is not None:
            self._group.release()
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
