"""The pure parts of the gateway's request observations: the record, its metadata, the
metrics it feeds, and the request id on log lines."""

from __future__ import annotations

import io
import logging

import pytest
from prometheus_client import CollectorRegistry

from frugal import wire
from frugal.request_log import (
    LOG_FORMAT,
    NO_REQUEST,
    REQUEST_ID,
    RequestIdFilter,
    bind_request_id,
)
from safety_filter.extproc.engine_report import parse_ms
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.request_record import UNKNOWN_MODEL, RequestRecord


def streamed_record(**fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "model": "m",
        "stream": True,
        "status": 200,
        "first_text": 10.25,
        "ended": 11.0,
        "prompt_tokens": 7,
        "completion_tokens": 4,
    }
    values.update(fields)
    return RequestRecord(10.0, **values)  # type: ignore[arg-type]


def test_a_streamed_record_derives_ttft_tpot_and_e2e() -> None:
    record = streamed_record()
    assert record.ttft_s() == pytest.approx(0.25)
    assert record.e2e_s() == pytest.approx(1.0)
    assert record.tpot_s() == pytest.approx(0.75 / 3)


def test_a_streams_first_token_is_its_end_less_the_engines_decode_time() -> None:
    # Headers at 0.25 s came with a keep-alive comment; the engine's first token came
    # 0.5 s before its last (engine 0.7 s, of which 0.2 s to the first token).
    record = streamed_record(engine_ms=700.0, engine_ttft_ms=200.0)
    assert record.ttft_s() == pytest.approx(0.5)
    assert record.tpot_s() == pytest.approx(0.5 / 3)


def test_a_first_token_never_precedes_the_headers_it_came_with() -> None:
    record = streamed_record(engine_ms=1000.0, engine_ttft_ms=0.0)
    assert record.ttft_s() == pytest.approx(0.25)


@pytest.mark.parametrize(
    "fields",
    [
        {"completion_tokens": 1},
        {"completion_tokens": 0},
        {"completion_tokens": None},
        {"first_text": None},
        {"ended": None},
        {"stream": False},
    ],
)
def test_tpot_needs_a_stream_with_two_tokens_and_both_times(fields: dict[str, object]) -> None:
    assert streamed_record(**fields).tpot_s() is None


def test_a_record_without_times_has_none() -> None:
    record = RequestRecord(1.0)
    assert (record.ttft_s(), record.e2e_s(), record.tpot_s()) == (None, None, None)
    assert record.model == UNKNOWN_MODEL


def test_metadata_has_what_is_known_only() -> None:
    assert RequestRecord(1.0).metadata() == {"model": UNKNOWN_MODEL}
    record = streamed_record(engine_ms=753.25, engine_ttft_ms=3.25, error="engine_error")
    assert record.metadata() == {
        "model": "m",
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "ttft_ms": 250.0,
        "engine_ms": 753.25,
        "engine_ttft_ms": 3.25,
        "error": "engine_error",
    }


def test_a_full_record_gives_exactly_what_the_access_log_reads() -> None:
    record = streamed_record(
        engine_ms=12.5, engine_ttft_ms=3.25, error="engine_error", key_id="k1", tenant="t"
    )
    assert sorted(record.metadata()) == sorted(wire.REQUEST_METADATA_KEYS)


def test_metadata_keeps_zero_token_counts() -> None:
    metadata = streamed_record(prompt_tokens=0, completion_tokens=0).metadata()
    assert (metadata["prompt_tokens"], metadata["completion_tokens"]) == (0, 0)


def test_engine_reports_fill_in_without_erasing() -> None:
    record = RequestRecord(0.0)
    record.engine_reported(5.0, None)
    record.engine_reported(None, 2.0)
    assert (record.engine_ms, record.engine_ttft_ms) == (5.0, 2.0)
    record.engine_reported(6.0, 0.0)
    assert (record.engine_ms, record.engine_ttft_ms) == (6.0, 0.0)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12.345", 12.345), ("0", 0.0), ("", None), ("abc", None), ("-1", None), ("nan", None)],
)
def test_parse_ms(text: str, value: float | None) -> None:
    assert parse_ms(text) == value


def sample(metrics: ExtProcMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_finished_stream_moves_every_request_metric() -> None:
    metrics = ExtProcMetrics(CollectorRegistry())
    metrics.finished(streamed_record())
    assert sample(metrics, "frugal_requests_total", model_name="m", status="200") == 1
    assert sample(metrics, "frugal_request_ttft_seconds_count", model_name="m") == 1
    assert sample(metrics, "frugal_request_ttft_seconds_sum", model_name="m") == pytest.approx(0.25)
    assert sample(metrics, "frugal_request_tpot_seconds_sum", model_name="m") == pytest.approx(0.25)
    assert sample(metrics, "frugal_request_e2e_seconds_sum", model_name="m") == pytest.approx(1.0)
    assert sample(metrics, "frugal_prompt_tokens_total", model_name="m") == 7
    assert sample(metrics, "frugal_completion_tokens_total", model_name="m") == 4
    assert metrics.registry.get_sample_value("frugal_request_errors_total", {}) is None


def test_a_refused_request_counts_its_status_and_reason_only() -> None:
    metrics = ExtProcMetrics(CollectorRegistry())
    metrics.finished(RequestRecord(0.0, status=404, error="model_not_found"))
    labels = {"model_name": UNKNOWN_MODEL}
    assert sample(metrics, "frugal_requests_total", **labels, status="404") == 1
    assert sample(metrics, "frugal_request_errors_total", **labels, reason="model_not_found") == 1
    for histogram in ("ttft", "tpot", "e2e"):
        assert sample(metrics, f"frugal_request_{histogram}_seconds_count", **labels) == 0
    assert sample(metrics, "frugal_prompt_tokens_total", **labels) == 0


def test_latency_buckets_reach_from_milliseconds_to_minutes() -> None:
    metrics = ExtProcMetrics(CollectorRegistry())
    metrics.finished(streamed_record(first_text=10.0005, ended=130.0))
    assert sample(metrics, "frugal_request_ttft_seconds_bucket", model_name="m", le="0.001") == 1
    assert sample(metrics, "frugal_request_e2e_seconds_bucket", model_name="m", le="80.0") == 0
    assert sample(metrics, "frugal_request_e2e_seconds_bucket", model_name="m", le="160.0") == 1


def test_log_records_carry_the_bound_request_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    token = REQUEST_ID.set(NO_REQUEST)
    try:
        RequestIdFilter().filter(record)
        assert record.__dict__["request_id"] == NO_REQUEST
        bind_request_id("req-42")
        assert RequestIdFilter().filter(record) is True
        assert record.__dict__["request_id"] == "req-42"
        bind_request_id("")
        assert REQUEST_ID.get() == NO_REQUEST
    finally:
        REQUEST_ID.reset(token)


def test_the_log_format_shows_the_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.request_log")
    logger.addHandler(handler)
    token = REQUEST_ID.set("req-7")
    try:
        logger.warning("settled")
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("WARNING tests.request_log [req-7]: settled")
