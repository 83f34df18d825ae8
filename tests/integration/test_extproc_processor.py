"""RequestProcessor driven phase by phase with real ext_proc messages, as Envoy sends them.

Integration layer: the token budget and usage ledger are a real Redis (the session's
`redis_server`); each test uses its own key and request ids, never a flush.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import json_format
from redis.asyncio import Redis

from frugal import wire
from frugal.accounting.ledger import UsageRow, read_usage
from frugal.accounting.token_budget import TokenBudget, WindowUsage, reservation_key
from frugal.content_checks import DEFAULT_POLICY, ContentPolicy
from frugal.request_log import REQUEST_ID
from safety_filter.errors import (
    ApiError,
    invalid_request,
    model_not_allowed,
    model_not_found,
    tokens_exhausted,
)
from safety_filter.extproc.messages import header_value, immediate_response
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.policies import PolicyBook
from safety_filter.extproc.processor import (
    ProcessorContext,
    RequestProcessor,
    Responses,
)
from safety_filter.extproc.usage import estimate_tokens
from tests.helpers.redis_server import RedisServer

MODELS = frozenset({"sim-echo", "sim-mixtral"})
CHAT = "/v1/chat/completions"
EMAIL = "jane.doe@example.com"
BLOCKING = DEFAULT_POLICY.model_copy(update={"prompt_action": "block", "output_action": "block"})
LOGGING = DEFAULT_POLICY.model_copy(update={"prompt_action": "log"})
UNCHECKED = ContentPolicy(detectors=(), prompt_action="log")


@dataclass(frozen=True)
class Key:
    """What ext_authz says of the caller's key, as x-frugal-key-* request headers."""

    id: str
    models: str = "*"
    tpm: int | None = None

    def headers(self) -> list[tuple[str, str]]:
        pairs = [(wire.KEY_ID_HEADER, self.id), (wire.KEY_MODELS_HEADER, self.models)]
        if self.tpm is not None:
            pairs.append((wire.KEY_TPM_HEADER, str(self.tpm)))
        return pairs


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_key(models: str = "*", tpm: int | None = None) -> Key:
    return Key(new_id("key"), models, tpm)


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def budget(redis: Redis) -> TokenBudget:
    return TokenBudget(redis)


def make_processor(
    budget: TokenBudget,
    policy: ContentPolicy = DEFAULT_POLICY,
    max_body_bytes: int = 4096,
    metrics: ExtProcMetrics | None = None,
) -> RequestProcessor:
    policies = PolicyBook(policy, {})
    return RequestProcessor(
        ProcessorContext(
            MODELS, max_body_bytes, policies, budget, metrics=metrics or ExtProcMetrics()
        )
    )


def header_map(pairs: Sequence[tuple[str, str]]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]
    )


def request_headers(
    path: str,
    *,
    key: Key | None = None,
    request_id: str | None = None,
    end_of_stream: bool = False,
) -> ext.HttpHeaders:
    pairs = [(":method", "POST"), (":path", path), ("content-type", "application/json")]
    if key is not None:
        pairs += key.headers()
    pairs.append((wire.REQUEST_ID_HEADER, request_id or new_id("req")))
    return ext.HttpHeaders(headers=header_map(pairs), end_of_stream=end_of_stream)


def response_headers(status: int, *extra: tuple[str, str]) -> ext.HttpHeaders:
    pairs = [
        (":status", str(status)),
        ("content-type", "application/json"),
        ("grpc-accept-encoding", "identity"),
        *extra,
    ]
    return ext.HttpHeaders(headers=header_map(pairs))


def trailers(**pairs: str) -> ext.HttpTrailers:
    return ext.HttpTrailers(
        trailers=header_map([(k.replace("_", "-"), v) for k, v in pairs.items()])
    )


def usage_trailers(prompt: int, completion: int) -> ext.HttpTrailers:
    return trailers(
        grpc_status="0",
        x_frugal_prompt_tokens=str(prompt),
        x_frugal_completion_tokens=str(completion),
    )


def chat_body(model: str = "sim-echo", content: object = "Hi", **fields: object) -> ext.HttpBody:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(fields)
    return ext.HttpBody(body=json.dumps(body).encode(), end_of_stream=True)


def only(responses: Responses) -> ext.ProcessingResponse:
    assert len(responses) == 1, responses
    return responses[0]


