"""Routing benchmark records (routing.json), plans and per-policy configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.balancer.config import AdaptiveConfig, ConcurrencyBandsConfig, StaticConfig
from control_plane.model import FrugalConfig
from frugal.bench.fleet import POLICIES, StackPorts, routing_config
from frugal.bench.group_share import shares, upstream_requests
from frugal.bench.plan import DEFAULT_LEVELS, QUICK_LEVELS, RoutingPlan, levels_from
from frugal.bench.records import EXTRA_KEYS, REQUIRED_KEYS, build_record, problems
from frugal.bench.stats import LevelSummary

SUMMARY = LevelSummary(
    requests=10,
    errors=1,
    tokens=300,
    duration_s=3.0,
    throughput_tok_s=100.0,
    ttft_p50_ms=120.0,
    ttft_p99_ms=400.0,
    tbt_p50_ms=50.0,
)
PORTS = StackPorts(
    listener=20001, xds=20002, envoy_admin=20003, safety_filter=20004, admin=20005,
    redis=20006, tp8=(20010,), tp2=(20011, 20012, 20013, 20014),
)  # fmt: skip


def test_a_record_has_exactly_the_required_keys_then_the_extras() -> None:
    record = build_record("adaptive", 64, SUMMARY, time_scale=10.0, group_share={"tp8": 0.25})
    assert tuple(record)[: len(REQUIRED_KEYS)] == REQUIRED_KEYS
    assert set(record) == set(REQUIRED_KEYS) | set(EXTRA_KEYS)
    assert problems(record) == []
    assert record["policy"] == "adaptive" and record["load"] == 64 and record["errors"] == 1


def test_simulated_units_divide_times_and_multiply_throughput_by_the_time_scale() -> None:
    record = build_record("static-tp8", "trace", SUMMARY, time_scale=10.0)
    assert record["ttft_p50_ms"] == 120.0 and record["ttft_p50_ms_sim"] == 12.0
    assert record["ttft_p99_ms_sim"] == 40.0 and record["tbt_p50_ms_sim"] == 5.0
    assert record["throughput_tok_s"] == 100.0 and record["throughput_tok_s_sim"] == 1000.0


def test_a_load_is_a_concurrency_or_the_trace() -> None:
    with pytest.raises(ValueError):
        build_record("static-tp8", "burst", SUMMARY, time_scale=1.0)
    record = build_record("static-tp8", 4, SUMMARY, time_scale=1.0)
    assert problems({**record, "load": 0}) == ["load 0 is neither a positive int nor 'trace'"]
    assert problems({**record, "surprise": 1}) == ["unknown key 'surprise'"]
    missing = {k: v for k, v in record.items() if k != "tbt_p50_ms"}
    assert problems(missing) == ["missing key 'tbt_p50_ms'"]


def test_group_shares_come_from_envoys_per_cluster_counters() -> None:
    clusters = {"tp8": "engine__m__tp8", "tp2": "engine__m__tp2"}
    before = upstream_requests(
        "cluster.engine__m__tp8.upstream_rq_total: 10\ncluster.xds.upstream_rq_total: 3\n",
        clusters,
    )
    after = upstream_requests(
        "cluster.engine__m__tp8.upstream_rq_total: 13\n"
        "cluster.engine__m__tp2.upstream_rq_total: 9\n",
        clusters,
    )
    assert before == {"tp8": 10, "tp2": 0}
    assert shares(before, after) == {"tp8": 0.25, "tp2": 0.75}
    assert shares(after, after) == {"tp8": 0.0, "tp2": 0.0}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_policy_gives_a_valid_frugal_config(policy: str) -> None:
    config = FrugalConfig.model_validate(
        routing_config(policy, PORTS, time_scale=10.0, redis_dir="/tmp/redis")
    )
    (model,) = config.models
    weights = {g.name: g.weight for g in model.groups}
    sizes = {g.name: len(g.replicas) for g in model.groups}
    assert sizes == {"tp8": 1, "tp2": 4}
    assert not config.safety_filter.enforce
    assert config.profiles["tp8"]["time_scale"] == 10.0
    expected = {
        "static-tp8": (StaticConfig, {"tp8": 100, "tp2": 0}),
        "static-tp2": (StaticConfig, {"tp8": 0, "tp2": 100}),
        "concurrency_bands": (ConcurrencyBandsConfig, {"tp8": 100, "tp2": 0}),
        "adaptive": (AdaptiveConfig, {"tp8": 100, "tp2": 0}),
        "adaptive+picker": (AdaptiveConfig, {"tp8": 100, "tp2": 0}),
    }[policy]
    assert isinstance(model.balancer, expected[0])
    assert weights == expected[1]
    assert (model.group_picker is not None) == (policy == "adaptive+picker")


def test_concurrency_bands_split_at_64_from_tp8_to_tp2() -> None:
    data = routing_config("concurrency_bands", PORTS, time_scale=1.0, redis_dir="r")
    balancer = FrugalConfig.model_validate(data).models[0].balancer
    assert isinstance(balancer, ConcurrencyBandsConfig)
    assert (balancer.threshold, balancer.low_load_group, balancer.high_load_group) == (
        64,
        "tp8",
        "tp2",
    )


def test_levels_default_quick_and_given() -> None:
    assert [lv.concurrency for lv in DEFAULT_LEVELS] == [1, 4, 16, 64, 128, 256]
    assert [lv.concurrency for lv in QUICK_LEVELS] == [1, 16, 64]
    given = levels_from([4, 1, 4], 2, quick=False)
    assert [(lv.concurrency, lv.requests_per_client) for lv in given] == [(1, 2), (4, 2)]
    assert levels_from(None, None, quick=True) == QUICK_LEVELS
    with pytest.raises(ValueError):
        levels_from([0], None, quick=False)


def test_a_plan_refuses_unknown_policies() -> None:
    with pytest.raises(ValueError, match="unknown"):
        RoutingPlan(policies=("round-robin",), levels=QUICK_LEVELS, trace=None)
    plan = RoutingPlan(policies=("adaptive",), levels=QUICK_LEVELS, trace=None)
    assert plan.time_scale == 10.0
    assert not Path("routing.json").exists()  # plans are pure: nothing written
