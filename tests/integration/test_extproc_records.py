"""What the RequestProcessor records of each request: the access log's `frugal.request`
metadata, the gateway metrics, the engine's own time.

Integration layer: real keys, admission and settlements over the session's `redis_server`;
each test uses its own keys and request ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google.protobuf import json_format

from frugal import wire
from frugal.request_log import REQUEST_ID
from safety_filter.errors import ApiError, model_not_allowed
from safety_filter.extproc.metrics import ExtProcMetrics
from tests.helpers.redis_server import RedisServer
from tests.integration.test_extproc_harness import (
    BLOCKING,
    CHAT,
    Gateway,
    chat,
    engine_usage_headers,
    only,
    open_gateway,
    request_headers,
    request_metadata,
    response_headers,
    sample,
    send_request,
    started,
    trailers,
)

ENGINE_TRAILERS = {"x_frugal_engine_ms": "12.5", "x_frugal_engine_ttft_ms": "3.25"}


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    async with open_gateway(redis_server) as opened:
        yield opened


def whose(gateway: Gateway) -> dict[str, str]:
    """The caller's part of a request's metadata."""
    return {"key_id": gateway.caller.id, "tenant": "acme"}


async def test_the_request_body_response_names_the_model(gateway: Gateway) -> None:
    body = chat("sim-mixtral", stream=True)
    answer = await send_request(gateway.processor(), gateway.caller, body)
    assert request_metadata(answer.headers) == {"model": "sim-mixtral"}


async def test_the_request_id_tags_the_processors_log_lines(gateway: Gateway) -> None:
    processor = gateway.processor()
    headers = request_headers(CHAT, gateway.caller, request_id="req-log-1")
    assert await processor.on_request_headers(headers) == []
    assert REQUEST_ID.get() == "req-log-1"


async def test_a_stream_ends_with_engine_time_metadata_and_metrics(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = await started(gateway.processor(metrics=metrics), gateway.caller)
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
        **whose(gateway),
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


async def test_a_failed_stream_names_the_engine_error(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = await started(gateway.processor(metrics=metrics), gateway.caller)
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


async def test_an_unavailable_engine_mid_stream_is_service_unavailable(gateway: Gateway) -> None:
    processor = await started(gateway.processor(), gateway.caller)
    end = only(await processor.on_response_trailers(trailers(grpc_status="14")))
    assert request_metadata(end)["error"] == "service_unavailable"


async def test_a_unary_answer_takes_engine_time_and_usage_from_its_headers(
    gateway: Gateway,
) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(metrics=metrics)
    await send_request(processor, gateway.caller, chat())
    engine = ((wire.ENGINE_MS, "8.000"), (wire.ENGINE_TTFT_MS, "2.000"))
    reported = (*engine, *engine_usage_headers(9, 5))
    last = only(await processor.on_response_headers(response_headers(200, *reported)))
    metadata = request_metadata(last)
    assert metadata.pop("ttft_ms") > 0
    assert metadata == {
        **whose(gateway),
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
    # Observed once: the trailers and the end of the ext_proc stream add nothing.
    only(await processor.on_response_trailers(trailers(grpc_status="0")))
    await processor.close()
    assert sample(metrics, "frugal_requests_total", **model, status="200") == 1


async def test_what_a_unary_answers_checks_found_is_counted(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(BLOCKING, metrics=metrics)
    await send_request(processor, gateway.caller, chat())
    found = ((wire.OUTPUT_REDACTED, "PHONE"), (wire.OUTPUT_BLOCKED, "EMAIL"))
    last = only(await processor.on_response_headers(response_headers(200, *found)))
    assert request_metadata(last)["error"] == "output_blocked"
    for category, action in (("PHONE", "redact"), ("EMAIL", "block")):
        labels = {"category": category, "direction": "output", "action": action}
        assert sample(metrics, "frugal_content_detections_total", **labels) == 1


async def test_a_refusal_before_the_model_is_known_counts_as_unknown(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(metrics=metrics)
    with pytest.raises(ApiError) as caught:
        await send_request(processor, gateway.caller, chat("gpt-4"))
    response = processor.refuse(caught.value)
    assert response.immediate_response.status.code == 404
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        wire.ERROR_METADATA_NAMESPACE: {"type": "invalid_request_error", "code": "model_not_found"},
        wire.REQUEST_METADATA_NAMESPACE: {
            **whose(gateway),
            "model": "unknown",
            "error": "model_not_found",
        },
    }
    labels = {"model_name": "unknown"}
    assert sample(metrics, "frugal_requests_total", **labels, status="404") == 1
    assert sample(metrics, "frugal_request_errors_total", **labels, reason="model_not_found") == 1
    assert sample(metrics, "frugal_extproc_refusals_total", code="model_not_found") == 1
    await processor.close()
    assert sample(metrics, "frugal_requests_total", **labels, status="404") == 1


async def test_a_refusal_of_a_served_model_is_counted_under_it(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(metrics=metrics)
    key = await gateway.new_key(models=["sim-echo"], tenant="globex")
    with pytest.raises(ApiError) as caught:
        await send_request(processor, key, chat("sim-mixtral"))
    assert caught.value == model_not_allowed("sim-mixtral")
    response = processor.refuse(caught.value)
    assert request_metadata(response) == {
        "key_id": key.id,
        "tenant": "globex",
        "model": "sim-mixtral",
        "error": "model_not_allowed",
    }
    labels = {"model_name": "sim-mixtral", "reason": "model_not_allowed"}
    assert sample(metrics, "frugal_request_errors_total", **labels) == 1


async def test_a_stream_closed_before_its_end_counts_a_disconnect(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = await started(gateway.processor(metrics=metrics), gateway.caller)
    await processor.close()
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **labels, status="200") == 1
    errors = sample(metrics, "frugal_request_errors_total", **labels, reason="client_disconnected")
    assert errors == 1
    assert sample(metrics, "frugal_request_ttft_seconds_count", **labels) == 1
    assert sample(metrics, "frugal_request_e2e_seconds_count", **labels) == 0


async def test_a_request_closed_before_any_response_is_499(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(metrics=metrics)
    await send_request(processor, gateway.caller, chat())
    await processor.close()
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **labels, status="499") == 1


async def test_what_the_engines_checks_found_is_counted(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = await started(gateway.processor(BLOCKING, metrics=metrics), gateway.caller)
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
@pytest.mark.parametrize("stream", [True, False])
async def test_a_failed_response_counts_the_code_the_client_gets(
    gateway: Gateway, stream: bool, status: int, reason: str
) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(metrics=metrics)
    await send_request(processor, gateway.caller, chat(stream=stream))
    last = only(await processor.on_response_headers(response_headers(status)))
    assert request_metadata(last) == {
        **whose(gateway),
        "model": "sim-echo",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "error": reason,
    }
    labels = {"model_name": "sim-echo"}
    assert sample(metrics, "frugal_requests_total", **labels, status=str(status)) == 1
    assert sample(metrics, "frugal_request_errors_total", **labels, reason=reason) == 1


async def test_other_paths_are_not_inference_requests(gateway: Gateway) -> None:
    metrics = ExtProcMetrics()
    processor = gateway.processor(metrics=metrics)
    headers = request_headers("/v1/models", gateway.caller, end_of_stream=True)
    only(await processor.on_request_headers(headers))
    answer = only(await processor.on_response_headers(response_headers(200)))
    last = only(await processor.on_response_trailers(trailers(grpc_status="0")))
    assert not answer.HasField("dynamic_metadata") and not last.HasField("dynamic_metadata")
    await processor.close()
    assert metrics.registry.get_sample_value("frugal_requests_total", {}) is None
