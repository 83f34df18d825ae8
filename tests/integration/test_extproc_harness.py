"""What the `test_extproc_*` and `test_key_check` modules share: a gateway over a real Redis
(real keys in a KeyStore, real admission and settlements) and the ext_proc messages Envoy
sends; with the tests of `safety_filter.extproc.messages`' own conversions.

Integration layer (test support). Each test makes its own keys and request ids, never a flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import json_format
from redis.asyncio import Redis

from frugal import wire
from frugal.accounting import windows
from frugal.accounting.admission import Admission
from frugal.accounting.ledger import UsageRow, read_usage
from frugal.accounting.settlements import Settlements
from frugal.accounting.token_budget import TokenBudget, WindowUsage, reservation_key
from frugal.content_checks import DEFAULT_POLICY, ContentPolicy
from frugal.engine_usage import EngineUsageClient
from frugal.keys import KeyStore, Peppers
from safety_filter.authz.key_check import KeyCheck
from safety_filter.errors import invalid_request, model_not_found, tokens_exhausted
from safety_filter.extproc.messages import header_value, immediate_response
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.policies import PolicyBook
from safety_filter.extproc.processor import (
    Enforcement,
    ProcessorContext,
    RequestProcessor,
    Responses,
)
from safety_filter.extproc.usage import Accounting
from tests.helpers.redis_server import RedisServer

PEPPERS = Peppers({1: b"e" * 32})
MODELS = frozenset({"sim-echo", "sim-mixtral"})
CHAT = "/v1/chat/completions"
EMAIL = "jane.doe@example.com"
BLOCKING = DEFAULT_POLICY.model_copy(update={"prompt_action": "block", "output_action": "block"})
LOGGING = DEFAULT_POLICY.model_copy(update={"prompt_action": "log"})
UNCHECKED = ContentPolicy(detectors=(), prompt_action="log")
# How long a test waits for its settlements to reach Redis.
SETTLE_WAIT_S = 5.0


@dataclass(frozen=True)
class Key:
    """A real key in the gateway's KeyStore, and its plaintext (which only the caller has)."""

    id: str
    plaintext: str

    def headers(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.plaintext}")]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def in_one_window(seconds: float = 2.0) -> None:
    """Wait, if need be, until the next `seconds` lie in one token window: a test that
    compares what requests left of a key's minute must not see the minute turn."""
    left = windows.WINDOW_S - windows.elapsed_in_window(time.time())
    if left < seconds:
        await asyncio.sleep(left + 0.01)


@dataclass
class Gateway:
    """One safety filter's shared parts, as `safety_filter.server` wires them."""

    redis: Redis
    store: KeyStore
    budget: TokenBudget
    admission: Admission
    settlements: Settlements
    caller: Key  # unlimited, every model

    async def new_key(
        self,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        expires_at: datetime | None = None,
        tenant: str = "acme",
    ) -> Key:
        record, plaintext = await self.store.create(
            "test", tenant, models=models, rpm=rpm, tpm=tpm, expires_at=expires_at
        )
        return Key(record.id, plaintext)

    def accounting(self, admitting: int = 256, admit_wait_s: float = 1.0) -> Accounting:
        return Accounting(self.admission, self.settlements, admitting, admit_wait_s)

    def context(
        self,
        policy: ContentPolicy = DEFAULT_POLICY,
        *,
        max_body_bytes: int = 4096,
        metrics: ExtProcMetrics | None = None,
        accounting: Accounting | None = None,
        store: KeyStore | None = None,
        rate_limit_inline: bool = True,
        engine_usage: EngineUsageClient | None = None,
        default_max_tokens: int = 4096,
    ) -> ProcessorContext:
        metrics = metrics or ExtProcMetrics()
        enforcement = Enforcement(
            KeyCheck(store or self.store, metrics.registry),
            accounting or self.accounting(),
            rate_limit_inline=rate_limit_inline,
            engine_usage=engine_usage,
        )
        policies = PolicyBook(policy, {})
        return ProcessorContext(
            MODELS, max_body_bytes, policies, enforcement, default_max_tokens, metrics
        )

    def processor(self, policy: ContentPolicy = DEFAULT_POLICY, **options: Any) -> RequestProcessor:
        return RequestProcessor(self.context(policy, **options))

    async def settled(self, settlements: Settlements | None = None) -> None:
        """Every settlement submitted so far has reached Redis."""
        settlements = settlements or self.settlements
        assert await settlements.drain(SETTLE_WAIT_S), f"{settlements.pending} still open"

    async def window_of(self, key: Key, request_id: str) -> WindowUsage:
        """The token window a request reserved from (robust to the minute turning meanwhile)."""
        window = await self.redis.hget(reservation_key(key.id, request_id), "window")
        assert window is not None, "the request reserved nothing"
        return await self.budget.window_usage(key.id, now=float(window))

    async def reserved_anything(self, key: Key, request_id: str) -> bool:
        return bool(await self.redis.exists(reservation_key(key.id, request_id)))

    async def usage_row(self, key: Key) -> UsageRow:
        await self.settled()
        rows = await read_usage(self.redis, key.id)
        assert len(rows) == 1, rows
        return rows[0]