def set_headers(mutation: ext.HeaderMutation) -> dict[str, str]:
    return {o.header.key: o.header.raw_value.decode() for o in mutation.set_headers}


def streamed(response: ext.ProcessingResponse) -> ext.StreamedBodyResponse:
    assert response.WhichOneof("response") == "response_body"
    result: ext.StreamedBodyResponse = (
        response.response_body.response.body_mutation.streamed_response
    )
    return result


def sse_json(chunk: bytes) -> Any:
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk
    return json.loads(chunk[len(b"data: ") : -2])


def sse_events(stream: bytes) -> list[bytes]:
    """Each `data: ...` payload of a complete SSE byte stream."""
    assert stream.endswith(b"\n\n"), stream
    events = stream[:-2].split(b"\n\n")
    assert all(event.startswith(b"data: ") for event in events), events
    return [event[len(b"data: ") :] for event in events]


def chunk_event(text: str | None = None, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, str] = {"role": "assistant"} if role else {}
    if text is not None:
        delta["content"] = text
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "sim-echo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def chat_completion(content: str, usage: tuple[int, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "sim-echo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        prompt, completion = usage
        body["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return json.dumps(body).encode()


async def started(
    processor: RequestProcessor,
    *,
    key: Key | None = None,
    request_id: str | None = None,
    stream: bool = True,
    status: int = 200,
    content: object = "Hi",
    **fields: object,
) -> RequestProcessor:
    """`processor` past the request phases of a chat call and the response headers."""
    only(await processor.on_request_headers(request_headers(CHAT, key=key, request_id=request_id)))
    if stream:
        fields["stream"] = True
    body = chat_body("sim-echo", content, **fields)
    only(await processor.on_request_body(body))
    only(await processor.on_response_headers(response_headers(status)))
    return processor


async def window_of(redis: Redis, budget: TokenBudget, key: Key, request_id: str) -> WindowUsage:
    """The token window a request reserved from (robust to the minute turning meanwhile)."""
    window = await redis.hget(reservation_key(key.id, request_id), "window")
    assert window is not None, "the request reserved nothing"
    return await budget.window_usage(key.id, now=float(window))


async def usage_row(redis: Redis, key: Key) -> UsageRow:
    rows = await read_usage(redis, key.id)
    assert len(rows) == 1, rows
    return rows[0]


# --- messages ---------------------------------------------------------------------------------


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
    response = immediate_response(tokens_exhausted(100, 7, 12.4))
    assert response.immediate_response.status.code == 429
    assert set_headers(response.immediate_response.headers) == {
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "7",
        "x-ratelimit-reset-tokens": "12s",
    }


# --- request phases ---------------------------------------------------------------------------


async def test_a_streaming_chat_request_is_routed_and_rewritten(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    first = only(await processor.on_request_headers(request_headers(CHAT)))
    assert first.WhichOneof("response") == "request_headers"
    assert not first.request_headers.HasField("response")

    response = only(await processor.on_request_body(chat_body("sim-mixtral", stream=True)))
    assert response.WhichOneof("response") == "request_body"
    common = response.request_body.response
    assert common.clear_route_cache is True
    headers = set_headers(common.header_mutation)
    assert headers.pop("content-length") == str(len(common.body_mutation.body))
    assert headers == {wire.MODEL_HEADER: "sim-mixtral", ":path": "/v1/chat/completions:stream"}
    for option in common.header_mutation.set_headers:
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    # The default policy checks output: the engine gets the checks with the request.
    assert "output_checks" in json.loads(common.body_mutation.body)


async def test_a_non_streaming_request_keeps_its_path(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers("/v1/completions?x=1")))
    body = ext.HttpBody(
        body=json.dumps({"model": "sim-echo", "prompt": "hi"}).encode(), end_of_stream=True
    )
    common = only(await processor.on_request_body(body)).request_body.response
    assert set_headers(common.header_mutation) == {wire.MODEL_HEADER: "sim-echo"}
    assert common.clear_route_cache is True


async def test_an_unknown_model_is_refused_with_404(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body("gpt-4"))
    assert caught.value == model_not_found("gpt-4")
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    assert "`gpt-4`" in caught.value.message


async def test_a_model_the_key_may_not_use_is_refused_with_403(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    key = new_key(models="sim-echo")
    only(await processor.on_request_headers(request_headers(CHAT, key=key)))
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body("sim-mixtral"))
    assert (caught.value.status, caught.value.type, caught.value.code) == (
        403,
        "permission_error",
        "model_not_allowed",
    )
    assert "`sim-mixtral`" in caught.value.message


@pytest.mark.parametrize("models", ["sim-echo", "sim-mixtral,sim-echo", "*"])
async def test_a_model_the_key_may_use_is_routed(budget: TokenBudget, models: str) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT, key=new_key(models=models))))
    common = only(await processor.on_request_body(chat_body("sim-echo"))).request_body.response
    assert set_headers(common.header_mutation) == {wire.MODEL_HEADER: "sim-echo"}


