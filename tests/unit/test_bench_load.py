"""The load generator's pure parts: arrivals, time between tokens, progress and summary."""

from __future__ import annotations

import io
import itertools
import random
import statistics

import pytest

from frugal.bench.arrivals import gamma_offsets, poisson_offsets
from frugal.bench.driver import parse_engine_ms, time_between_tokens
from frugal.bench.load_report import summary_lines
from frugal.bench.progress import ProgressBar, bar_line
from frugal.bench.stats import RequestSample, summarise


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(offsets)]


def test_poisson_arrivals_start_at_zero_and_keep_the_rate() -> None:
    offsets = poisson_offsets(rate=20.0, count=4000, rng=random.Random(1))
    assert offsets[0] == 0.0
    assert offsets == sorted(offsets)
    gaps = _gaps(offsets)
    assert statistics.fmean(gaps) == pytest.approx(1 / 20, rel=0.05)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.1)


def test_gamma_arrivals_are_burstier_with_a_larger_cv() -> None:
    gaps = _gaps(gamma_offsets(rate=10.0, cv=3.0, count=6000, rng=random.Random(2)))
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.1)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(3.0, rel=0.15)


def test_arrivals_refuse_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        gamma_offsets(0.0, 1.0, 3, random.Random())
    assert poisson_offsets(1.0, 0, random.Random()) == []


def test_time_between_tokens_is_the_gap_between_events_per_token_they_carry() -> None:
    arrivals = [1.000, 1.010, 1.030, 1.060]  # gaps of 10, 20 and 30 ms; 10 is left out
    assert time_between_tokens(arrivals, 4) == pytest.approx(25.0)
    # Eight tokens in four events: two tokens an event.
    assert time_between_tokens(arrivals, 8) == pytest.approx(12.5)
    assert time_between_tokens([1.0, 1.004], 2) == pytest.approx(4.0)
    assert time_between_tokens([1.0], 1) is None


def test_a_merged_first_event_and_a_flushed_tail_cannot_flatter_time_between_tokens() -> None:
    # Eight tokens made 10 ms apart (t = 0, 10, ..., 70 ms) behind an output redactor that
    # holds one token back. `merged`: the first two go out together at 10 ms, then one an
    # event (seven events). `flushed`: one an event, each a step late, and the held last
    # token right after the seventh, when the answer ends (eight events).
    merged = [0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.070]
    flushed = [0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.070, 0.0701]
    for arrivals in (merged, flushed):
        old_formula = (arrivals[-1] - arrivals[0]) * 1000 / (8 - 1)
        assert old_formula == pytest.approx(8.58, abs=0.01)  # 14 % fast
    assert time_between_tokens(merged, 8) == pytest.approx(10.0)
    assert time_between_tokens(flushed, 8) == pytest.approx(10.0)
    # The same tokens one event each, as a gateway without a filter sends them.
    assert time_between_tokens([i / 100 for i in range(8)], 8) == pytest.approx(10.0)


def test_a_proxy_that_delivers_in_bursts_keeps_its_long_gaps() -> None:
    # Nine tokens in bursts of three, 30 ms apart: 60 ms over seven kept gaps.
    bursts = [0.0, 0.0001, 0.0002, 0.030, 0.0301, 0.0302, 0.060, 0.0601, 0.0602]
    assert time_between_tokens(bursts, 9) == pytest.approx(60.1 / 7)


def test_time_between_tokens_of_a_short_flushed_stream_is_not_halved() -> None:
    # Three tokens: the redactor's two events 10 ms apart, then its tail at once.
    assert time_between_tokens([0.010, 0.020, 0.0201], 3) == pytest.approx(10.0)


def test_engine_time_parsing_tolerates_absent_and_garbled_values() -> None:
    assert parse_engine_ms("12.5") == 12.5
    assert parse_engine_ms(None) is None
    assert parse_engine_ms("soon") is None


def test_the_progress_bar_fills_in_proportion_and_counts_errors() -> None:
    assert bar_line("c=4", 15, 30, 0, 2.0) == (
        "c=4 [###############...............]    15/30 requests, 2 s"
    )
    assert "3 errors" in bar_line("c=4", 30, 30, 3, 9.0)
    assert "/?" in bar_line("duration", 5, 0, 0, 1.0)


def test_the_progress_bar_in_a_log_prints_the_last_line() -> None:
    out = io.StringIO()
    progress = ProgressBar("c=1", 2, stream=out)
    progress.advance(RequestSample(ok=True))
    progress.advance(RequestSample(ok=False))
    assert out.getvalue().splitlines()[-1].endswith("2/2 requests, 1 errors, 0 s")


def test_the_summary_reports_the_papers_metrics_and_the_split() -> None:
    samples = [
        RequestSample(ok=True, ttft_ms=10, tbt_ms=2, tokens=10, e2e_ms=30, engine_ms=26),
        RequestSample(ok=False, timed_out=True),
    ]
    text = "\n".join(summary_lines(summarise(samples, 1.0)))
    assert "2 (1 ok, 1 errors, 1 timeouts)" in text
    assert "10.0 generated tok/s, 1.00 req/s" in text
    assert "engine p50 26.0 ms, gateway p50 4.0 ms" in text
