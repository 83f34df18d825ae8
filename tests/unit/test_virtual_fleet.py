"""The virtual fleet (frugal.bench.virtual.fleet): Envoy's routing, the real balancer on its
ticks, determinism from the seed."""

from __future__ import annotations

import random
from collections import Counter

from control_plane.balancer.config import AdaptiveConfig, StaticConfig
from engine_workers.backends.sim_model import PROFILES
from frugal.bench.traces import MOONCAKE_CONVERSATION
from frugal.bench.virtual.compare import VirtualPlan, paper_fleet, run_closed, ttft_p99_bound_ms
from frugal.bench.virtual.fleet import (
    GroupSpec,
    VirtualFleet,
    least_request_of_two,
    prefix_key,
    prefix_with_bounded_load,
)
from frugal.bench.virtual.replica import VirtualRequest
from frugal.bench.virtual.workload import ClosedLoop, TraceRow, mooncake_trace, tiled

GROUPS = [GroupSpec("tp8", PROFILES["tp8"], 1, 100), GroupSpec("tp2", PROFILES["tp2"], 4, 0)]


def test_least_request_of_two_never_picks_the_busier_of_its_two() -> None:
    rng = random.Random(3)
    picks = Counter(least_request_of_two([5, 0, 5, 5], rng) for _ in range(2000))
    # Host 1 wins whenever it is drawn (half the pairs hold it); the others split the rest.
    assert 0.45 < picks[1] / 2000 < 0.55
    assert least_request_of_two([7], rng) == 0


def test_static_weights_route_everything_to_the_weighted_group() -> None:
    fleet = VirtualFleet(GROUPS, StaticConfig(), seed=1)
    done = ClosedLoop(8, seed=1, until_s=5.0).run(fleet)
    assert done and {r.group for r in done} == {"tp8"}
    assert all(r.finished_s is not None and r.first_token_s is not None for r in done)


def test_adaptive_moves_load_to_the_replicas_it_learns_are_idle() -> None:
    fleet = VirtualFleet(GROUPS, AdaptiveConfig(), seed=1)
    done = ClosedLoop(256, seed=1, until_s=20.0).run(fleet)
    late = [r for r in done if r.arrival_s > 10.0]
    assert sum(r.group == "tp2" for r in late) / len(late) > 0.3
    assert len(fleet.weight_history) > 1  # the gate let changes through


def test_the_same_seed_gives_the_same_outcome() -> None:
    plan = VirtualPlan(fleets=(paper_fleet((16,)),))
    first = run_closed(plan, plan.fleets[0], "adaptive", 16)
    again = run_closed(plan, plan.fleets[0], "adaptive", 16)
    assert (first.requests, first.throughput_tok_s, first.ttft_p99_ms, first.shares) == (
        again.requests, again.throughput_tok_s, again.ttft_p99_ms, again.shares)  # fmt: skip


def _with(blocks: tuple[int, ...]) -> VirtualRequest:
    return VirtualRequest(0, 0.0, 512 * max(1, len(blocks)), 8, blocks=blocks)


def test_a_prefix_keeps_its_host_until_the_host_is_over_the_bound() -> None:
    rng = random.Random(1)
    request = _with((0, 7, 8, 9))
    home = prefix_with_bounded_load([0] * 8, request, rng)
    assert all(prefix_with_bounded_load([0] * 8, request, rng) == home for _ in range(20))
    # A later turn shares the leading blocks, so the same host.
    assert prefix_with_bounded_load([0] * 8, _with((0, 7, 8, 11, 12)), rng) == home
    # Over the bound (1.25 x the mean, with this request): the next host in its order.
    busy = [1] * 8
    busy[home] = 3
    moved = prefix_with_bounded_load(busy, request, rng)
    assert moved != home and busy[moved] + 1 <= 2


def test_a_prompt_without_a_whole_block_goes_by_least_request() -> None:
    assert prefix_key(()) is None
    rng = random.Random(1)
    picks = Counter(prefix_with_bounded_load([3, 0, 3, 3], _with(()), rng) for _ in range(400))
    assert 0.4 < picks[1] / 400 < 0.6