async def test_an_invalid_body_is_refused_with_400(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body(temperature=3))
    assert caught.value.status == 400
    assert caught.value.message.startswith("temperature:")


async def test_a_body_over_the_limit_is_refused_with_413(budget: TokenBudget) -> None:
    processor = make_processor(budget, max_body_bytes=64)
    only(await processor.on_request_headers(request_headers(CHAT)))
    body = chat_body(user="u" * 64)
    assert len(body.body) > 64
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(body)
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")
    assert "64 bytes" in caught.value.message


async def test_a_body_at_the_limit_is_accepted(budget: TokenBudget) -> None:
    body = chat_body()
    processor = make_processor(budget, max_body_bytes=len(body.body))
    only(await processor.on_request_headers(request_headers(CHAT)))
    common = only(await processor.on_request_body(body)).request_body.response
    assert set_headers(common.header_mutation)[wire.MODEL_HEADER] == "sim-echo"


async def test_an_inference_call_without_a_body_is_refused(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    with pytest.raises(ApiError) as caught:
        await processor.on_request_headers(request_headers(CHAT, end_of_stream=True))
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


async def test_another_path_without_a_body_passes(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    headers = request_headers("/v1/models", end_of_stream=True)
    response = only(await processor.on_request_headers(headers))
    assert response.WhichOneof("response") == "request_headers"


async def test_a_non_inference_body_passes_untouched(budget: TokenBudget) -> None:
    processor = make_processor(budget, max_body_bytes=16)
    only(await processor.on_request_headers(request_headers("/v1/foo")))
    body = ext.HttpBody(body=b"not json at all, and long " + EMAIL.encode())
    response = only(await processor.on_request_body(body))
    assert response.WhichOneof("response") == "request_body"
    assert not response.request_body.HasField("response")


# --- prompt checks ----------------------------------------------------------------------------


async def test_an_email_in_the_prompt_is_redacted_in_the_forwarded_body(
    budget: TokenBudget,
) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    body = chat_body(content=f"Write to {EMAIL}, Grüße", stream=True)
    common = only(await processor.on_request_body(body)).request_body.response
    new_body = common.body_mutation.body
    assert EMAIL.encode() not in new_body
    forwarded = json.loads(new_body)
    assert forwarded["messages"] == [
        {"role": "user", "content": "Write to [REDACTED:EMAIL], Grüße"}
    ]
    assert forwarded["stream"] is True
    headers = set_headers(common.header_mutation)
    assert headers["content-length"] == str(len(new_body))
    assert headers[wire.MODEL_HEADER] == "sim-echo"
    assert headers[":path"] == "/v1/chat/completions:stream"
    assert common.clear_route_cache is True


async def test_an_email_in_a_text_part_is_redacted(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": f"mail {EMAIL}"}]
    common = only(await processor.on_request_body(chat_body(content=parts))).request_body.response
    forwarded = json.loads(common.body_mutation.body)
    assert forwarded["messages"][0]["content"] == [
        {"type": "text", "text": "hello"},
        {"type": "text", "text": "mail [REDACTED:EMAIL]"},
    ]


async def test_a_block_policy_refuses_the_prompt_without_echoing_it(budget: TokenBudget) -> None:
    processor = make_processor(budget, BLOCKING)
    key = new_key(tpm=1_000_000)
    only(await processor.on_request_headers(request_headers(CHAT, key=key)))
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body(content=f"Write to {EMAIL}"))
    error = caught.value
    assert (error.status, error.type, error.code) == (
        400,
        "invalid_request_error",
        "content_policy_violation",
    )
    assert "EMAIL" in error.message
    assert EMAIL not in error.message and "jane" not in error.message
    # A refused prompt reserves nothing.
    usage = await budget.window_usage(key.id)
    assert (usage.used, usage.reserved) == (0, 0)


async def test_a_log_policy_forwards_the_prompt_unchanged(budget: TokenBudget) -> None:
    processor = make_processor(budget, LOGGING)
    only(await processor.on_request_headers(request_headers(CHAT)))
    common = only(
        await processor.on_request_body(chat_body(content=f"Write to {EMAIL}"))
    ).request_body.response
    assert not common.HasField("body_mutation")
    assert set_headers(common.header_mutation) == {wire.MODEL_HEADER: "sim-echo"}


# --- token budget -----------------------------------------------------------------------------


async def test_a_request_reserves_its_prompt_estimate_plus_max_tokens(
    redis: Redis, budget: TokenBudget
) -> None:
    key, request_id = new_key(tpm=1000), new_id("req")
    processor = make_processor(budget)
    content = "x" * 40
    only(await processor.on_request_headers(request_headers(CHAT, key=key, request_id=request_id)))
    only(await processor.on_request_body(chat_body(content=content, max_tokens=50)))
    usage = await window_of(redis, budget, key, request_id)
    assert (usage.used, usage.reserved) == (0, estimate_tokens(40) + 50)
    assert estimate_tokens(40) == 10


async def test_a_key_without_enough_tokens_is_refused_with_429(budget: TokenBudget) -> None:
    key = new_key(tpm=100)
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT, key=key)))
    # 40 characters estimate 10 prompt tokens; with 91 to generate that is one too many.
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body(content="x" * 40, max_tokens=91))
    error = caught.value
    assert (error.status, error.type, error.code) == (
        429,
        "rate_limit_error",
        "tokens_per_minute_exceeded",
    )
    headers = dict(error.headers)
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert headers["x-ratelimit-remaining-tokens"] == "100"
    assert headers["x-ratelimit-reset-tokens"].endswith("s")
    usage = await budget.window_usage(key.id)
    assert (usage.used, usage.reserved) == (0, 0)

    # Exactly the limit fits.
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT, key=key)))
    only(await processor.on_request_body(chat_body(content="x" * 40, max_tokens=90)))


