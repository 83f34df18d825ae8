"""The virtual fleet (frugal.bench.virtual.fleet): Envoy's routing, the real balancer on its
ticks, determinism from the seed."""

from __future__ import annotations

import random
from collections import Counter

from control_plane.balancer.config import AdaptiveConfig, StaticConfig
from engine_workers.backends.sim_model import PROFILES
from frugal.bench.virtual.compare import VirtualPlan, paper_fleet, run_closed
from frugal.bench.virtual.fleet import GroupSpec, VirtualFleet, least_request_of_two
from frugal.bench.virtual.workload import ClosedLoop

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
