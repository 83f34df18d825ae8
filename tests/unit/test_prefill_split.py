"""The adaptive policy's prefill term: the prefill tally sampled between two readings, the
fitted prefill time per token, the burst and output-length watch, and the split that spreads
a burst of long prompts over the groups by their prefill speed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.config import AdaptiveConfig
from control_plane.balancer.cost_model import PrefillPressure, StepCost, split_load, with_prefill
from control_plane.balancer.load import (
    GroupLoad,
    GroupPrefill,
    ModelLoad,
    PrefillCounters,
    PrefillSample,
    ReplicaCounters,
    RequestCounters,
    StepSample,
    prefill_sample,
)
from control_plane.balancer.prefill_watch import BurstWatch, PrefillFit
from control_plane.balancer.signals import ReplicaSampler, group_load

# docs/simulator.md: the tp8 and tp2 profiles' step lines and prefill cost per token.
LINE = {"tp8": StepCost(5.0, 0.10), "tp2": StepCost(8.4, 0.13)}
PREFILL_MS = {"tp8": 0.0125, "tp2": 0.03}
REPLICAS = {"tp8": 1, "tp2": 4}


def test_a_prefill_sample_is_the_mean_prefill_step_between_two_tallies() -> None:
    sample = prefill_sample(PrefillCounters(2, 0.1, 6, 1000), PrefillCounters(6, 0.5, 18, 9000))
    assert sample == PrefillSample(running_per_replica=3.0, step_seconds=0.1, tokens_per_step=2000)
    assert (
        prefill_sample(PrefillCounters(6, 0.5, 18, 9000), PrefillCounters(6, 0.5, 18, 9000)) is None
    )
    assert (
        prefill_sample(PrefillCounters(6, 0.5, 18, 9000), PrefillCounters(1, 0.1, 1, 100)) is None
    )


def _reading(at: float, prompt: float, finished: float, out: float) -> ReplicaCounters:
    return ReplicaCounters(
        at, 2, out, prefill=PrefillCounters(at, at / 10, 2 * at, prompt),
        requests=RequestCounters(finished, out, prompt),
    )  # fmt: skip


def test_the_sampler_gives_what_happened_between_readings_never_a_whole_life() -> None:
    sampler = ReplicaSampler()
    assert sampler.observe({"r": _reading(10, 50_000, 40, 4000)}).prefill == {}
    (later,) = sampler.observe({"r": _reading(12, 53_000, 43, 4300)}).prefill.values()
    assert (later.finished, later.finished_tokens, later.finished_prompt_tokens) == (3, 300, 3000)
    (sample,) = later.samples
    assert (sample.running_per_replica, sample.tokens_per_step) == (2.0, 1500)
    assert sample.step_seconds == pytest.approx(0.1)
    # A restarted engine (its counters went back) gives no traffic that tick.
    (restarted,) = sampler.observe({"r": _reading(1, 100, 1, 10)}).prefill.values()
    assert (restarted.finished, restarted.finished_tokens) == (0, 0)


def test_a_group_sums_its_replicas_prefill() -> None:
    prefill = {
        "a": GroupPrefill(2, 200, 900, (PrefillSample(1, 0.02, 1000),)),
        "b": GroupPrefill(1, 50, 400, ()),
    }
    load = group_load("g", ["a", "b", "c"], 3, 4.0, {}, {}, prefill)
    assert load.prefill == GroupPrefill(3, 250, 1300, (PrefillSample(1, 0.02, 1000),))
    assert group_load("g", ["c"], 1, 0.0, {}, {}, prefill).prefill is None


def test_the_fit_takes_the_decode_line_off_the_prefill_step() -> None:
    fit = PrefillFit(forgetting=0.98)
    assert fit.ms_per_token() is None
    for running, tokens in ((1, 1000), (20, 8000), (60, 300)):
        step_ms = LINE["tp2"].step_ms(running) + PREFILL_MS["tp2"] * tokens
        fit.add(PrefillSample(running, step_ms / 1000, tokens), LINE["tp2"])
    assert fit.ms_per_token() == pytest.approx(PREFILL_MS["tp2"])


def _prefilling(*tokens_per_step: float) -> GroupPrefill:
    """A group none of whose requests finished, each replica prefilling so many at once."""
    return GroupPrefill(samples=tuple(PrefillSample(1, 0.1, t) for t in tokens_per_step))


def test_the_watch_keeps_the_largest_burst_of_its_horizon_and_the_mean_output() -> None:
    watch = BurstWatch(horizon_s=2.0, forgetting=1.0)
    assert watch.pressure() is None
    # The burst: what the replicas prefilled at once, summed over them.
    watch.observe(0.0, [_prefilling(60_000, 20_000), _prefilling(10_000)])
    assert watch.pressure() is None  # no request has finished yet
    watch.observe(0.5, [GroupPrefill(2, 20, 100)])
    assert watch.pressure() is None  # too few: the first to finish are the short ones
    watch.observe(1.0, [GroupPrefill(20, 3880, 9100), GroupPrefill(18, 2100, 2800)])
    assert watch.pressure() == PrefillPressure(90_000, 150, 300)
    watch.observe(2.5, [_prefilling(2000)])  # the burst at 0 s is past the horizon
    pressure = watch.pressure()
    assert pressure is not None and pressure.burst_tokens == 2000


def _shares(costs: dict[str, StepCost], load: float) -> dict[str, float]:
    split = split_load(costs, REPLICAS, load)
    return {name: x / load for name, x in split.items()}


def test_a_burst_of_long_prompts_moves_load_to_the_faster_prefill() -> None:
    # Few requests in flight: on the decode lines alone, all of them go to tp8.
    assert _shares(LINE, 8)["tp2"] == 0
    # 40 prompts of 10,000 tokens at once, 300 tokens out each: tp2's four replicas
    # prefill 133 tokens a ms against tp8's 80, and take the larger part.
    burst = PrefillPressure(burst_tokens=400_000, output_tokens=300, prompt_tokens=10_000)
    costs = {n: with_prefill(LINE[n], PREFILL_MS[n], burst, 40) for n in LINE}
    assert _shares(costs, 40)["tp2"] > 0.5
    # Short prompts leave the decode split as it was, within a point.
    chat = PrefillPressure(burst_tokens=600, output_tokens=300, prompt_tokens=200)
    costs = {n: with_prefill(LINE[n], PREFILL_MS[n], chat, 8) for n in LINE}
    assert _shares(costs, 8)["tp2"] < 0.01


def _group(name: str, in_flight: float, prefill: GroupPrefill | None) -> GroupLoad:
    line = LINE[name]
    samples = tuple(StepSample(n, line.step_ms(n) / 1000) for n in (1.0, 10.0, 30.0))
    return GroupLoad(name, REPLICAS[name], in_flight, samples=samples, prefill=prefill)


def _prefilled(name: str, tokens: float) -> GroupPrefill:
    """A tick in which the group prefilled `tokens` in a step and finished 20 requests of
    300 tokens out and 5,000 in."""
    step_ms = LINE[name].step_ms(4) + PREFILL_MS[name] * tokens
    return GroupPrefill(20, 6000, 100_000, (PrefillSample(4, step_ms / 1000, tokens),))


def _burst(now: float) -> ModelLoad:
    prefilled = (_prefilled(name, 200_000) for name in LINE)
    return ModelLoad(
        "m", tuple(_group(name, 20, p) for name, p in zip(LINE, prefilled, strict=True)), now
    )


def _without_prefill(load: ModelLoad) -> ModelLoad:
    return ModelLoad(load.model, tuple(replace(g, prefill=None) for g in load.groups), load.now)


def test_the_policy_learns_prefill_and_shows_it_in_its_reason() -> None:
    policy = AdaptivePolicy(AdaptiveConfig())
    decision = policy.decide(_burst(0.25))
    assert policy.prefill_ms_per_token("tp8") == pytest.approx(PREFILL_MS["tp8"])
    assert policy.prefill_ms_per_token("tp2") == pytest.approx(PREFILL_MS["tp2"])
    # 400,000 prompt tokens in one tick, 300 out a request: tp2 takes most of them,
    # far more than the decode lines alone give it at 40 requests in flight.
    alone = AdaptivePolicy(AdaptiveConfig()).decide(_without_prefill(_burst(0.25)))
    assert decision.weights["tp2"] > 50 and decision.weights["tp2"] >= alone.weights["tp2"] + 10
    assert "c=0.0300ms/token" in decision.reason and "prompt burst 400000 tokens" in decision.reason


def test_a_zero_horizon_leaves_prefill_out() -> None:
    policy = AdaptivePolicy(AdaptiveConfig(burst_horizon_s=0))
    alone = AdaptivePolicy(AdaptiveConfig()).decide(_without_prefill(_burst(0.25)))
    assert policy.decide(_burst(0.25)).weights == alone.weights
    assert policy.prefill_ms_per_token("tp8") is None