async def test_a_stream_settles_the_trailer_counts(redis: Redis, budget: TokenBudget) -> None:
    key, request_id = new_key(tpm=10_000), new_id("req")
    processor = await started(
        make_processor(budget), key=key, request_id=request_id, max_tokens=100
    )
    await processor.on_response_trailers(usage_trailers(17, 23))
    row = await usage_row(redis, key)
    assert (row.model, row.requests, row.prompt_tokens, row.completion_tokens) == (
        "sim-echo",
        1,
        17,
        23,
    )
    usage = await window_of(redis, budget, key, request_id)
    assert (usage.used, usage.reserved) == (40, 0)


async def test_settlement_happens_once_when_close_follows_trailers(
    redis: Redis, budget: TokenBudget
) -> None:
    key, request_id = new_key(), new_id("req")
    processor = await started(make_processor(budget), key=key, request_id=request_id)
    await processor.on_response_trailers(usage_trailers(3, 4))
    await processor.close()
    await processor.close()
    row = await usage_row(redis, key)
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, 3, 4)
    usage = await window_of(redis, budget, key, request_id)
    assert (usage.used, usage.reserved) == (7, 0)


async def test_a_unary_body_settles_its_usage(redis: Redis, budget: TokenBudget) -> None:
    key, request_id = new_key(tpm=10_000), new_id("req")
    processor = await started(make_processor(budget), key=key, request_id=request_id, stream=False)
    body = chat_completion("Hello there.", usage=(9, 5))
    answer = only(await processor.on_response_body(ext.HttpBody(body=body)))
    assert json.loads(new_body(answer)) == json.loads(body)
    end = only(await processor.on_response_trailers(trailers(grpc_status="0")))
    assert end.WhichOneof("response") == "response_trailers"
    await processor.close()
    row = await usage_row(redis, key)
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, 9, 5)
    usage = await window_of(redis, budget, key, request_id)
    assert (usage.used, usage.reserved) == (14, 0)


async def test_a_stream_ended_early_settles_the_prompt_estimate(
    redis: Redis, budget: TokenBudget
) -> None:
    key, request_id = new_key(tpm=10_000), new_id("req")
    processor = await started(
        make_processor(budget), key=key, request_id=request_id, content="y" * 40
    )
    await processor.close()  # the client went away: Envoy reset the engine, no trailers
    row = await usage_row(redis, key)
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, estimate_tokens(40), 0)
    usage = await window_of(redis, budget, key, request_id)
    assert (usage.used, usage.reserved) == (10, 0)


