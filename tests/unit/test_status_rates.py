"""The traffic window: request and error rates per group from cumulative Envoy counters."""

from __future__ import annotations

import pytest

from control_plane.traffic_rates import RequestCounts, TrafficRate, TrafficWindow

GROUP = "engine__m__a"


def reading(**hosts: tuple[float, float]) -> dict[str, dict[str, dict[str, RequestCounts]]]:
    """What one Envoy ("envoy-a") says of GROUP's hosts."""
    return {"envoy-a": {GROUP: {host: RequestCounts(*counts) for host, counts in hosts.items()}}}


def test_no_rate_until_two_readings() -> None:
    window = TrafficWindow(window_s=10)
    assert window.rate(GROUP) is None
    window.observe(100.0, reading(h1=(50, 1)))
    assert window.rate(GROUP) is None
    assert window.last_observed == 100.0


def test_rates_are_deltas_over_the_time_covered() -> None:
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(100, 0), h2=(10, 0)))
    window.observe(1.0, reading(h1=(104, 1), h2=(14, 0)))
    window.observe(2.0, reading(h1=(108, 1), h2=(18, 1)))
    assert window.rate(GROUP) == TrafficRate(requests_per_s=8.0, errors_per_s=1.0, window_s=2.0)
    rate = window.rate(GROUP)
    assert rate is not None and rate.error_share == pytest.approx(1 / 8)


def test_old_intervals_leave_the_window() -> None:
    window = TrafficWindow(window_s=3)
    window.observe(0.0, reading(h1=(0, 0)))
    window.observe(1.0, reading(h1=(30, 30)))  # a burst of failures, then calm
    for second in range(2, 6):
        window.observe(float(second), reading(h1=(30 + second - 1, 30)))
    rate = window.rate(GROUP)
    assert rate is not None
    assert (rate.requests_per_s, rate.errors_per_s, rate.window_s) == (1.0, 0.0, 3.0)


def test_a_counter_reset_counts_from_zero() -> None:
    """A host removed and added again (or a restarted Envoy) starts its counters anew."""
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(500, 20)))
    window.observe(1.0, reading(h1=(3, 1)))
    rate = window.rate(GROUP)
    assert rate is not None and (rate.requests_per_s, rate.errors_per_s) == (3.0, 1.0)


def test_a_new_host_counts_from_zero_and_a_gone_host_counts_nothing() -> None:
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(10, 0)))
    window.observe(1.0, reading(h1=(12, 0), h2=(3, 1)))  # h2 registered since the last look
    window.observe(2.0, reading(h2=(7, 1)))  # h1 drained and removed
    rate = window.rate(GROUP)
    assert rate is not None and (rate.requests_per_s, rate.errors_per_s) == (4.5, 0.5)


def test_an_envoys_first_answer_is_only_a_baseline() -> None:
    """A second Envoy answering late brings counters from before we looked: not a burst."""
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(0, 0)))
    late = {"envoy-b": {GROUP: {"h1": RequestCounts(9000, 900)}}}
    window.observe(1.0, {**reading(h1=(2, 0)), **late})
    window.observe(
        2.0, {**reading(h1=(4, 0)), "envoy-b": {GROUP: {"h1": RequestCounts(9004, 900)}}}
    )
    rate = window.rate(GROUP)
    assert rate is not None and (rate.requests_per_s, rate.errors_per_s) == (4.0, 0.0)


def test_an_envoy_that_misses_a_reading_loses_no_traffic() -> None:
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(0, 0)))
    window.observe(1.0, {})  # its admin did not answer
    window.observe(2.0, reading(h1=(10, 2)))
    rate = window.rate(GROUP)
    assert rate is not None and (rate.requests_per_s, rate.errors_per_s) == (5.0, 1.0)


def test_idle_group_has_zero_rates_and_no_error_share() -> None:
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(7, 7)))
    window.observe(1.0, reading(h1=(7, 7)))
    rate = window.rate(GROUP)
    assert rate == TrafficRate(0.0, 0.0, 1.0) and rate.error_share is None
    assert window.rate("engine__unknown__group") == TrafficRate(0.0, 0.0, 1.0)


def test_a_gap_longer_than_the_window_forgets_everything() -> None:
    window = TrafficWindow(window_s=10)
    window.observe(0.0, reading(h1=(0, 0)))
    window.observe(1.0, reading(h1=(10, 0)))
    window.observe(60.0, reading(h1=(20, 0)))  # Envoy's admin did not answer for a minute
    assert window.rate(GROUP) is None
    window.observe(61.0, reading(h1=(25, 0)))
    rate = window.rate(GROUP)
    assert rate is not None and rate.requests_per_s == 5.0


def test_stale_or_repeated_readings_are_ignored() -> None:
    window = TrafficWindow(window_s=10)
    window.observe(5.0, reading(h1=(0, 0)))
    window.observe(5.0, reading(h1=(100, 0)))
    window.observe(4.0, reading(h1=(100, 0)))
    assert window.rate(GROUP) is None


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TrafficWindow(window_s=0)
