"""RequestProcessor driven phase by phase with real ext_proc messages, as Envoy sends them:
routing, validation, prompt checks, the output checks the engine gets, the response phases.

Integration layer: real keys (a KeyStore), admission and settlements over the session's
`redis_server`; each test uses its own keys and request ids, never a flush. The key check
itself is in test_key_check, limits in test_extproc_admission, the bill in
test_extproc_settlement, request records and metrics in test_extproc_records.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from frugal import wire
from frugal.content_checks import DEFAULT_POLICY, ContentPolicy
from safety_filter.errors import ApiError, model_not_found
from safety_filter.extproc.policies import PolicyBook
from safety_filter.extproc.processor import (
    CLIENT_HEADERS_REMOVED,
    RESPONSE_REMOVED,
    ProcessorContext,
    RequestProcessor,
)
from tests.helpers.redis_server import RedisServer
from tests.integration.test_extproc_harness import (
    BLOCKING,
    CHAT,
    EMAIL,
    LOGGING,
    MODELS,
    UNCHECKED,
    Gateway,
    chat,
    engine_usage_headers,
    only,
    open_gateway,
    request_headers,
    request_metadata,
    response_headers,
    send_request,
    set_headers,
    started,
    trailers,
)

UNCHECKED_OUTPUT = DEFAULT_POLICY.model_copy(update={"check_output": False})


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    async with open_gateway(redis_server) as opened:
        yield opened


# --- request phases ---------------------------------------------------------------------------


async def test_a_streaming_chat_request_is_routed_and_rewritten(gateway: Gateway) -> None:
    processor = gateway.processor()
    # An inference request's headers wait for its body: one round trip answers both.
    assert await processor.on_request_headers(request_headers(CHAT, gateway.caller)) == []
    last = ext.HttpBody(body=chat("sim-mixtral", stream=True), end_of_stream=True)
    headers, body = await processor.on_request_body(last)
    assert headers.WhichOneof("response") == "request_headers"
    common = headers.request_headers.response
    assert common.clear_route_cache is True
    assert set_headers(common.header_mutation) == {
        wire.MODEL_HEADER: "sim-mixtral",
        ":path": "/v1/chat/completions:stream",
    }
    for option in common.header_mutation.set_headers:
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    removed = set(CLIENT_HEADERS_REMOVED) - {wire.MODEL_HEADER}
    assert set(common.header_mutation.remove_headers) == removed
    assert request_metadata(headers) == {"model": "sim-mixtral"}
    # The default policy checks output: the engine gets the checks with the request.
    assert body.WhichOneof("response") == "request_body"
    assert "output_checks" in json.loads(body.request_body.response.body_mutation.body)


async def test_a_body_in_chunks_is_answered_once_its_last_chunk_is_in(gateway: Gateway) -> None:
    processor = gateway.processor()
    assert await processor.on_request_headers(request_headers(CHAT, gateway.caller)) == []
    body = chat(content=f"Write to {EMAIL}")
    pieces = [body[:10], body[10:30], body[30:]]
    for piece in pieces[:-1]:
        assert await processor.on_request_body(ext.HttpBody(body=piece)) == []
    answers = await processor.on_request_body(ext.HttpBody(body=pieces[-1], end_of_stream=True))
    assert [a.WhichOneof("response") for a in answers] == ["request_headers", *["request_body"] * 3]
    first, *rest = (a.request_body.response.body_mutation for a in answers[1:])
    forwarded = json.loads(first.body)
    assert forwarded["messages"][0]["content"] == "Write to [REDACTED:EMAIL]"
    assert all(mutation.clear_body for mutation in rest)


async def test_a_body_left_as_it_is_goes_on_untouched(gateway: Gateway) -> None:
    answer = await send_request(gateway.processor(UNCHECKED), gateway.caller, chat(), chunks=3)
    assert answer.set_headers == {wire.MODEL_HEADER: "sim-echo"}
    assert not answer.rewritten
    assert all(not b.request_body.HasField("response") for b in answer.bodies)


async def test_trailers_end_a_body_whose_last_chunk_did_not_say_so(gateway: Gateway) -> None:
    processor = gateway.processor()
    assert await processor.on_request_headers(request_headers(CHAT, gateway.caller)) == []
    assert await processor.on_request_body(ext.HttpBody(body=chat())) == []
    answers = await processor.on_request_trailers(trailers())
    kinds = [a.WhichOneof("response") for a in answers]
    assert kinds == ["request_headers", "request_body", "request_trailers"]
    assert set_headers(answers[0].request_headers.response.header_mutation) == {
        wire.MODEL_HEADER: "sim-echo"
    }


async def test_trailers_after_an_answered_body_are_only_acknowledged(gateway: Gateway) -> None:
    processor = gateway.processor()
    await send_request(processor, gateway.caller, chat())
    answer = only(await processor.on_request_trailers(trailers()))
    assert answer.WhichOneof("response") == "request_trailers"


async def test_a_non_streaming_request_keeps_its_path(gateway: Gateway) -> None:
    body = json.dumps({"model": "sim-echo", "prompt": "hi"}).encode()
    answer = await send_request(
        gateway.processor(UNCHECKED), gateway.caller, body, path="/v1/completions?x=1"
    )
    assert answer.set_headers == {wire.MODEL_HEADER: "sim-echo"}
    assert answer.headers.request_headers.response.clear_route_cache is True


async def test_an_unknown_model_is_refused_with_404(gateway: Gateway) -> None:
    with pytest.raises(ApiError) as caught:
        await send_request(gateway.processor(), gateway.caller, chat("gpt-4"))
    assert caught.value == model_not_found("gpt-4")
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    assert "`gpt-4`" in caught.value.message


async def test_a_model_the_key_may_not_use_is_refused_with_403(gateway: Gateway) -> None:
    key = await gateway.new_key(models=["sim-echo"])
    with pytest.raises(ApiError) as caught:
        await send_request(gateway.processor(), key, chat("sim-mixtral"))
    assert (caught.value.status, caught.value.type, caught.value.code) == (
        403,
        "permission_error",
        "model_not_allowed",
    )
    assert "`sim-mixtral`" in caught.value.message


@pytest.mark.parametrize("models", [["sim-echo"], ["sim-mixtral", "sim-echo"], None])
async def test_a_model_the_key_may_use_is_routed(
    gateway: Gateway, models: list[str] | None
) -> None:
    key = await gateway.new_key(models=models)
    answer = await send_request(gateway.processor(), key, chat("sim-echo"))
    assert answer.set_headers == {wire.MODEL_HEADER: "sim-echo"}


async def test_an_invalid_body_is_refused_with_400(gateway: Gateway) -> None:
    with pytest.raises(ApiError) as caught:
        await send_request(gateway.processor(), gateway.caller, chat(temperature=3))
    assert caught.value.status == 400
    assert caught.value.message.startswith("temperature:")


async def test_a_body_over_the_limit_is_refused_with_413_at_the_chunk_that_crosses_it(
    gateway: Gateway,
) -> None:
    processor = gateway.processor(max_body_bytes=64)
    body = chat(user="u" * 64)
    assert len(body) > 64
    assert await processor.on_request_headers(request_headers(CHAT, gateway.caller)) == []
    assert await processor.on_request_body(ext.HttpBody(body=body[:64])) == []
    with pytest.raises(ApiError) as caught:
        await processor.on_request_body(ext.HttpBody(body=body[64:65]))
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")
    assert "64 bytes" in caught.value.message


async def test_a_body_at_the_limit_is_accepted(gateway: Gateway) -> None:
    body = chat()
    processor = gateway.processor(max_body_bytes=len(body))
    answer = await send_request(processor, gateway.caller, body, chunks=2)
    assert answer.set_headers[wire.MODEL_HEADER] == "sim-echo"


async def test_an_inference_call_without_a_body_is_refused(gateway: Gateway) -> None:
    processor = gateway.processor()
    with pytest.raises(ApiError) as caught:
        await processor.on_request_headers(
            request_headers(CHAT, gateway.caller, end_of_stream=True)
        )
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


async def test_another_path_is_answered_at_once(gateway: Gateway) -> None:
    processor = gateway.processor()
    headers = request_headers("/v1/models", gateway.caller, end_of_stream=True)
    response = only(await processor.on_request_headers(headers))
    assert response.WhichOneof("response") == "request_headers"
    mutation = response.request_headers.response.header_mutation
    assert set_headers(mutation) == {}
    assert list(mutation.remove_headers) == list(CLIENT_HEADERS_REMOVED)


# Headers of the gateway's own prefix a client may try: an engine's usage, a finding, a key.
SPOOFED = (
    ("x-frugal-completion-tokens", "0"),
    ("x-frugal-output-redacted", "none"),
    ("x-frugal-something-new", "1"),
)


async def test_every_gateway_header_a_client_sends_is_removed(gateway: Gateway) -> None:
    processor = gateway.processor()
    answer = await send_request(processor, gateway.caller, chat(), *SPOOFED)
    removed = set(answer.mutation.remove_headers)
    assert {name for name, _ in SPOOFED} <= removed
    assert set(CLIENT_HEADERS_REMOVED) - {wire.MODEL_HEADER} <= removed
    await processor.close()
    other = gateway.processor()
    headers = request_headers("/v1/models", gateway.caller, *SPOOFED, end_of_stream=True)
    response = only(await other.on_request_headers(headers))
    mutation = response.request_headers.response.header_mutation
    assert {name for name, _ in SPOOFED} <= set(mutation.remove_headers)


async def test_without_enforcement_a_clients_key_id_and_gateway_headers_go_too() -> None:
    """`enforce: false` trusts no client's gateway header either (nothing counts by them)."""
    context = ProcessorContext(MODELS, 4096, PolicyBook(UNCHECKED, {}), enforcement=None)
    processor = RequestProcessor(context)
    spoofed = (*SPOOFED, (wire.KEY_ID_HEADER, "someone-else"))
    answer = await send_request(processor, None, chat(), *spoofed)
    assert {name for name, _ in spoofed} <= set(answer.mutation.remove_headers)
    await processor.close()


