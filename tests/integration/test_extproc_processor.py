"""RequestProcessor driven phase by phase with real ext_proc messages, as Envoy sends them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import json_format

from safety_filter.errors import ApiError, invalid_request, model_not_found
from safety_filter.extproc.processor import (
    MODEL_HEADER,
    RequestProcessor,
    header_value,
    immediate_response,
)

MODELS = frozenset({"sim-echo", "sim-mixtral"})
CHAT = "/v1/chat/completions"


def header_map(**pairs: str) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=k.replace("_", "-"), raw_value=v.encode())
            for k, v in pairs.items()
        ]
    )


def request_headers(path: str, end_of_stream: bool = False) -> ext.HttpHeaders:
    headers = base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=":method", raw_value=b"POST"),
            base_pb2.HeaderValue(key=":path", raw_value=path.encode()),
            base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
        ]
    )
    return ext.HttpHeaders(headers=headers, end_of_stream=end_of_stream)


def response_headers(status: int) -> ext.HttpHeaders:
    headers = base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=":status", raw_value=str(status).encode()),
            base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
            base_pb2.HeaderValue(key="grpc-accept-encoding", raw_value=b"identity"),
        ]
    )
    return ext.HttpHeaders(headers=headers)


def trailers(**pairs: str) -> ext.HttpTrailers:
    return ext.HttpTrailers(trailers=header_map(**pairs))


def chat_body(model: str = "sim-echo", **fields: object) -> ext.HttpBody:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return ext.HttpBody(body=json.dumps(body).encode(), end_of_stream=True)


def only(responses: Any) -> ext.ProcessingResponse:
    listed = list(responses)
    assert len(listed) == 1, listed
    response: ext.ProcessingResponse = listed[0]
    return response


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


def started_stream() -> RequestProcessor:
    """A processor past the request phases of a streaming chat call with a 200 answer."""
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body(stream=True)))
    only(processor.on_response_headers(response_headers(200)))
    return processor


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


def test_a_streaming_chat_request_is_routed_and_rewritten() -> None:
    processor = RequestProcessor(MODELS, 4096)
    first = only(processor.on_request_headers(request_headers(CHAT)))
    assert first.WhichOneof("response") == "request_headers"
    assert not first.request_headers.HasField("response")

    response = only(processor.on_request_body(chat_body("sim-mixtral", stream=True)))
    assert response.WhichOneof("response") == "request_body"
    common = response.request_body.response
    assert common.clear_route_cache is True
    assert set_headers(common.header_mutation) == {
        MODEL_HEADER: "sim-mixtral",
        ":path": "/v1/chat/completions:stream",
    }
    for option in common.header_mutation.set_headers:
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert not common.HasField("body_mutation")


def test_a_non_streaming_request_keeps_its_path() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers("/v1/completions?x=1")))
    body = ext.HttpBody(
        body=json.dumps({"model": "sim-echo", "prompt": "hi"}).encode(), end_of_stream=True
    )
    common = only(processor.on_request_body(body)).request_body.response
    assert set_headers(common.header_mutation) == {MODEL_HEADER: "sim-echo"}
    assert common.clear_route_cache is True


def test_stream_response_headers_mark_sse_and_drop_grpc_headers() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body(stream=True)))
    response = only(processor.on_response_headers(response_headers(200)))
    assert response.WhichOneof("response") == "response_headers"
    mutation = response.response_headers.response.header_mutation
    assert set_headers(mutation)["content-type"] == "text/event-stream"
    assert set_headers(mutation)["cache-control"] == "no-cache"
    assert list(mutation.remove_headers) == ["grpc-status", "grpc-message", "grpc-accept-encoding"]


def test_non_stream_response_headers_keep_the_content_type() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body()))
    mutation = only(processor.on_response_headers(response_headers(200))).response_headers
    assert set_headers(mutation.response.header_mutation) == {}
    assert "grpc-status" in mutation.response.header_mutation.remove_headers


def test_stream_chunks_pass_through_unchanged() -> None:
    processor = started_stream()
    for chunk in (b'data: {"id":"1"}\n\n', b'data: {"id":"2"}\n\n'):
        body = streamed(only(processor.on_response_body(ext.HttpBody(body=chunk))))
        assert body.body == chunk
        assert body.end_of_stream is False


def test_a_clean_stream_ends_with_done_then_trailers() -> None:
    processor = started_stream()
    only(processor.on_response_body(ext.HttpBody(body=b'data: {"id":"1"}\n\n')))
    last, end = list(processor.on_response_trailers(trailers(grpc_status="0")))
    assert streamed(last).body == b"data: [DONE]\n\n"
    assert streamed(last).end_of_stream is True
    assert end.WhichOneof("response") == "response_trailers"


def test_a_stream_ending_with_body_end_of_stream_gets_done_once() -> None:
    processor = started_stream()
    chunk, done = list(processor.on_response_body(ext.HttpBody(body=b"x", end_of_stream=True)))
    assert (streamed(chunk).body, streamed(chunk).end_of_stream) == (b"x", False)
    assert (streamed(done).body, streamed(done).end_of_stream) == (b"data: [DONE]\n\n", True)
    # The stream is finished: trailers add no second ending.
    end = only(processor.on_response_trailers(trailers(grpc_status="0")))
    assert end.WhichOneof("response") == "response_trailers"


def test_a_failed_stream_ends_with_an_error_event() -> None:
    processor = started_stream()
    only(processor.on_response_body(ext.HttpBody(body=b'data: {"id":"1"}\n\n')))
    last, end = list(
        processor.on_response_trailers(trailers(grpc_status="13", grpc_message="boom%20x"))
    )
    assert streamed(last).end_of_stream is True
    assert sse_json(streamed(last).body) == {
        "error": {"message": "boom x", "type": "server_error", "code": "engine_error"}
    }
    assert end.WhichOneof("response") == "response_trailers"


def test_an_unavailable_engine_mid_stream_is_a_503_error_event() -> None:
    processor = started_stream()
    last, _ = list(processor.on_response_trailers(trailers(grpc_status="14")))
    error = sse_json(streamed(last).body)["error"]
    assert (error["type"], error["code"]) == ("server_error", "service_unavailable")
    assert error["message"] == "The engine failed while generating."


def test_an_unknown_model_is_refused_with_404() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    with pytest.raises(ApiError) as caught:
        list(processor.on_request_body(chat_body("gpt-4")))
    assert caught.value == model_not_found("gpt-4")
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    assert "`gpt-4`" in caught.value.message


def test_an_invalid_body_is_refused_with_400() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    with pytest.raises(ApiError) as caught:
        list(processor.on_request_body(chat_body(temperature=3)))
    assert caught.value.status == 400
    assert caught.value.message.startswith("temperature:")


def test_a_body_over_the_limit_is_refused_with_413() -> None:
    processor = RequestProcessor(MODELS, 64)
    only(processor.on_request_headers(request_headers(CHAT)))
    body = chat_body(user="u" * 64)
    assert len(body.body) > 64
    with pytest.raises(ApiError) as caught:
        list(processor.on_request_body(body))
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")
    assert "64 bytes" in caught.value.message


def test_a_body_at_the_limit_is_accepted() -> None:
    body = chat_body()
    processor = RequestProcessor(MODELS, len(body.body))
    only(processor.on_request_headers(request_headers(CHAT)))
    common = only(processor.on_request_body(body)).request_body.response
    assert set_headers(common.header_mutation)[MODEL_HEADER] == "sim-echo"


def test_an_inference_call_without_a_body_is_refused() -> None:
    processor = RequestProcessor(MODELS, 4096)
    with pytest.raises(ApiError) as caught:
        list(processor.on_request_headers(request_headers(CHAT, end_of_stream=True)))
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_another_path_without_a_body_passes() -> None:
    processor = RequestProcessor(MODELS, 4096)
    response = only(processor.on_request_headers(request_headers("/v1/models", end_of_stream=True)))
    assert response.WhichOneof("response") == "request_headers"


def test_a_non_inference_body_passes_untouched() -> None:
    processor = RequestProcessor(MODELS, 16)
    only(processor.on_request_headers(request_headers("/v1/foo")))
    response = only(processor.on_request_body(ext.HttpBody(body=b"not json at all, and long")))
    assert response.WhichOneof("response") == "request_body"
    assert not response.request_body.HasField("response")


def test_a_transcoder_error_body_becomes_openai_shaped() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body(stream=True)))
    headers = only(processor.on_response_headers(response_headers(400))).response_headers
    assert "content-type" not in set_headers(headers.response.header_mutation)
    # Partial error bodies are held back until the whole body is there.
    assert list(processor.on_response_body(ext.HttpBody(body=b'{"code":3,'))) == []
    last = only(
        processor.on_response_body(ext.HttpBody(body=b'"message":"n: bad"}', end_of_stream=True))
    )
    assert streamed(last).end_of_stream is True
    assert json.loads(streamed(last).body) == {
        "error": {"message": "n: bad", "type": "invalid_request_error", "code": "invalid_request"}
    }
    end = only(processor.on_response_trailers(trailers()))
    assert end.WhichOneof("response") == "response_trailers"


def test_an_error_body_ended_by_trailers_is_rewritten_there() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body()))
    only(processor.on_response_headers(response_headers(503)))
    assert (
        list(processor.on_response_body(ext.HttpBody(body=b'{"code":14,"message":"down"}'))) == []
    )
    last, _ = list(processor.on_response_trailers(trailers(grpc_status="14")))
    assert json.loads(streamed(last).body) == {
        "error": {"message": "down", "type": "server_error", "code": "service_unavailable"}
    }


def test_an_openai_shaped_error_body_is_left_as_is() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body()))
    only(processor.on_response_headers(response_headers(404)))
    original = b'{"error": {"message": "gone", "type": "invalid_request_error", "code": "x"}}'
    last = only(processor.on_response_body(ext.HttpBody(body=original, end_of_stream=True)))
    assert streamed(last).body == original


def test_a_non_stream_success_body_passes_and_ends() -> None:
    processor = RequestProcessor(MODELS, 4096)
    only(processor.on_request_headers(request_headers(CHAT)))
    only(processor.on_request_body(chat_body()))
    only(processor.on_response_headers(response_headers(200)))
    body = b'{"id":"c1","object":"chat.completion"}'
    last = streamed(only(processor.on_response_body(ext.HttpBody(body=body, end_of_stream=True))))
    assert (last.body, last.end_of_stream) == (body, True)
    end = only(processor.on_response_trailers(trailers(grpc_status="0")))
    assert end.WhichOneof("response") == "response_trailers"


def test_immediate_response_carries_status_message_and_metadata() -> None:
    error = invalid_request("n: only n=1 is supported", "invalid_value")
    response = immediate_response(error)
    assert response.WhichOneof("response") == "immediate_response"
    assert response.immediate_response.status.code == 400
    assert response.immediate_response.body == b"n: only n=1 is supported"
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        "frugal.error": {"type": "invalid_request_error", "code": "invalid_value"}
    }


def test_immediate_response_for_a_missing_model() -> None:
    response = immediate_response(model_not_found("gpt-4"))
    assert response.immediate_response.status.code == 404
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata["frugal.error"]["code"] == "model_not_found"