async def test_an_engine_error_charges_nothing(redis: Redis, budget: TokenBudget) -> None:
    key, request_id = new_key(tpm=10_000), new_id("req")
    processor = await started(make_processor(budget), key=key, request_id=request_id, status=503)
    body = ext.HttpBody(body=b'{"code":14,"message":"down"}', end_of_stream=True)
    only(await processor.on_response_body(body))
    await processor.close()
    row = await usage_row(redis, key)
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, 0, 0)
    usage = await window_of(redis, budget, key, request_id)
    assert (usage.used, usage.reserved) == (0, 0)


# --- output checks go to the engine -----------------------------------------------------------


def forwarded_body(response: ext.ProcessingResponse) -> dict[str, Any]:
    mutation = response.request_body.response.body_mutation
    assert mutation.body, "the request body was not rewritten"
    body: dict[str, Any] = json.loads(mutation.body)
    assert set_headers(response.request_body.response.header_mutation)["content-length"] == str(
        len(mutation.body)
    )
    return body


async def test_a_stream_carries_its_output_checks_to_the_engine(budget: TokenBudget) -> None:
    policy = ContentPolicy(detectors=("EMAIL", "BLOCKLIST"), prompt_action="log",
                           output_action="block", blocklist=("Project Zeus",))  # fmt: skip
    processor = make_processor(budget, policy)
    only(await processor.on_request_headers(request_headers(CHAT)))
    response = only(await processor.on_request_body(chat_body(stream=True)))
    assert forwarded_body(response)["output_checks"] == {
        "detectors": ["EMAIL", "BLOCKLIST"], "action": "block", "blocklist": ["Project Zeus"],
    }  # fmt: skip


@pytest.mark.parametrize("stream", [True, False])
async def test_output_checks_a_client_sends_are_dropped(budget: TokenBudget, stream: bool) -> None:
    processor = make_processor(budget, UNCHECKED)
    only(await processor.on_request_headers(request_headers(CHAT)))
    forged = {"detectors": [], "action": "redact"}
    response = only(await processor.on_request_body(chat_body(stream=stream, output_checks=forged)))
    assert "output_checks" not in forwarded_body(response)


async def test_a_stream_with_checks_replaces_the_clients_own(budget: TokenBudget) -> None:
    processor = make_processor(budget, LOGGING)
    only(await processor.on_request_headers(request_headers(CHAT)))
    forged = {"detectors": ["EMAIL"], "action": "redact"}
    response = only(await processor.on_request_body(chat_body(stream=True, output_checks=forged)))
    checks = forwarded_body(response)["output_checks"]
    assert checks["detectors"] == list(DEFAULT_POLICY.detectors)


async def test_a_unary_request_sends_no_checks(budget: TokenBudget) -> None:
    processor = make_processor(budget, LOGGING)
    only(await processor.on_request_headers(request_headers(CHAT)))
    response = only(await processor.on_request_body(chat_body()))
    assert not response.request_body.response.HasField("body_mutation")


# --- response phases --------------------------------------------------------------------------


def new_body(response: ext.ProcessingResponse) -> bytes:
    """The body an answer to a (BUFFERED) response body puts in place of the old one."""
    assert response.WhichOneof("response") == "response_body"
    mutation = response.response_body.response.body_mutation
    assert mutation.WhichOneof("mutation") == "body", mutation
    return bytes(mutation.body)