async def test_a_non_inference_body_passes_untouched(gateway: Gateway) -> None:
    processor = gateway.processor(max_body_bytes=16)
    only(await processor.on_request_headers(request_headers("/v1/foo", gateway.caller)))
    for piece in (b"not json at all, and long ", EMAIL.encode()):
        response = only(await processor.on_request_body(ext.HttpBody(body=piece)))
        assert response.WhichOneof("response") == "request_body"
        assert not response.request_body.HasField("response")
    assert only(await processor.on_request_trailers(trailers())).HasField("request_trailers")


async def test_without_enforcement_no_key_is_needed_and_nothing_is_counted() -> None:
    """The stack's `enforce: false`: no key check, no admission, no bill."""
    context = ProcessorContext(MODELS, 4096, PolicyBook(UNCHECKED, {}), enforcement=None)
    processor = RequestProcessor(context)
    answer = await send_request(processor, None, chat())
    assert set(answer.mutation.remove_headers) == set(CLIENT_HEADERS_REMOVED) - {wire.MODEL_HEADER}
    assert not answer.rewritten  # no max_tokens cap without a budget
    end = only(await processor.on_response_headers(response_headers(200)))
    assert request_metadata(end)["model"] == "sim-echo"
    await processor.close()


# --- prompt checks ----------------------------------------------------------------------------


