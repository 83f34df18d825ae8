"""Unit tests of the adaptive policy: the online step-time fit, the water-filling split,
and the ScaleLLM section-6 crossover it should rediscover from engine counters alone."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.config import AdaptiveConfig
from control_plane.balancer.cost_model import OnlineLinearFit, StepCost, split_load
from control_plane.balancer.load import (
    Decision,
    GroupLoad,
    ModelLoad,
    ReplicaCounters,
    StepSample,
    step_sample,
)

# docs/simulator.md: one tp8 replica vs four tp2 replicas.
TRUTH = {"tp8": StepCost(a_ms=5.0, b_ms=0.10), "tp2": StepCost(a_ms=8.4, b_ms=0.13)}
REPLICAS = {"tp8": 1, "tp2": 4}
MAX_BATCH = {"tp8": 256, "tp2": 128}
TICK_S = 0.5
NOISE = 0.03  # +/- 3 % on each interval's mean step time


@dataclass
class _Replica:
    counters: ReplicaCounters


def _trained_policy(ticks: int = 80, seed: int = 7) -> AdaptivePolicy:
    """Drive the policy with step samples made, as the I/O loop will, from counters of
    engines that follow the true lines: each tick every replica runs some batch size
    for half a second and makes one token per sequence per step."""
    rng = random.Random(seed)
    policy = AdaptivePolicy(AdaptiveConfig())
    replicas = {
        group: [_Replica(ReplicaCounters(0.0, 0, 0)) for _ in range(count)]
        for group, count in REPLICAS.items()
    }
    for tick in range(1, ticks + 1):
        now = tick * TICK_S
        groups = []
        for group, members in replicas.items():
            samples = []
            for replica in members:
                running = rng.randint(1, MAX_BATCH[group] // 2)
                step_s = TRUTH[group].step_ms(running) / 1000 * (1 + rng.uniform(-NOISE, NOISE))
                tokens = replica.counters.tokens_total + running * TICK_S / step_s
                current = ReplicaCounters(now, running, tokens)
                # Hold the batch steady over the interval, as the engine's gauge would read.
                previous = ReplicaCounters(
                    replica.counters.at, running, replica.counters.tokens_total
                )
                sample = step_sample(previous, current)
                replica.counters = current
                if sample is not None and tick > 1:
                    samples.append(sample)
            groups.append(GroupLoad(group, len(members), 0.0, samples=tuple(samples)))
        policy.decide(ModelLoad(model="mixtral", groups=tuple(groups), now=now))
    return policy


def _at(policy: AdaptivePolicy, in_flight: float) -> dict[str, int]:
    load = ModelLoad(
        model="mixtral",
        groups=(GroupLoad("tp8", 1, in_flight / 2), GroupLoad("tp2", 4, in_flight / 2)),
        now=1e6,
    )
    return dict(policy.decide(load).weights)


@pytest.fixture(scope="module")
def trained() -> AdaptivePolicy:
    return _trained_policy()


@pytest.mark.parametrize("group", ["tp8", "tp2"])
def test_fit_recovers_the_true_step_lines(trained: AdaptivePolicy, group: str) -> None:
    fitted = trained.fitted(group)
    assert fitted is not None
    assert fitted.a_ms == pytest.approx(TRUTH[group].a_ms, rel=0.10)
    assert fitted.b_ms == pytest.approx(TRUTH[group].b_ms, rel=0.10)


def test_low_load_goes_to_tp8(trained: AdaptivePolicy) -> None:
    for in_flight in range(11):
        weights = _at(trained, in_flight)
        # Both groups are measured, so nothing is held back for exploring: the tp8 line
        # is below tp2's at these loads.
        assert weights == {"tp8": 100, "tp2": 0}, in_flight


def test_high_load_goes_mostly_to_tp2(trained: AdaptivePolicy) -> None:
    weights = _at(trained, 200)
    assert weights["tp2"] > 60
    assert weights["tp8"] >= 5


def test_weights_sum_to_100(trained: AdaptivePolicy) -> None:
    for in_flight in range(0, 400, 3):
        assert sum(_at(trained, in_flight).values()) == 100


def _crossover(policy: AdaptivePolicy) -> int:
    return next(n for n in range(400) if _at(policy, n)["tp2"] > 50)


def test_crossover_lies_where_the_paper_puts_it(trained: AdaptivePolicy) -> None:
    # The true lines cross (tp2 past 50 %) at 51 in flight; docs/simulator.md says near 50-64.
    assert 10 <= _crossover(trained) <= 150
    assert abs(_crossover(trained) - 51) <= 5


def test_reason_shows_each_groups_line_and_share(trained: AdaptivePolicy) -> None:
    load = ModelLoad(
        model="mixtral", groups=(GroupLoad("tp8", 1, 0.0), GroupLoad("tp2", 4, 0.0)), now=0.0
    )
    reason = trained.decide(load).reason
    assert reason.startswith("adaptive: 0 in flight")
    assert "tp8 a=5." in reason and "-> 100%" in reason and "tp2 a=8." in reason
    assert "exploring" not in reason


def test_decisions_are_deterministic() -> None:
    first, second = _trained_policy(ticks=20, seed=3), _trained_policy(ticks=20, seed=3)
    assert [_at(first, n) for n in range(0, 300, 7)] == [_at(second, n) for n in range(0, 300, 7)]


def test_before_any_group_is_measured_the_split_follows_replica_counts() -> None:
    policy = AdaptivePolicy(AdaptiveConfig())
    decision = policy.decide(
        ModelLoad(
            model="mixtral", groups=(GroupLoad("tp8", 1, 0.0), GroupLoad("tp2", 4, 0.0)), now=0.0
        )
    )
    assert decision.weights == {"tp8": 20, "tp2": 80}
    assert "exploring tp8 20%, tp2 80%" in decision.reason
    assert policy.fitted("tp8") is None


def _steady(policy: AdaptivePolicy, groups: dict[str, tuple[int, StepCost | None]]) -> Decision:
    """One decision after a tick where each group with a line reported one step at 1 running."""
    loads = tuple(
        GroupLoad(
            name,
            replicas,
            0.0,
            samples=() if cost is None else (StepSample(1.0, cost.step_ms(1.0) / 1e3),),
        )
        for name, (replicas, cost) in groups.items()
    )
    return policy.decide(ModelLoad(model="m", groups=loads, now=0.0))


def test_unmeasured_groups_share_the_exploration_budget() -> None:
    """Of 50 groups, one measured: the other 49 do not each keep min_share (they would
    take all of the weight); they share min_share, a point each for the first five."""
    policy = AdaptivePolicy(AdaptiveConfig(min_share=0.05))
    names = [f"g{i:02d}" for i in range(50)]
    groups = {name: (8, TRUTH["tp8"] if name == "g00" else None) for name in names}
    weights = _steady(policy, groups).weights
    assert weights["g00"] == 95
    assert [weights[n] for n in names[1:6]] == [1] * 5
    assert all(weights[n] == 0 for n in names[6:])
    # Once measured, a group leaves the budget to the next ones.
    groups["g01"] = (8, TRUTH["tp2"])
    weights = _steady(policy, groups).weights
    assert weights["g01"] == 0  # its line is above g00's at this load: no traffic
    assert [weights[n] for n in names[2:7]] == [1] * 5


def test_one_unmeasured_group_gets_the_whole_budget() -> None:
    policy = AdaptivePolicy(AdaptiveConfig(min_share=0.1))
    weights = _steady(policy, {"tp8": (1, TRUTH["tp8"]), "tp2": (4, None)}).weights
    assert weights == {"tp8": 90, "tp2": 10}
    weights = _steady(AdaptivePolicy(AdaptiveConfig(min_share=0)), {
        "tp8": (1, TRUTH["tp8"]), "tp2": (4, None)}).weights  # fmt: skip
    assert weights == {"tp8": 100, "tp2": 0}


def test_a_fit_needs_samples_spread_over_load() -> None:
    fit = OnlineLinearFit(forgetting=0.98)
    fit.add(10, 6.0)
    fit.add(20, 7.0)
    assert fit.line() is None  # two samples only
    same = OnlineLinearFit(forgetting=0.98)
    for _ in range(50):
        same.add(16, 6.6)
    assert same.line() is None  # one load level: a and b cannot be told apart
    fit.add(30, 8.0)
    assert fit.line() == pytest.approx((5.0, 0.1))


def test_steady_load_holds_the_last_good_fit() -> None:
    fit = OnlineLinearFit(forgetting=0.9)
    for x in range(1, 30):
        fit.add(x, 5.0 + 0.1 * x)
    for i in range(2000):
        fit.add(12, 6.2 + (0.05 if i % 2 else -0.05))  # steady load, noisy step time
    a_ms, b_ms = fit.line() or (0.0, 0.0)
    assert a_ms == pytest.approx(5.0, rel=0.10)
    assert b_ms == pytest.approx(0.1, rel=0.10)


def test_forgetting_follows_a_changed_engine() -> None:
    fit = OnlineLinearFit(forgetting=0.9)
    for x in range(1, 100):
        fit.add(x % 20 + 1, 5.0 + 0.1 * (x % 20 + 1))
    for x in range(1, 200):
        fit.add(x % 20 + 1, 10.0 + 0.2 * (x % 20 + 1))
    assert fit.line() == pytest.approx((10.0, 0.2), rel=1e-3)


def test_split_equalises_marginal_costs() -> None:
    split = split_load(TRUTH, REPLICAS, 201)
    assert sum(split.values()) == pytest.approx(201)
    marginal = {g: TRUTH[g].a_ms + 2 * TRUTH[g].b_ms * split[g] / REPLICAS[g] for g in split}
    assert marginal["tp8"] == pytest.approx(marginal["tp2"])
    # Below tp2's intercept, everything stays on tp8.
    assert split_load(TRUTH, REPLICAS, 10) == {"tp8": pytest.approx(10), "tp2": 0.0}


def test_a_group_without_healthy_replicas_gets_nothing() -> None:
    policy = AdaptivePolicy(AdaptiveConfig(min_share=0.1))
    load = ModelLoad(
        model="m",
        groups=(GroupLoad("a", 1, 0.0), GroupLoad("b", 8, 0.0), GroupLoad("down", 0, 3.0)),
        now=0.0,
    )
    decision = policy.decide(load)
    assert decision.weights == {"a": 11, "b": 89, "down": 0}
    assert "no healthy replicas: down" in decision.reason


def test_no_group_with_replicas_splits_evenly() -> None:
    policy = AdaptivePolicy(AdaptiveConfig())
    load = ModelLoad(model="m", groups=(GroupLoad("a", 0, 0.0), GroupLoad("b", 0, 0.0)), now=0.0)
    assert policy.decide(load).weights == {"a": 50, "b": 50}


def test_a_steady_low_load_already_tells_the_faster_group() -> None:
    """At one request in flight the samples never spread over load, so no line can be
    fitted; their mean step time (with the prior slope) still shows tp8 is faster."""
    policy = AdaptivePolicy(AdaptiveConfig())
    for _ in range(5):
        groups = tuple(
            GroupLoad(
                name, REPLICAS[name], 0.5, samples=(StepSample(1.0, cost.step_ms(1.0) / 1e3),)
            )
            for name, cost in TRUTH.items()
        )
        decision = policy.decide(ModelLoad(model="mixtral", groups=groups, now=0.0))
    assert decision.weights["tp8"] >= 90
    assert policy.fitted("tp8") is None


def test_a_level_needs_samples() -> None:
    fit = OnlineLinearFit(forgetting=0.98)
    assert fit.level(0.1) is None
    for _ in range(3):
        fit.add(1.0, 5.1)
    assert fit.level(0.1) == pytest.approx((5.0, 0.1))