async def test_a_started_stream_takes_its_body_off_the_processor(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    only(await processor.on_request_body(chat_body(stream=True)))
    response = only(await processor.on_response_headers(response_headers(200)))
    assert response.WhichOneof("response") == "response_headers"
    mutation = response.response_headers.response.header_mutation
    assert set_headers(mutation) == {"cache-control": "no-cache"}
    assert list(mutation.remove_headers) == ["grpc-status", "grpc-message", "grpc-accept-encoding"]
    mode = response.mode_override
    assert (mode.response_body_mode, mode.response_trailer_mode) == (
        processing_mode_pb2.ProcessingMode.NONE,
        processing_mode_pb2.ProcessingMode.SEND,
    )


@pytest.mark.parametrize(("stream", "status"), [(False, 200), (True, 400), (False, 503)])
async def test_whole_bodies_stay_and_lose_their_length(
    budget: TokenBudget, stream: bool, status: int
) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    only(await processor.on_request_body(chat_body(stream=stream)))
    response = only(await processor.on_response_headers(response_headers(status)))
    mutation = response.response_headers.response.header_mutation
    assert set_headers(mutation) == {}
    assert "content-length" in mutation.remove_headers and "grpc-status" in mutation.remove_headers
    assert not response.HasField("mode_override")


async def test_a_transcoder_error_body_becomes_openai_shaped(budget: TokenBudget) -> None:
    processor = await started(make_processor(budget), status=400)
    body = ext.HttpBody(body=b'{"code":3,"message":"n: bad"}', end_of_stream=True)
    last = only(await processor.on_response_body(body))
    assert json.loads(new_body(last)) == {
        "error": {"message": "n: bad", "type": "invalid_request_error", "code": "invalid_request"}
    }
    end = only(await processor.on_response_trailers(trailers()))
    assert end.WhichOneof("response") == "response_trailers"


async def test_an_error_body_followed_by_trailers_is_rewritten_at_once(
    budget: TokenBudget,
) -> None:
    processor = await started(make_processor(budget), stream=False, status=503)
    last = only(
        await processor.on_response_body(ext.HttpBody(body=b'{"code":14,"message":"down"}'))
    )
    assert json.loads(new_body(last)) == {
        "error": {"message": "down", "type": "server_error", "code": "service_unavailable"}
    }
    end = only(await processor.on_response_trailers(trailers(grpc_status="14")))
    assert end.WhichOneof("response") == "response_trailers"


async def test_an_openai_shaped_error_body_is_left_as_is(budget: TokenBudget) -> None:
    processor = await started(make_processor(budget), stream=False, status=404)
    original = b'{"error": {"message": "gone", "type": "invalid_request_error", "code": "x"}}'
    last = only(await processor.on_response_body(ext.HttpBody(body=original, end_of_stream=True)))
    assert new_body(last) == original


async def test_a_non_stream_success_body_passes_and_ends(budget: TokenBudget) -> None:
    processor = await started(make_processor(budget), stream=False)
    body = b'{"id":"c1","object":"chat.completion"}'
    response = only(await processor.on_response_body(ext.HttpBody(body=body, end_of_stream=True)))
    assert new_body(response) == body
    end = only(await processor.on_response_trailers(trailers(grpc_status="0")))
    assert end.WhichOneof("response") == "response_trailers"


async def test_a_non_inference_response_passes_through(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers("/v1/models", end_of_stream=True)))
    only(await processor.on_response_headers(response_headers(200)))
    body = b'{"data":[{"id":"' + EMAIL.encode() + b'"}]}'
    response = only(await processor.on_response_body(ext.HttpBody(body=body)))
    assert not response.response_body.response.HasField("body_mutation")


async def test_a_unary_answer_with_an_email_is_redacted(budget: TokenBudget) -> None:
    processor = await started(make_processor(budget), stream=False)
    body = chat_completion(f"Write to {EMAIL} soon", usage=(1, 2))
    last = only(await processor.on_response_body(ext.HttpBody(body=body, end_of_stream=True)))
    answer = json.loads(new_body(last))
    assert answer["choices"][0]["message"]["content"] == "Write to [REDACTED:EMAIL] soon"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["total_tokens"] == 3


async def test_a_unary_answer_under_block_is_withheld_as_content_filter(
    budget: TokenBudget,
) -> None:
    processor = await started(make_processor(budget, BLOCKING), stream=False)
    body = chat_completion(f"Write to {EMAIL} soon")
    last = only(await processor.on_response_body(ext.HttpBody(body=body)))
    assert EMAIL.encode() not in new_body(last)
    choice = json.loads(new_body(last))["choices"][0]
    assert choice["message"]["content"] == ""
    assert choice["finish_reason"] == "content_filter"


# --- request records: metrics, access-log metadata, engine time -------------------------------

ENGINE_TRAILERS = {"x_frugal_engine_ms": "12.5", "x_frugal_engine_ttft_ms": "3.25"}


def request_metadata(response: ext.ProcessingResponse) -> dict[str, Any]:
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert set(metadata) <= {wire.REQUEST_METADATA_NAMESPACE, wire.ERROR_METADATA_NAMESPACE}, (
        metadata
    )
    return dict(metadata.get(wire.REQUEST_METADATA_NAMESPACE, {}))


