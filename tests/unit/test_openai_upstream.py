"""Unit tests of the `openai` backend's pure parts: parameters, request building, SSE
assembly, error mapping and metrics parsing."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from engine_workers.backends import validate_parameters
from engine_workers.backends.openai_upstream_parameters import OpenAIUpstreamParameters
from engine_workers.backends.openai_upstream_protocol import (
    StreamAssembler,
    UpstreamLoad,
    build_upstream_request,
    error_message,
    load_snapshot,
    parse_load_metrics,
    sse_data,
    upstream_error,
)
from engine_workers.engine import ChatMessage, Delta, GenerationRequest, LoadSnapshot, TokenUsage
from engine_workers.errors import (
    EngineFaultError,
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
)


def test_parameters_defaults_and_metrics_url_from_origin() -> None:
    parameters = validate_parameters("openai", {"base_url": "http://127.0.0.1:8000/v1/"})
    assert isinstance(parameters, OpenAIUpstreamParameters)
    assert parameters.base_url == "http://127.0.0.1:8000/v1"
    assert parameters.upstream_model is None
    assert parameters.effective_metrics_url == "http://127.0.0.1:8000/metrics"
    explicit = OpenAIUpstreamParameters(
        base_url="https://engine/v1", metrics_url="http://engine:9/prometheus/metrics"
    )
    assert explicit.effective_metrics_url == "http://engine:9/prometheus/metrics"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"base_url": "ftp://host/v1"},
        {"base_url": "http:///v1"},
        {"base_url": "http://host/v1?x=1"},
        {"base_url": "http://host/v1", "metrics_url": "host:9/metrics"},
        {"base_url": "http://host/v1", "connect_timeout_s": 0},
        {"base_url": "http://host/v1", "max_connections": 0},
        {"base_url": "http://host/v1", "api_key_env": "not a name"},
        {"base_url": "http://host/v1", "upstream_model": ""},
        {"base_url": "http://host/v1", "colour": "blue"},
    ],
)
def test_parameters_reject_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OpenAIUpstreamParameters.model_validate(fields)


def test_chat_request_forwards_messages_and_set_sampling_fields() -> None:
    request = GenerationRequest(
        request_id="r1",
        prompt="<|user|>\nHi\n<|assistant|>\n",
        prompt_tokens=3,
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")),
        max_tokens=16,
        stop=("\n\n", "END"),
        seed=0,
        temperature=0.0,
    )
    upstream = build_upstream_request(request, "up-model")
    assert upstream.path == "chat/completions"
    assert upstream.body == {
        "model": "up-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 16,
        "stop": ["\n\n", "END"],
        "seed": 0,
        "temperature": 0.0,
    }


def test_completion_request_forwards_the_prompt_and_omits_unset_fields() -> None:
    request = GenerationRequest(request_id="r1", prompt="Once upon", prompt_tokens=2, top_p=0.5)
    upstream = build_upstream_request(request, "m")
    assert upstream.path == "completions"
    assert upstream.body == {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "prompt": "Once upon",
        "top_p": 0.5,
    }


def test_sse_data_ignores_other_lines() -> None:
    assert sse_data(b'data: {"a": 1}\n') == '{"a": 1}'
    assert sse_data(b"data:[DONE]\r\n") == "[DONE]"
    for line in (b"\n", b": keep-alive\n", b"event: message\n", b"id: 3\n"):
        assert sse_data(line) is None


def _line(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n"


def _chat(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    return _line({"object": "chat.completion.chunk", "choices": [choice], **extra})


USAGE = {"prompt_tokens": 37, "completion_tokens": 2, "total_tokens": 39}


def _feed(assembler: StreamAssembler, lines: list[bytes]) -> list[Delta]:
    deltas = [assembler.feed(line) for line in lines]
    return [delta for delta in deltas if delta is not None]


def test_vllm_shape_usage_after_the_finish_chunk_then_done() -> None:
    assembler = StreamAssembler(prompt_tokens=5)
    lines = [
        _chat(""),
        b"\n",
        _chat("Hel"),
        _chat("lo", finish="stop"),
        _line({"choices": [], "usage": USAGE}),
        b"data: [DONE]\n",
        _chat("late"),
    ]
    deltas = _feed(assembler, lines)
    assert deltas == [Delta("Hel"), Delta("lo"), Delta("", "stop", TokenUsage(37, 2))]
    assert assembler.done and assembler.finished
    assert assembler.completion_tokens == 2
    assert assembler.end() is None


def test_transformers_shape_usage_in_the_finish_chunk_no_done() -> None:
    assembler = StreamAssembler(prompt_tokens=5)
    lines = [_chat("Paris"), _chat(".", finish="length", usage={**USAGE, "completion_tokens": 9})]
    deltas = _feed(assembler, lines)
    assert deltas == [Delta("Paris"), Delta(".", "length", TokenUsage(37, 9))]
    assert not assembler.done and assembler.completion_tokens == 9
    assert assembler.end() is None


def test_completion_chunks_carry_text() -> None:
    assembler = StreamAssembler(prompt_tokens=5)
    text = {"object": "text_completion", "choices": [{"index": 0, "text": " Paris"}]}
    deltas = _feed(assembler, [_line(text)])
    assert deltas == [Delta(" Paris")]


def test_without_upstream_usage_the_end_estimates_it() -> None:
    assembler = StreamAssembler(prompt_tokens=5)
    deltas = _feed(assembler, [_chat("a"), _chat("b"), _chat(None, finish="stop")])
    assert deltas == [Delta("a"), Delta("b")]
    assert assembler.end() == Delta("", "stop", TokenUsage(5, 2))


def test_a_stream_that_never_finishes_is_a_fault() -> None:
    assembler = StreamAssembler(prompt_tokens=5)
    _feed(assembler, [_chat("a")])
    with pytest.raises(EngineFaultError, match="before the answer finished"):
        assembler.end()


@pytest.mark.parametrize(
    "line",
    [
        _line({"error": {"message": "CUDA out of memory", "type": "InternalServerError"}}),
        _line({"object": "error", "message": "CUDA out of memory"}),
    ],
)
def test_an_error_event_mid_stream_raises(line: bytes) -> None:
    assembler = StreamAssembler(prompt_tokens=5)
    _feed(assembler, [_chat("a")])
    with pytest.raises(EngineFaultError, match="mid-stream: CUDA out of memory"):
        assembler.feed(line)


@pytest.mark.parametrize("line", [b"data: {not json\n", b"data: [1, 2]\n"])
def test_a_malformed_event_raises(line: bytes) -> None:
    with pytest.raises(EngineFaultError, match="malformed"):
        StreamAssembler(prompt_tokens=1).feed(line)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"error": {"message": "bad temperature", "type": "invalid_request_error"}}', "bad"),
        ('{"error": "worker dead"}', "worker dead"),
        ('{"object": "error", "message": "too long", "code": 400}', "too long"),
        ('{"detail": "Not Found"}', "Not Found"),
        ('{"detail": [{"msg": "field required"}, {"msg": "extra"}]}', "field required; extra"),
        ("upstream exploded", "upstream exploded"),
        ("", "no message"),
    ],
)
def test_error_message_shapes(body: str, message: str) -> None:
    assert error_message(body).startswith(message)


def test_error_message_is_clipped() -> None:
    assert len(error_message("x" * 5000)) == 300


def _error(status: int, body: str, path: str = "chat/completions") -> Exception:
    return upstream_error(status, body, model="smol", path=path)


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, '{"detail": "Server is pinned to \'/m\'; requested \'smol\'."}', ModelNotFoundError,
         grpc.StatusCode.NOT_FOUND),
        (404, '{"message": "The model `smol` does not exist.", "code": 404}', ModelNotFoundError,
         grpc.StatusCode.NOT_FOUND),
        (404, '{"error": {"message": "Model not found"}}', ModelNotFoundError,
         grpc.StatusCode.NOT_FOUND),
        (400, '{"error": {"message": "x", "code": "model_not_found"}}', ModelNotFoundError,
         grpc.StatusCode.NOT_FOUND),
        (404, '{"detail": "Not Found"}', InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
        (400, '{"error": {"message": "max_tokens too large"}}', InvalidRequestError,
         grpc.StatusCode.INVALID_ARGUMENT),
        (422, '{"detail": "Unexpected fields"}', InvalidRequestError,
         grpc.StatusCode.INVALID_ARGUMENT),
        (401, '{"error": "bad key"}', EngineUnavailableError, grpc.StatusCode.UNAVAILABLE),
        (429, "slow down", EngineUnavailableError, grpc.StatusCode.UNAVAILABLE),
        (503, '{"error": "cb_worker_dead"}', EngineUnavailableError, grpc.StatusCode.UNAVAILABLE),
        (500, "Internal Server Error", EngineFaultError, grpc.StatusCode.INTERNAL),
    ],
)  # fmt: skip
def test_upstream_error_mapping(
    status: int, body: str, kind: type[Exception], code: grpc.StatusCode
) -> None:
    error = _error(status, body)
    assert type(error) is kind
    assert getattr(error, "code", None) == code
    assert f"({status}: " in str(error)


def test_a_missing_endpoint_names_it() -> None:
    assert "no /completions endpoint" in str(_error(404, "Not Found", path="completions"))


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0
"""