@contextlib.asynccontextmanager
async def open_gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    """A gateway over the session's Redis; its settlements are drained before it closes."""
    redis = Redis.from_url(redis_server.url)
    store = KeyStore(redis, PEPPERS)
    budget = TokenBudget(redis)
    settlements = Settlements(budget)
    record, plaintext = await store.create("caller", "acme")
    try:
        yield Gateway(
            redis, store, budget, Admission(redis), settlements, Key(record.id, plaintext)
        )
    finally:
        await settlements.drain(SETTLE_WAIT_S)
        await redis.aclose()


# --- messages Envoy sends, and the processor's answers -----------------------------------------


def header_map(pairs: Sequence[tuple[str, str]]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]
    )


def request_headers(
    path: str,
    key: Key | None,
    *extra: tuple[str, str],
    request_id: str | None = None,
    end_of_stream: bool = False,
) -> ext.HttpHeaders:
    """A request's headers; `key` None sends no credential."""
    pairs = [(":method", "POST"), (":path", path), ("content-type", "application/json")]
    if key is not None:
        pairs += key.headers()
    pairs += [*extra, (wire.REQUEST_ID_HEADER, request_id or new_id("req"))]
    return ext.HttpHeaders(headers=header_map(pairs), end_of_stream=end_of_stream)


def chat(model: str = "sim-echo", content: object = "Hi", **fields: object) -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(fields)
    return json.dumps(body).encode()


def set_headers(mutation: ext.HeaderMutation) -> dict[str, str]:
    return {o.header.key: o.header.raw_value.decode() for o in mutation.set_headers}


@dataclass(frozen=True)
class RequestAnswer:
    """What the processor answered a request's headers and body chunks with."""

    headers: ext.ProcessingResponse
    bodies: list[ext.ProcessingResponse]  # one per chunk, in order

    @property
    def mutation(self) -> ext.HeaderMutation:
        return self.headers.request_headers.response.header_mutation

    @property
    def set_headers(self) -> dict[str, str]:
        return set_headers(self.mutation)

    @property
    def rewritten(self) -> bool:
        return bool(self.bodies[0].request_body.response.HasField("body_mutation"))

    def forwarded(self) -> dict[str, Any]:
        """The body the request goes on with (the processor must have rewritten it)."""
        first, *rest = (b.request_body.response.body_mutation for b in self.bodies)
        assert first.WhichOneof("mutation") == "body", "the request body was not rewritten"
        assert all(m.clear_body for m in rest), rest
        body: dict[str, Any] = json.loads(first.body)
        return body