def sample(metrics: ExtProcMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_the_request_body_response_names_the_model(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT)))
    response = only(await processor.on_request_body(chat_body("sim-mixtral", stream=True)))
    assert request_metadata(response) == {"model": "sim-mixtral"}


async def test_the_request_id_tags_the_processors_log_lines(budget: TokenBudget) -> None:
    processor = make_processor(budget)
    only(await processor.on_request_headers(request_headers(CHAT, request_id="req-log-1")))
    assert REQUEST_ID.get() == "req-log-1"


async def test_a_stream_ends_with_engine_time_metadata_and_metrics(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = await started(make_processor(budget, metrics=metrics))
    end = only(
        await processor.on_response_trailers(
            trailers(grpc_status="0", x_frugal_prompt_tokens="17",
                     x_frugal_completion_tokens="23", **ENGINE_TRAILERS)
        )
    )  # fmt: skip
    assert end.WhichOneof("response") == "response_trailers"
    metadata = request_metadata(end)
    assert metadata.pop("ttft_ms") > 0
    assert metadata == {
        "model": "sim-echo",
        "prompt_tokens": 17,
        "completion_tokens": 23,
        "engine_ms": 12.5,
        "engine_ttft_ms": 3.25,
    }
    model = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **model, status="200") == 1
    for histogram in ("ttft", "tpot", "e2e"):
        assert sample(metrics, f"frugal_request_{histogram}_seconds_count", **model) == 1
    assert sample(metrics, "frugal_prompt_tokens_total", **model) == 17
    assert sample(metrics, "frugal_completion_tokens_total", **model) == 23
    assert metrics.registry.get_sample_value("frugal_request_errors_total", {}) is None
    # Observed once: the end of the ext_proc stream adds nothing.
    await processor.close()
    assert sample(metrics, "frugal_requests_total", **model, status="200") == 1


async def test_a_failed_stream_names_the_engine_error(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = await started(make_processor(budget, metrics=metrics))
    end = only(
        await processor.on_response_trailers(
            trailers(grpc_status="13", grpc_message="boom", **ENGINE_TRAILERS)
        )
    )
    assert request_metadata(end)["error"] == "engine_error"
    assert request_metadata(end)["engine_ms"] == 12.5
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_request_errors_total", **labels, reason="engine_error") == 1
    assert sample(metrics, "frugal_requests_total", **labels, status="200") == 1


async def test_an_unavailable_engine_mid_stream_is_service_unavailable(
    budget: TokenBudget,
) -> None:
    processor = await started(make_processor(budget))
    end = only(await processor.on_response_trailers(trailers(grpc_status="14")))
    assert request_metadata(end)["error"] == "service_unavailable"


async def test_a_unary_answer_takes_engine_time_from_its_headers(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = make_processor(budget, metrics=metrics)
    only(await processor.on_request_headers(request_headers(CHAT)))
    only(await processor.on_request_body(chat_body()))
    engine = ((wire.ENGINE_MS, "8.000"), (wire.ENGINE_TTFT_MS, "2.000"))
    only(await processor.on_response_headers(response_headers(200, *engine)))
    body = chat_completion("Hello there.", usage=(9, 5))
    last = only(await processor.on_response_body(ext.HttpBody(body=body, end_of_stream=True)))
    assert json.loads(new_body(last)) == json.loads(body)  # no comment in a JSON body
    metadata = request_metadata(last)
    assert metadata.pop("ttft_ms") > 0
    assert metadata == {
        "model": "sim-echo",
        "prompt_tokens": 9,
        "completion_tokens": 5,
        "engine_ms": 8.0,
        "engine_ttft_ms": 2.0,
    }
    model = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_request_ttft_seconds_count", **model) == 1
    assert sample(metrics, "frugal_request_tpot_seconds_count", **model) == 0
    assert sample(metrics, "frugal_request_e2e_seconds_count", **model) == 1
    assert sample(metrics, "frugal_completion_tokens_total", **model) == 5


async def test_a_refusal_before_the_model_is_known_counts_as_unknown(
    budget: TokenBudget,
) -> None:
    metrics = ExtProcMetrics()
    processor = make_processor(budget, metrics=metrics)
    only(await processor.on_request_headers(request_headers(CHAT)))
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body("gpt-4"))
    response = processor.refuse(caught.value)
    assert response.immediate_response.status.code == 404
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        wire.ERROR_METADATA_NAMESPACE: {"type": "invalid_request_error", "code": "model_not_found"},
        wire.REQUEST_METADATA_NAMESPACE: {"model": "unknown", "error": "model_not_found"},
    }
    labels = {"model_name": "unknown"}
    assert sample(metrics, "frugal_requests_total", **labels, status="404") == 1
    assert sample(metrics, "frugal_request_errors_total", **labels, reason="model_not_found") == 1
    assert sample(metrics, "frugal_extproc_refusals_total", code="model_not_found") == 1
    await processor.close()
    assert sample(metrics, "frugal_requests_total", **labels, status="404") == 1