def test_prefix_routing_picks_the_same_group_for_the_same_prefix() -> None:
    groups = [GroupSpec(f"g{i}", PROFILES["tp2"], 2, 25) for i in range(4)]
    fleet = VirtualFleet(groups, StaticConfig(), seed=1, inside="prefix")
    for turn in range(6):
        fleet.submit(VirtualRequest(turn, 0.0, 2048, 4, blocks=(0, 5, 6, 7 + turn)))
    fleet.run(iter([]), until_s=0.0)
    # One group of four; inside it, two hosts: six at once are over one host's bound.
    assert len({r.group for r in fleet.finished}) == 1
    assert len({r.replica for r in fleet.finished}) == 2


def test_the_mooncake_trace_brings_its_block_ids() -> None:
    rows = mooncake_trace(MOONCAKE_CONVERSATION)
    assert rows[0].blocks[:3] == (0, 1, 2)
    assert all(len(r.blocks) == -(-r.prompt_tokens // 512) for r in rows[:200])


def _even(warmup_steps: int) -> list[GroupSpec]:
    """The paper fleet with configured weights 50 / 50, its engines warming up or not."""
    return [
        GroupSpec(
            g.name, g.profile.model_copy(update={"warmup_steps": warmup_steps}), g.replicas, 50
        )
        for g in GROUPS
    ]


def test_warmed_up_engines_are_measured_before_traffic_so_one_client_stays_on_tp8() -> None:
    # Their warm-up puts each group's step time in its tally: the first tick's split sends
    # a lone client where one request is fastest, with nothing explored on the slow group.
    fleet = VirtualFleet(_even(4), AdaptiveConfig(), seed=1)
    done = ClosedLoop(1, seed=1, until_s=20.0).run(fleet)
    assert done and {r.group for r in done} == {"tp8"}
    assert fleet.weight_history[1] == (0.0, {"tp8": 100, "tp2": 0})


def test_without_warm_up_the_first_split_follows_replica_counts() -> None:
    fleet = VirtualFleet(_even(0), AdaptiveConfig(), seed=1)
    done = ClosedLoop(1, seed=1, until_s=20.0).run(fleet)
    assert fleet.weight_history[1] == (0.0, {"tp8": 20, "tp2": 80})
    assert any(r.group == "tp2" for r in done)


def test_the_ttft_bound_is_each_prompt_alone_on_its_fastest_profile() -> None:
    rows = [TraceRow(0.0, prompt, 10) for prompt in range(100, 10_100, 100)]
    bound = ttft_p99_bound_ms(rows, [PROFILES["tp8"], PROFILES["tp2"]])
    # The 99th of 100 prompts (9,900 tokens) in one tp8 step: 5 + 0.1 + 0.0125 * 9,900 ms.
    assert bound == 5.0 + 0.1 + 0.0125 * 9_900
    assert ttft_p99_bound_ms([], [PROFILES["tp8"]]) is None


def test_copies_of_a_trace_keep_its_sizes_spread_its_times_and_share_no_blocks() -> None:
    rows = [TraceRow(0.0, 10, 2, (1, 2)), TraceRow(4.0, 20, 3, (1, 3)), TraceRow(10.0, 5, 1, ())]
    copies = tiled(rows, 3, seed=7)
    assert len(copies) == 9
    assert [r.at_s for r in copies] == sorted(r.at_s for r in copies)
    assert all(0.0 <= r.at_s <= 10.0 for r in copies)
    assert Counter((r.prompt_tokens, r.output_tokens) for r in copies) == Counter(
        {(10, 2): 3, (20, 3): 3, (5, 1): 3}
    )
    # The first copy is the trace itself; each copy's blocks repeat only within it.
    assert [r for r in copies if r.blocks[:1] == (1,)] == rows[:2]
    assert rows[2] in copies
    firsts = sorted(r.blocks[0] for r in copies if r.blocks)
    assert firsts == [1, 1, 5, 5, 9, 9]
    # The copies' arrivals do not all coincide with the trace's.
    assert len({round(r.at_s, 6) for r in copies}) > 3
    assert tiled(rows, 3, seed=7) == copies
    assert tiled(rows, 1, seed=7) == rows