async def send_request(
    processor: RequestProcessor,
    key: Key | None,
    body: bytes,
    *extra: tuple[str, str],
    path: str = CHAT,
    request_id: str | None = None,
    chunks: int = 1,
    delivered: bool = True,
) -> RequestAnswer:
    """The request's headers, then its body in `chunks` pieces, as Envoy sends them without
    waiting for answers (STREAMED, send_body_without_waiting_for_header_response): an
    inference request is answered once, headers first, when its last chunk is in. Then,
    as the service does once grpc has written them, the answers are marked released;
    with `delivered` False they never reached Envoy (it had given up waiting)."""
    headers = request_headers(path, key, *extra, request_id=request_id)
    responses = list(await processor.on_request_headers(headers))
    size = -(-len(body) // chunks)
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        responses += await processor.on_request_body(ext.HttpBody(body=piece, end_of_stream=last))
    first, *bodies = responses
    assert first.WhichOneof("response") == "request_headers", responses
    assert len(bodies) == len(pieces), responses
    assert all(b.WhichOneof("response") == "request_body" for b in bodies), responses
    if delivered:
        processor.released()
    return RequestAnswer(first, bodies)


def response_headers(status: int, *extra: tuple[str, str]) -> ext.HttpHeaders:
    pairs = [
        (":status", str(status)),
        ("content-type", "application/json"),
        ("grpc-accept-encoding", "identity"),
        *extra,
    ]
    return ext.HttpHeaders(headers=header_map(pairs))


def engine_usage_headers(prompt: int, completion: int) -> tuple[tuple[str, str], ...]:
    """What a worker reports of a unary answer in its headers (or a stream's trailers)."""
    return ((wire.PROMPT_TOKENS, str(prompt)), (wire.COMPLETION_TOKENS, str(completion)))


def trailers(*pairs: tuple[str, str], **named: str) -> ext.HttpTrailers:
    given = [*pairs, *((k.replace("_", "-"), v) for k, v in named.items())]
    return ext.HttpTrailers(trailers=header_map(given))


def usage_trailers(prompt: int, completion: int) -> ext.HttpTrailers:
    return trailers(("grpc-status", "0"), *engine_usage_headers(prompt, completion))


def upstream_attributes(address: str) -> ext.ProcessingRequest:
    """A ProcessingRequest carrying the `upstream.address` attribute (on response headers)."""
    request = ext.ProcessingRequest()
    request.attributes[wire.EXT_PROC_ATTRIBUTES_NAMESPACE].update(
        {wire.UPSTREAM_ADDRESS_ATTRIBUTE: address}
    )
    return request


async def started(
    processor: RequestProcessor,
    key: Key,
    *,
    request_id: str | None = None,
    stream: bool = True,
    content: object = "Hi",
    **fields: object,
) -> RequestProcessor:
    """`processor` past the request phases of a chat call and a stream's 200 headers."""
    if stream:
        fields["stream"] = True
    await send_request(processor, key, chat("sim-echo", content, **fields), request_id=request_id)
    if stream:
        only(await processor.on_response_headers(response_headers(200)))
    return processor


def only(responses: Responses) -> ext.ProcessingResponse:
    assert len(responses) == 1, responses
    return responses[0]


def request_metadata(response: ext.ProcessingResponse) -> dict[str, Any]:
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert set(metadata) <= {wire.REQUEST_METADATA_NAMESPACE, wire.ERROR_METADATA_NAMESPACE}, (
        metadata
    )
    return dict(metadata.get(wire.REQUEST_METADATA_NAMESPACE, {}))


def sample(metrics: ExtProcMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- safety_filter.extproc.messages -----------------------------------------------------------


def test_header_value_reads_raw_value_then_value() -> None:
    headers = ext.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key="a", raw_value=b"raw"),
                base_pb2.HeaderValue(key="b", value="plain"),
            ]
        )
    )
    assert header_value(headers, "a") == "raw"
    assert header_value(headers, "b") == "plain"
    assert header_value(headers, "c") == ""
    assert header_value(trailers(grpc_status="7"), "grpc-status") == "7"


def test_immediate_response_carries_status_message_and_metadata() -> None:
    error = invalid_request("n: only n=1 is supported", "invalid_value")
    response = immediate_response(error)
    assert response.WhichOneof("response") == "immediate_response"
    assert response.immediate_response.status.code == 400
    assert response.immediate_response.body == b"n: only n=1 is supported"
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        wire.ERROR_METADATA_NAMESPACE: {"type": "invalid_request_error", "code": "invalid_value"}
    }


def test_immediate_response_for_a_missing_model() -> None:
    response = immediate_response(model_not_found("gpt-4"))
    assert response.immediate_response.status.code == 404
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata[wire.ERROR_METADATA_NAMESPACE]["code"] == "model_not_found"


def test_immediate_response_carries_the_error_headers() -> None:
    headers = (("x-ratelimit-limit-tokens", "100"), ("retry-after", "13"))
    response = immediate_response(tokens_exhausted(100, 7, 12.4, headers))
    assert response.immediate_response.status.code == 429
    assert set_headers(response.immediate_response.headers) == dict(headers)