async def test_an_email_in_the_prompt_is_redacted_in_the_forwarded_body(gateway: Gateway) -> None:
    body = chat(content=f"Write to {EMAIL}, Grüße", stream=True)
    answer = await send_request(gateway.processor(), gateway.caller, body)
    forwarded_bytes = answer.bodies[0].request_body.response.body_mutation.body
    assert EMAIL.encode() not in forwarded_bytes
    forwarded = answer.forwarded()
    assert forwarded["messages"] == [
        {"role": "user", "content": "Write to [REDACTED:EMAIL], Grüße"}
    ]
    assert forwarded["stream"] is True
    # Envoy drops the length of a STREAMED body a processor changes: none is set.
    assert answer.set_headers == {
        wire.MODEL_HEADER: "sim-echo",
        ":path": "/v1/chat/completions:stream",
    }
    assert answer.headers.request_headers.response.clear_route_cache is True


async def test_an_email_in_a_text_part_is_redacted(gateway: Gateway) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": f"mail {EMAIL}"}]
    answer = await send_request(gateway.processor(), gateway.caller, chat(content=parts))
    assert answer.forwarded()["messages"][0]["content"] == [
        {"type": "text", "text": "hello"},
        {"type": "text", "text": "mail [REDACTED:EMAIL]"},
    ]


async def test_a_block_policy_refuses_the_prompt_without_echoing_it(gateway: Gateway) -> None:
    key = await gateway.new_key(tpm=1_000_000)
    with pytest.raises(ApiError) as caught:
        await send_request(gateway.processor(BLOCKING), key, chat(content=f"Write to {EMAIL}"))
    error = caught.value
    assert (error.status, error.type, error.code) == (
        400,
        "invalid_request_error",
        "content_policy_violation",
    )
    assert "EMAIL" in error.message
    assert EMAIL not in error.message and "jane" not in error.message
    # A refused prompt reserves nothing.
    usage = await gateway.budget.window_usage(key.id)
    assert (usage.used, usage.reserved) == (0, 0)


async def test_a_log_policy_forwards_the_prompt_unchanged(gateway: Gateway) -> None:
    policy = LOGGING.model_copy(update={"check_output": False})
    answer = await send_request(
        gateway.processor(policy), gateway.caller, chat(content=f"Write to {EMAIL}")
    )
    assert not answer.rewritten
    assert answer.set_headers == {wire.MODEL_HEADER: "sim-echo"}


