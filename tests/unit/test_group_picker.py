"""The per-request group picker (frugal.group_picker), the lines the adaptive policy gives it
(AdaptivePolicy.group_lines, AdaptivePolicy.picker) as the control plane publishes them, and
the virtual fleet that picks with it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.config import AdaptiveConfig, GroupPickerConfig, StaticConfig
from control_plane.balancer.load import (
    GroupLoad,
    GroupPrefill,
    ModelLoad,
    PrefillSample,
    StepSample,
)
from engine_workers.backends.sim_model import PROFILES
from frugal.bench.virtual.fleet import GroupSpec, VirtualFleet
from frugal.bench.virtual.replica import VirtualRequest
from frugal.bench.virtual.workload import ClosedLoop
from frugal.group_picker import (
    GroupLine,
    GroupQueue,
    ModelPicker,
    PickerConfig,
    decode_pickers,
    encode_pickers,
    pick_group,
    predicted_cost,
)

# The sim profiles' lines (docs/simulator.md).
TP8 = GroupLine(a_ms=5.0, b_ms=0.10, c_ms=0.0125)
TP2 = GroupLine(a_ms=8.4, b_ms=0.13, c_ms=0.03)
TP4 = GroupLine(a_ms=6.5, b_ms=0.11, c_ms=0.02)
CONFIG = PickerConfig()
PICKING = AdaptiveConfig(group_picker=GroupPickerConfig())


def _idle(replicas: int) -> GroupQueue:
    return GroupQueue(replicas=replicas, in_flight=0, awaiting_tokens=0)


def test_the_cost_is_the_predicted_ttft_plus_a_share_of_the_decode_time() -> None:
    queue = GroupQueue(replicas=2, in_flight=6, awaiting_tokens=1000)
    # Per replica 3 in flight and 500 tokens queued; this request's 100 tokens after them.
    ttft = 5.0 + 0.10 * 4 + 0.0125 * (500 + 100)
    decode = 32 * (5.0 + 0.10 * 4)
    assert predicted_cost(TP8, queue, 100, CONFIG) == pytest.approx(ttft + 0.1 * decode)


def test_a_lone_request_goes_to_the_faster_group() -> None:
    assert pick_group({"tp2": (TP2, _idle(4)), "tp8": (TP8, _idle(1))}, 64, CONFIG) == "tp8"


def test_a_short_prompt_skips_a_queued_long_prefill_and_a_long_one_does_not() -> None:
    # tp8 has an 8,000-token prompt waiting for its first token: 100 ms of prefill.
    busy = GroupQueue(replicas=1, in_flight=1, awaiting_tokens=8000)
    groups = {"tp8": (TP8, busy), "tp2": (TP2, _idle(4))}
    assert pick_group(groups, 64, CONFIG) == "tp2"
    # 8,000 tokens more: 240 ms on tp2, 200 on tp8 after the queued one.
    assert pick_group(groups, 8000, CONFIG) == "tp8"


def test_a_group_without_serving_replicas_is_never_picked() -> None:
    down = GroupQueue(replicas=0, in_flight=0, awaiting_tokens=0)
    assert pick_group({"tp8": (TP8, down), "tp2": (TP2, _idle(4))}, 64, CONFIG) == "tp2"
    assert pick_group({"tp8": (TP8, down)}, 64, CONFIG) is None
    assert pick_group({}, 64, CONFIG) is None


def _load(groups: dict[str, GroupPrefill | None]) -> ModelLoad:
    lines = {"tp8": TP8, "tp2": TP2, "tp4": TP4}
    loads = tuple(
        GroupLoad(
            name,
            1,
            0.0,
            samples=tuple(
                StepSample(n, (lines[name].a_ms + lines[name].b_ms * n) / 1000) for n in (1, 10, 30)
            ),
            prefill=prefill,
        )
        for name, prefill in groups.items()
    )
    return ModelLoad("m", loads, 0.25)


def _prefilled(line: GroupLine, tokens: int) -> GroupPrefill:
    step_ms = line.a_ms + line.b_ms * 4 + line.c_ms * tokens
    return GroupPrefill(20, 6000, 100_000, (PrefillSample(4, step_ms / 1000, tokens),))


def test_the_policy_gives_its_fitted_lines_and_the_mean_prefill_where_one_is_missing() -> None:
    policy = AdaptivePolicy(AdaptiveConfig())
    policy.decide(_load({"tp8": _prefilled(TP8, 20_000), "tp2": None}))
    lines = policy.group_lines(["tp8", "tp2", "tp6"])
    assert set(lines) == {"tp8", "tp2"}  # tp6 has reported no step
    assert lines["tp8"].a_ms == pytest.approx(5.0) and lines["tp8"].b_ms == pytest.approx(0.10)
    assert lines["tp8"].c_ms == pytest.approx(0.0125)
    assert lines["tp2"].a_ms == pytest.approx(8.4) and lines["tp2"].b_ms == pytest.approx(0.13)
    assert lines["tp2"].c_ms == pytest.approx(0.0125)  # tp8's, the only one measured
    assert AdaptivePolicy(AdaptiveConfig()).group_lines(["tp8"]) == {}


def test_an_unmeasured_prefill_is_taken_as_slow_as_the_slowest_measured_one() -> None:
    policy = AdaptivePolicy(AdaptiveConfig())
    groups = {"tp8": _prefilled(TP8, 20_000), "tp2": _prefilled(TP2, 20_000), "tp4": None}
    policy.decide(_load(groups))
    lines = policy.group_lines(["tp8", "tp2", "tp4"])
    assert lines["tp2"].c_ms == pytest.approx(0.03)
    assert lines["tp4"].c_ms == pytest.approx(0.03)  # not the mean, 0.021: tp2's


def test_the_published_picker_waits_for_every_serving_group_and_counts_serving_replicas() -> None:
    policy = AdaptivePolicy(AdaptiveConfig())
    load = _load({"tp8": _prefilled(TP8, 20_000), "tp2": None})
    policy.decide(load)
    picker = policy.picker(load, CONFIG)
    assert picker is not None and picker.config == CONFIG
    assert {name: replicas for name, (_, replicas) in picker.groups.items()} == {"tp8": 1, "tp2": 1}
    # A serving group that has reported no step: no lines yet, the weights split.
    unmeasured = GroupLoad("tp6", 2, 0.0)
    assert policy.picker(ModelLoad("m", (*load.groups, unmeasured), 0.5), CONFIG) is None
    # One that does not serve is left out, and then none is missing.
    down = GroupLoad("tp6", 0, 0.0)
    picker = policy.picker(ModelLoad("m", (*load.groups, down), 0.5), CONFIG)
    assert picker is not None and set(picker.groups) == {"tp8", "tp2"}


def test_the_published_state_reads_back_as_written_and_a_bad_one_is_refused() -> None:
    pickers = {"m": ModelPicker(PickerConfig(0.2, 16), {"tp8": (TP8, 1), "tp2": (TP2, 4)})}
    assert decode_pickers(encode_pickers(pickers)) == pickers
    for bad in (b"[]", b'{"m": {"groups": {}}}', b'{"m": {"decode_weight": 0.1}}', b"{"):
        with pytest.raises(ValueError):
            decode_pickers(bad)


def test_the_candidates_carry_each_group_s_queue() -> None:
    picker = ModelPicker(CONFIG, {"tp8": (TP8, 1), "tp2": (TP2, 4)})
    assert picker.candidates({"tp8": (3, 900)}) == {
        "tp8": (TP8, GroupQueue(1, 3, 900)),
        "tp2": (TP2, GroupQueue(4, 0, 0)),
    }


GROUPS = [GroupSpec("tp8", PROFILES["tp8"], 1, 100), GroupSpec("tp2", PROFILES["tp2"], 4, 0)]


def _measured_fleet(views: int = 1) -> VirtualFleet:
    """A picking fleet whose groups have both prefilled: 40 prompts of 2,000 tokens at once
    put enough in flight on tp8 that its decode line sends some to tp2; all done by 5 s."""
    fleet = VirtualFleet(GROUPS, PICKING, seed=1, picker_views=views)
    burst = [VirtualRequest(i, 0.1, 2000, 8) for i in range(40)]
    done = fleet.run(iter(burst), until_s=5.0)
    assert len(done) == 40 and {r.group for r in done} == {"tp8", "tp2"}
    policy = fleet.balance.policy
    assert isinstance(policy, AdaptivePolicy)
    assert policy.prefill_ms_per_token("tp8") == pytest.approx(0.0125, rel=0.05)
    assert policy.prefill_ms_per_token("tp2") == pytest.approx(0.03, rel=0.05)
    return fleet


def test_the_picking_fleet_sends_a_short_prompt_past_a_long_prefill() -> None:
    fleet = _measured_fleet()
    long, short, again = (VirtualRequest(100 + i, fleet.now_s, tokens, 8)
                          for i, tokens in enumerate((8000, 64, 8000)))  # fmt: skip
    for request in (long, short, again):
        fleet.submit(request)
    assert (long.group, short.group, again.group) == ("tp8", "tp2", "tp8")
    assert fleet.queues()["tp8"] == GroupQueue(1, 2, 16_000)


def test_the_picking_fleet_forgets_what_finished_and_keeps_a_lone_client_on_tp8() -> None:
    fleet = VirtualFleet(GROUPS, PICKING, seed=1)
    done = ClosedLoop(1, seed=1, until_s=5.0).run(fleet)
    assert done and {r.group for r in done} == {"tp8"}
    assert {name: q.in_flight for name, q in fleet.queues().items()} == {"tp8": 0, "tp2": 0}
    assert _measured_fleet().queues() == {"tp8": GroupQueue(1, 0, 0), "tp2": GroupQueue(4, 0, 0)}


def test_only_an_adaptive_policy_has_lines_to_pick_by() -> None:
    with pytest.raises(ValidationError, match="group_picker"):
        StaticConfig.model_validate({"group_picker": {}})


def test_each_of_two_pickers_sees_its_own_half_doubled() -> None:
    fleet = _measured_fleet(views=2)  # 40 requests dealt: the next goes to view 0
    long, short, again = (VirtualRequest(100 + i, fleet.now_s, tokens, 8)
                          for i, tokens in enumerate((8000, 64, 64)))  # fmt: skip
    for request in (long, short, again):
        fleet.submit(request)
    # View 1 sent tp8 nothing, so it sees it idle (one picker sent `short` to tp2); view 0
    # sees its own 8,000 tokens as 16,000 and sends the third past them.
    assert (long.group, short.group, again.group) == ("tp8", "tp8", "tp2")
    assert fleet.queues(0)["tp8"] == GroupQueue(1, 2, 16_000)
    assert fleet.queues(1)["tp8"] == GroupQueue(1, 2, 128)
    assert fleet.queues()["tp8"] == GroupQueue(1, 2, 8064)
