"""Unit tests of the publish gate: a dead band against the published weights and an interval."""

from __future__ import annotations

import pytest

from control_plane.balancer.gate import WeightGate, moved_weight


def test_first_weights_publish_at_once() -> None:
    gate = WeightGate()
    assert gate.offer(None, {"tp8": 100, "tp2": 0}, now=3.0)
    assert gate.published_at == 3.0


def test_noise_inside_the_dead_band_never_publishes() -> None:
    gate = WeightGate(min_change=5, min_interval_s=0.5)
    published = {"tp8": 60, "tp2": 40}
    assert gate.offer(None, published, now=0.0)
    for tick in range(1, 200):
        wobble = (tick * 7) % 9 - 4  # -4..4, never 5
        proposed = {"tp8": 60 + wobble, "tp2": 40 - wobble}
        assert not gate.offer(published, proposed, now=tick * 1.0)
    assert gate.published_at == 0.0


def test_a_big_change_publishes_once_then_waits_for_the_interval() -> None:
    gate = WeightGate(min_change=5, min_interval_s=0.5)
    first = {"tp8": 95, "tp2": 5}
    assert gate.offer(None, first, now=10.0)
    # Too soon after the first publish, however big the change.
    assert not gate.offer(first, {"tp8": 5, "tp2": 95}, now=10.2)
    assert gate.offer(first, {"tp8": 5, "tp2": 95}, now=10.5)
    second = {"tp8": 5, "tp2": 95}
    assert not gate.offer(second, {"tp8": 50, "tp2": 50}, now=10.7)
    assert not gate.offer(second, {"tp8": 50, "tp2": 50}, now=10.99)
    assert gate.offer(second, {"tp8": 50, "tp2": 50}, now=11.0)


def test_slow_drift_adds_up_against_the_published_weights() -> None:
    gate = WeightGate(min_change=5, min_interval_s=0.0)
    published = {"a": 50, "b": 50}
    assert gate.offer(None, published, now=0.0)
    outcomes = [gate.offer(published, {"a": 50 + d, "b": 50 - d}, now=float(d)) for d in range(6)]
    assert outcomes == [False, False, False, False, False, True]


def test_a_changed_set_of_groups_publishes_at_once() -> None:
    gate = WeightGate(min_change=5, min_interval_s=60.0)
    assert gate.offer(None, {"a": 100}, now=0.0)
    assert gate.offer({"a": 100}, {"a": 100, "b": 0}, now=0.1)


def test_gate_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        WeightGate(min_change=0)
    with pytest.raises(ValueError):
        WeightGate(min_interval_s=-1.0)


def test_the_gate_counts_the_weight_moved_over_many_groups() -> None:
    """50 groups at 2 each to 25 at 4: no group moves by 5, but half the weight moves."""
    gate = WeightGate(min_change=5, min_interval_s=0)
    names = [f"g{i:02d}" for i in range(50)]
    even = dict.fromkeys(names, 2)
    half = {name: 4 if i < 25 else 0 for i, name in enumerate(names)}
    assert gate.offer(None, even, now=0.0)
    assert moved_weight(even, half) == 50
    assert gate.offer(even, half, now=1.0)
    nudged = {**half, "g00": 2, "g01": 6}  # 2 points from one group to another
    assert moved_weight(half, nudged) == 2
    assert not gate.offer(half, nudged, now=2.0)
