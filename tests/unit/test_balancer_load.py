"""Unit tests of the balancer's value types and the step-time maths from engine counters."""

from __future__ import annotations

import pytest

from control_plane.balancer.load import (
    Decision,
    DecodeCounters,
    GroupLoad,
    ModelLoad,
    ReplicaCounters,
    step_sample,
)
from control_plane.balancer.signals import ReplicaSampler


def test_step_time_from_tokens_made_by_a_steady_batch() -> None:
    # 32 sequences for 2 s at 8 ms a step: 250 steps, 32 tokens each.
    sample = step_sample(ReplicaCounters(10.0, 32, 1000), ReplicaCounters(12.0, 32, 9000))
    assert sample is not None
    assert sample.running_per_replica == 32
    assert sample.step_seconds == pytest.approx(0.008)


def test_step_time_uses_the_mean_of_the_two_running_readings() -> None:
    sample = step_sample(ReplicaCounters(0.0, 18, 0), ReplicaCounters(1.0, 22, 2000))
    assert sample is not None
    assert sample.running_per_replica == 20
    assert sample.step_seconds == pytest.approx(20 * 1.0 / 2000)


@pytest.mark.parametrize(("before", "after"), [(0, 1), (1, 0), (10, 30), (2, 4)])
def test_a_batch_that_changed_a_lot_says_nothing(before: float, after: float) -> None:
    assert step_sample(ReplicaCounters(0.0, before, 0), ReplicaCounters(1.0, after, 50)) is None


@pytest.mark.parametrize(
    ("previous", "current"),
    [
        (ReplicaCounters(0.0, 4, 500), ReplicaCounters(1.0, 4, 500)),  # no token made
        (ReplicaCounters(0.0, 0, 500), ReplicaCounters(1.0, 0, 600)),  # nothing running
        (ReplicaCounters(0.0, 4, 5000), ReplicaCounters(1.0, 4, 120)),  # restarted
        (ReplicaCounters(1.0, 4, 500), ReplicaCounters(1.0, 4, 600)),  # no time passed
    ],
)
def test_no_sample_when_the_counters_say_nothing(
    previous: ReplicaCounters, current: ReplicaCounters
) -> None:
    assert step_sample(previous, current) is None


def test_the_engines_decode_tally_gives_the_step_time_without_prefill() -> None:
    # 300 decode steps of 4 ms running 20 sequences; the tokens, which a long prefill
    # step between the readings would skew, are not used.
    before = ReplicaCounters(0.0, 20, 1000, DecodeCounters(100, 0.5, 2000))
    after = ReplicaCounters(2.0, 30, 1300, DecodeCounters(400, 1.7, 8000))
    sample = step_sample(before, after)
    assert sample is not None
    assert sample.running_per_replica == pytest.approx(20)
    assert sample.step_seconds == pytest.approx(0.004)


@pytest.mark.parametrize(
    "after",
    [
        DecodeCounters(100, 0.5, 2000),  # no decode step in between (idle, or prefilling)
        DecodeCounters(3, 0.01, 30),  # the engine restarted
    ],
)
def test_no_sample_when_the_decode_tally_says_nothing(after: DecodeCounters) -> None:
    before = ReplicaCounters(0.0, 4, 500, DecodeCounters(100, 0.5, 2000))
    assert step_sample(before, ReplicaCounters(1.0, 4, 900, after)) is None


def test_without_a_tally_on_both_readings_the_tokens_tell_the_step_time() -> None:
    before = ReplicaCounters(10.0, 32, 1000)
    after = ReplicaCounters(12.0, 32, 9000, DecodeCounters(1, 0.1, 1))
    sample = step_sample(before, after)
    assert sample is not None and sample.step_seconds == pytest.approx(0.008)


def test_decision_weights_must_sum_to_100() -> None:
    assert Decision(weights={"a": 60, "b": 40}, reason="ok").weights == {"a": 60, "b": 40}
    for weights in ({"a": 60, "b": 39}, {"a": 101, "b": -1}, {}):
        with pytest.raises(ValueError):
            Decision(weights=weights, reason="bad")


def test_model_load_needs_distinct_groups() -> None:
    with pytest.raises(ValueError, match="no replica groups"):
        ModelLoad(model="m", groups=(), now=0.0)
    with pytest.raises(ValueError, match="duplicate"):
        ModelLoad(model="m", groups=(GroupLoad("a", 1, 0), GroupLoad("a", 2, 0)), now=0.0)
    load = ModelLoad(model="m", groups=(GroupLoad("a", 1, 3.0), GroupLoad("b", 2, 4.5)), now=0.0)
    assert load.in_flight == 7.5
    assert load.group_names == ("a", "b")


def test_a_first_reading_with_a_tally_is_the_mean_of_the_steps_counted_so_far() -> None:
    # A warmed-up engine read for the first time: 4 steps of one sequence, 5.1 ms each.
    sampler = ReplicaSampler()
    first = sampler.observe({"r1": ReplicaCounters(3.0, 0, 0, DecodeCounters(4, 0.0204, 4))}).steps
    assert first["r1"].running_per_replica == pytest.approx(1.0)
    assert first["r1"].step_seconds == pytest.approx(0.0051)
    # Next time, only what happened since.
    later = ReplicaCounters(4.0, 8, 80, DecodeCounters(14, 0.0804, 84))
    assert sampler.observe({"r1": later}).steps["r1"].step_seconds == pytest.approx(0.006)


def test_a_first_reading_without_a_tally_gives_no_sample() -> None:
    sampler = ReplicaSampler()
    assert sampler.observe({"r1": ReplicaCounters(3.0, 8, 500)}).steps == {}
    assert sampler.observe({"r1": ReplicaCounters(4.0, 8, 1500)}).steps["r1"].step_seconds == (
        pytest.approx(0.008)
    )