# --- output checks go to the engine -----------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_a_request_carries_its_output_checks_to_the_engine(
    gateway: Gateway, stream: bool
) -> None:
    """A stream's checks run token by token in the worker, a unary answer's as a whole."""
    policy = ContentPolicy(detectors=("EMAIL", "BLOCKLIST"), prompt_action="log",
                           output_action="block", blocklist=("Project Zeus",))  # fmt: skip
    answer = await send_request(gateway.processor(policy), gateway.caller, chat(stream=stream))
    assert answer.forwarded()["output_checks"] == {
        "detectors": ["EMAIL", "BLOCKLIST"], "action": "block", "blocklist": ["Project Zeus"],
    }  # fmt: skip


@pytest.mark.parametrize("policy", [UNCHECKED, UNCHECKED_OUTPUT], ids=["no-detectors", "no-output"])
@pytest.mark.parametrize("stream", [True, False])
async def test_output_checks_a_client_sends_are_dropped(
    gateway: Gateway, policy: ContentPolicy, stream: bool
) -> None:
    forged = {"detectors": [], "action": "redact"}
    body = chat(content="Hi", stream=stream, output_checks=forged)
    answer = await send_request(gateway.processor(policy), gateway.caller, body)
    assert "output_checks" not in answer.forwarded()


async def test_a_request_with_checks_replaces_the_clients_own(gateway: Gateway) -> None:
    forged = {"detectors": ["EMAIL"], "action": "redact"}
    body = chat(stream=True, output_checks=forged)
    answer = await send_request(gateway.processor(LOGGING), gateway.caller, body)
    assert answer.forwarded()["output_checks"]["detectors"] == list(DEFAULT_POLICY.detectors)


# --- response phases --------------------------------------------------------------------------


async def test_a_started_streams_headers_drop_what_the_client_never_sees(
    gateway: Gateway,
) -> None:
    processor = gateway.processor()
    await send_request(processor, gateway.caller, chat(stream=True))
    response = only(await processor.on_response_headers(response_headers(200)))
    assert response.WhichOneof("response") == "response_headers"
    mutation = response.response_headers.response.header_mutation
    assert set_headers(mutation) == {"cache-control": "no-cache"}  # an unlimited key
    assert list(mutation.remove_headers) == list(RESPONSE_REMOVED)
    # The response body never comes to the processor (response_body_mode NONE).
    assert not response.HasField("mode_override")
    assert not response.HasField("dynamic_metadata")  # the stream ends with its trailers


async def test_a_unary_answer_ends_at_its_headers(gateway: Gateway) -> None:
    processor = gateway.processor()
    await send_request(processor, gateway.caller, chat())
    reported = (*engine_usage_headers(3, 4), (wire.OUTPUT_REDACTED, "EMAIL"))
    response = only(await processor.on_response_headers(response_headers(200, *reported)))
    mutation = response.response_headers.response.header_mutation
    assert set_headers(mutation) == {}
    # The engine's report is the gateway's to read, not the client's.
    assert {wire.PROMPT_TOKENS, wire.COMPLETION_TOKENS, wire.OUTPUT_REDACTED} <= set(
        mutation.remove_headers
    )
    metadata = request_metadata(response)
    assert (metadata["prompt_tokens"], metadata["completion_tokens"]) == (3, 4)
    end = only(await processor.on_response_trailers(trailers(grpc_status="0")))
    assert end.WhichOneof("response") == "response_trailers"
    assert not end.HasField("dynamic_metadata")  # ended already


@pytest.mark.parametrize("stream", [True, False])
async def test_an_error_answer_ends_at_its_headers(gateway: Gateway, stream: bool) -> None:
    processor = gateway.processor()
    await send_request(processor, gateway.caller, chat(stream=stream))
    response = only(await processor.on_response_headers(response_headers(503)))
    mutation = response.response_headers.response.header_mutation
    assert "cache-control" not in set_headers(mutation)
    assert list(mutation.remove_headers) == list(RESPONSE_REMOVED)
    assert request_metadata(response)["error"] == "service_unavailable"


async def test_a_non_inference_response_passes_through(gateway: Gateway) -> None:
    processor = gateway.processor()
    headers = request_headers("/v1/models", gateway.caller, end_of_stream=True)
    only(await processor.on_request_headers(headers))
    response = only(await processor.on_response_headers(response_headers(200)))
    assert set_headers(response.response_headers.response.header_mutation) == {}
    assert not response.HasField("dynamic_metadata")
    end = only(await processor.on_response_trailers(trailers(grpc_status="0")))
    assert not end.HasField("dynamic_metadata")


async def test_a_streams_trailers_end_it(gateway: Gateway) -> None:
    processor = await started(gateway.processor(), gateway.caller)
    end = only(await processor.on_response_trailers(trailers(grpc_status="0")))
    assert end.WhichOneof("response") == "response_trailers"
    assert request_metadata(end)["model"] == "sim-echo"