async def test_a_refusal_of_a_served_model_is_counted_under_it(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = make_processor(budget, metrics=metrics)
    only(await processor.on_request_headers(request_headers(CHAT, key=new_key(models="sim-echo"))))
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(chat_body("sim-mixtral"))
    assert caught.value == model_not_allowed("sim-mixtral")
    response = processor.refuse(caught.value)
    assert request_metadata(response) == {"model": "sim-mixtral", "error": "model_not_allowed"}
    labels = {"model_name": "sim-mixtral", "reason": "model_not_allowed"}
    assert sample(metrics, "frugal_request_errors_total", **labels) == 1


async def test_a_stream_closed_before_its_end_counts_a_disconnect(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = await started(make_processor(budget, metrics=metrics))
    await processor.close()
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **labels, status="200") == 1
    errors = sample(metrics, "frugal_request_errors_total", **labels, reason="client_disconnected")
    assert errors == 1
    assert sample(metrics, "frugal_request_ttft_seconds_count", **labels) == 1
    assert sample(metrics, "frugal_request_e2e_seconds_count", **labels) == 0


async def test_a_request_closed_before_any_response_is_499(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = make_processor(budget, metrics=metrics)
    only(await processor.on_request_headers(request_headers(CHAT)))
    only(await processor.on_request_body(chat_body()))
    await processor.close()
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **labels, status="499") == 1


async def test_what_the_engines_checks_found_is_counted(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = await started(make_processor(budget, BLOCKING, metrics=metrics))
    end = only(
        await processor.on_response_trailers(
            trailers(grpc_status="0", x_frugal_output_redacted="EMAIL,PHONE,EMAIL",
                     x_frugal_output_blocked="SECRET")
        )
    )  # fmt: skip
    assert request_metadata(end)["error"] == "output_blocked"
    labels = {"model_name": "sim-echo", "reason": "output_blocked"}
    assert sample(metrics, "frugal_request_errors_total", **labels) == 1
    expected = {("EMAIL", "redact"): 2, ("PHONE", "redact"): 1, ("SECRET", "block"): 1}
    for (category, action), count in expected.items():
        labels = {"category": category, "direction": "output", "action": action}
        assert sample(metrics, "frugal_content_detections_total", **labels) == count


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "engine_error"), (503, "service_unavailable"), (429, "rate_limit_exceeded")],
)
async def test_a_failed_response_counts_the_code_the_client_gets(
    budget: TokenBudget, status: int, reason: str
) -> None:
    metrics = ExtProcMetrics()
    processor = await started(make_processor(budget, metrics=metrics), status=status)
    body = ext.HttpBody(body=b'{"code":13,"message":"x"}', end_of_stream=True)
    last = only(await processor.on_response_body(body))
    assert json.loads(new_body(last))["error"]["code"] == reason
    assert request_metadata(last) == {
        "model": "sim-echo",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "error": reason,
    }
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **labels, status=str(status)) == 1
    assert sample(metrics, "frugal_request_errors_total", **labels, reason=reason) == 1


async def test_other_paths_are_not_inference_requests(budget: TokenBudget) -> None:
    metrics = ExtProcMetrics()
    processor = make_processor(budget, metrics=metrics)
    only(await processor.on_request_headers(request_headers("/v1/models", end_of_stream=True)))
    only(await processor.on_response_headers(response_headers(200)))
    last = only(await processor.on_response_body(ext.HttpBody(body=b"{}", end_of_stream=True)))
    assert not last.HasField("dynamic_metadata")
    await processor.close()
    assert metrics.registry.get_sample_value("frugal_requests_total", {}) is None
