"""Unit tests of the balancer policy registry, the static policy and the concurrency bands."""

from __future__ import annotations

from typing import get_args

import pytest

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.concurrency_bands import Band, ConcurrencyBandsPolicy
from control_plane.balancer.config import (
    AdaptiveConfig,
    BalancerConfig,
    ConcurrencyBandsConfig,
    StaticConfig,
)
from control_plane.balancer.load import GroupLoad, ModelLoad
from control_plane.balancer.policy import POLICIES, build_policy
from control_plane.balancer.static import StaticPolicy
from control_plane.balancer.weights import to_weights

BANDS = ConcurrencyBandsConfig(
    threshold=64, hysteresis=8, low_load_group="tp8", high_load_group="tp2"
)


def _load(in_flight: float = 0.0, *, tp8: int = 1, tp2: int = 4) -> ModelLoad:
    """The paper's two groups, with the in-flight load put on tp8 (the policy sums it)."""
    return ModelLoad(
        model="mixtral",
        groups=(GroupLoad("tp8", tp8, in_flight), GroupLoad("tp2", tp2, 0.0)),
        now=0.0,
    )


def test_every_config_type_has_a_registered_policy() -> None:
    config_classes = get_args(get_args(BalancerConfig)[0])
    assert {cls.model_fields["type"].default for cls in config_classes} == set(POLICIES)


@pytest.mark.parametrize(
    ("config", "policy_class"),
    [
        (StaticConfig(), StaticPolicy),
        (BANDS, ConcurrencyBandsPolicy),
        (AdaptiveConfig(), AdaptivePolicy),
    ],
)
def test_build_policy_dispatches_on_type(config: BalancerConfig, policy_class: type) -> None:
    policy = build_policy(config, {"tp8": 50, "tp2": 50})
    assert isinstance(policy, policy_class)
    assert sum(policy.decide(_load()).weights.values()) == 100


def test_a_factory_refuses_another_policys_config() -> None:
    with pytest.raises(TypeError):
        POLICIES["static"](AdaptiveConfig(), {})


def test_largest_remainder_rounding_sums_to_100() -> None:
    assert to_weights({"a": 1, "b": 1, "c": 1}, ["a", "b", "c"]) == {"a": 34, "b": 33, "c": 33}
    assert to_weights({"a": 2, "b": 1}, ["a", "b"]) == {"a": 67, "b": 33}
    # 14.29 each: remainders equal, so the first listed groups get the spare points.
    seven = to_weights(dict.fromkeys("abcdefg", 1.0), list("abcdefg"))
    assert list(seven.values()) == [15, 15, 14, 14, 14, 14, 14]
    assert to_weights({"a": 0.0}, ["a", "b"]) == {"a": 50, "b": 50}


def test_static_normalises_configured_weights() -> None:
    policy = StaticPolicy(StaticConfig(), {"tp8": 3, "tp2": 1})
    decision = policy.decide(_load())
    assert decision.weights == {"tp8": 75, "tp2": 25}
    assert "tp8=75" in decision.reason


def test_static_gives_nothing_to_a_group_without_replicas() -> None:
    policy = StaticPolicy(StaticConfig(), {"tp8": 3, "tp2": 1})
    decision = policy.decide(_load(tp8=0))
    assert decision.weights == {"tp8": 0, "tp2": 100}
    assert "no healthy replicas: tp8" in decision.reason


def test_static_keeps_the_configured_split_when_no_group_has_replicas() -> None:
    policy = StaticPolicy(StaticConfig(), {"tp8": 1, "tp2": 1})
    assert policy.decide(_load(tp8=0, tp2=0)).weights == {"tp8": 50, "tp2": 50}


def test_static_spreads_evenly_when_only_zero_weight_groups_are_up() -> None:
    policy = StaticPolicy(StaticConfig(), {"tp8": 100, "tp2": 0})
    assert policy.decide(_load(tp8=0)).weights == {"tp8": 0, "tp2": 100}


def test_bands_send_low_load_to_tp8_and_high_load_to_tp2() -> None:
    policy = ConcurrencyBandsPolicy(BANDS)
    low = policy.decide(_load(10))
    assert low.weights == {"tp8": 100, "tp2": 0}
    assert "10 in flight" in low.reason and "low band" in low.reason
    high = policy.decide(_load(100))
    assert high.weights == {"tp8": 0, "tp2": 100}
    assert "high band" in high.reason


def test_bands_keep_their_choice_inside_the_hysteresis() -> None:
    policy = ConcurrencyBandsPolicy(BANDS)
    # Rising: stays low up to threshold + hysteresis, switches only beyond it.
    for in_flight in (40, 56, 64, 72):
        assert policy.decide(_load(in_flight)).weights["tp8"] == 100
    assert policy.decide(_load(73)).weights["tp2"] == 100
    # Falling: stays high down to threshold - hysteresis.
    for in_flight in (72, 64, 56):
        assert policy.decide(_load(in_flight)).weights["tp2"] == 100
        assert policy.band is Band.HIGH
    assert policy.decide(_load(55)).weights["tp8"] == 100
    assert policy.band is Band.LOW


def test_bands_start_inside_the_band_by_the_threshold() -> None:
    assert ConcurrencyBandsPolicy(BANDS).decide(_load(64)).weights["tp8"] == 100
    assert ConcurrencyBandsPolicy(BANDS).decide(_load(65)).weights["tp2"] == 100


def test_bands_fall_back_when_the_chosen_group_has_no_replicas() -> None:
    policy = ConcurrencyBandsPolicy(BANDS)
    decision = policy.decide(_load(10, tp8=0))
    assert decision.weights == {"tp8": 0, "tp2": 100}
    assert "tp8 unavailable" in decision.reason
    # The band itself is kept: once tp8 is back, low load goes to it again.
    assert policy.band is Band.LOW
    assert policy.decide(_load(10)).weights == {"tp8": 100, "tp2": 0}
    assert policy.decide(_load(100, tp2=0)).weights == {"tp8": 100, "tp2": 0}


def test_bands_sum_in_flight_over_all_groups() -> None:
    load = ModelLoad(
        model="mixtral",
        groups=(GroupLoad("tp8", 1, 40), GroupLoad("tp2", 4, 40)),
        now=0.0,
    )
    assert ConcurrencyBandsPolicy(BANDS).decide(load).weights == {"tp8": 0, "tp2": 100}
