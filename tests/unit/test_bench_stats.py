"""Routing benchmark statistics: percentiles and per-level summaries."""

from __future__ import annotations

import math

import pytest

from frugal.bench.stats import RequestSample, percentile, summarise


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unordered on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 25) == pytest.approx(1.75)


def test_p99_of_a_hundred_values_sits_just_below_the_maximum() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 50) == pytest.approx(50.5)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_percentile_refuses_a_rank_outside_0_to_100() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_times_only_successful_requests_and_counts_errors() -> None:
    samples = [
        RequestSample(ok=True, ttft_ms=10.0, tbt_ms=2.0, tokens=16),
        RequestSample(ok=True, ttft_ms=30.0, tbt_ms=4.0, tokens=32),
        RequestSample(ok=True, ttft_ms=20.0, tbt_ms=None, tokens=1),
        RequestSample(ok=False),
    ]
    summary = summarise(samples, duration_s=2.0)
    assert summary.requests == 4
    assert summary.errors == 1
    assert summary.tokens == 49
    assert summary.throughput_tok_s == pytest.approx(24.5)
    assert summary.ttft_p50_ms == pytest.approx(20.0)
    assert summary.ttft_p99_ms == pytest.approx(29.8)
    assert summary.tbt_p50_ms == pytest.approx(3.0)


def test_summary_of_nothing_but_errors_has_no_latencies() -> None:
    summary = summarise([RequestSample(ok=False)], duration_s=0.0)
    assert summary.errors == 1
    assert summary.throughput_tok_s == 0.0
    assert summary.ttft_p50_ms is None and summary.tbt_p50_ms is None
    assert not math.isnan(summary.throughput_tok_s)