SGLANG_METRICS = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 7.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 1.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.9
"""

TRTLLM_METRICS = """\
# TYPE trtllm_num_requests_running gauge
trtllm_num_requests_running{model_name="m",engine_type="trtllm"} 12.0
# TYPE trtllm_num_requests_waiting gauge
trtllm_num_requests_waiting{model_name="m",engine_type="trtllm"} 2.0
# TYPE trtllm_kv_cache_utilization gauge
trtllm_kv_cache_utilization{model_name="m",engine_type="trtllm"} 1.5
"""

OLD_VLLM_METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.125
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM_METRICS, UpstreamLoad(running=5, waiting=4, kv_cache_usage=0.375)),
        (SGLANG_METRICS, UpstreamLoad(running=7, waiting=1, kv_cache_usage=0.9)),
        (TRTLLM_METRICS, UpstreamLoad(running=12, waiting=2, kv_cache_usage=1.0)),
        (OLD_VLLM_METRICS, UpstreamLoad(running=1, waiting=None, kv_cache_usage=0.125)),
    ],
)
def test_parse_load_metrics(text: str, expected: UpstreamLoad) -> None:
    assert parse_load_metrics(text) == expected


def test_metrics_without_known_gauges_give_nothing() -> None:
    assert parse_load_metrics("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds 3\n") is None
    assert parse_load_metrics("") is None


def test_load_snapshot_prefers_the_upstream_figures() -> None:
    upstream = UpstreamLoad(running=9, waiting=None, kv_cache_usage=0.5)
    assert load_snapshot(upstream, in_flight=2, tokens_generated_total=40) == LoadSnapshot(
        running=9, waiting=0, kv_cache_usage=0.5, tokens_generated_total=40
    )
    partial = UpstreamLoad(running=None, waiting=3, kv_cache_usage=None)
    assert load_snapshot(partial, in_flight=2, tokens_generated_total=0) == LoadSnapshot(
        running=2, waiting=3, kv_cache_usage=0.0, tokens_generated_total=0
    )
    assert load_snapshot(None, in_flight=4, tokens_generated_total=1) == LoadSnapshot(
        running=4, waiting=0, kv_cache_usage=0.0, tokens_generated_total=1
    )
