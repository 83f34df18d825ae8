"""`frugal bench routing-virtual`: every policy on every load, in virtual time (pure layer).

Two fleets of the sim engine's calibrated profiles (engine_workers.backends.sim_model):
- `paper`: the ScaleLLM paper's section 6, one `tp8` replica against four `tp2` replicas
  (8 GPUs each way), with the wall-clock benchmark's policies (frugal.bench.fleet), among
  them `adaptive+picker`, `adaptive` with each request's group picked by the request
  processor (frugal.group_picker), and `adaptive+picker/2`, the same picked by two safety
  filter processes, each of which sees half the requests (`frugal up`'s default);
- `large`: 1,000 replicas in 50 groups, 25 groups of 8 `tp8` replicas and 25 of 32 `tp2`
  replicas (1,600 GPUs each way), with a static layout on each profile, `adaptive` and
  `adaptive+picker`; it replays each trace as 200 users at once (`workload.tiled`), as
  loaded as the paper fleet is by one.

Each policy serves closed loops at each concurrency and the shipped traces (Azure code and
conversation, Mooncake), from the same seed. A closed level runs the fleet's `duration_s` of
virtual time; its first `warmup_s` are left out of the figures. A trace runs its first
`trace_requests` requests at their own times and lengths, and on a fleet with
`trace_windows` above 1 each following stretch of as many requests too, each replayed alone
from an idle fleet: one window's p99 is its 1 % slowest requests, a handful on a bursty trace,
so a goal on it is judged on every window.

Prefix-aware routing is compared apart (`prefix_fleets`): the first `prefix_requests` of the
Mooncake trace (several copies at once on the 1,000-replica fleet), with a prefix cache on
every replica (512-token blocks, its `hash_ids`), routed inside each group by least-request
and by prefix hash with bounded loads (frugal.bench.virtual.fleet); figures add the
cache-hit rate and the busiest replica's load.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from control_plane.balancer.config import BalancerConfig
from engine_workers.backends.sim_model import PROFILES, SimProfile, step_ms
from frugal.bench.fleet import POLICIES as PAPER_POLICIES
from frugal.bench.fleet import TP2, TP2_REPLICAS, TP8
from frugal.bench.traces import AZURE_CODE, AZURE_CONVERSATION, MOONCAKE_CONVERSATION
from frugal.bench.virtual.fleet import GroupSpec, VirtualFleet
from frugal.bench.virtual.replica import VirtualRequest
from frugal.bench.virtual.workload import (
    ClosedLoop,
    TraceRow,
    azure_trace,
    mooncake_trace,
    tiled,
    trace_arrivals,
    window,
)
from frugal.bench.virtual.xds_update import UpdateSize, fleet_config, update_size

_BALANCER: TypeAdapter[BalancerConfig] = TypeAdapter(BalancerConfig)
ADAPTIVE = "adaptive"
PICKED = "adaptive+picker"
PICKED_BY_TWO = "adaptive+picker/2"
LEAST_REQUEST, PREFIX = "least_request", "prefix"
MOONCAKE_BLOCK_TOKENS = 512
PAPER_LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LARGE_GROUPS = 25  # of each profile
LARGE_TP8_REPLICAS, LARGE_TP2_REPLICAS = 8, 32
LARGE_LEVELS = (1, 16, 256, 1024, 4096, 16384)
# The 1,000-replica fleet has 200 times the paper fleet's GPUs on each profile, so it serves
# 200 users of a trace at once, each replica as loaded as the paper's by one (by one copy
# its replicas sat idle, every layout at the bound, and no policy could differ).
LARGE_TRACE_COPIES = LARGE_GROUPS * LARGE_TP8_REPLICAS
# Four windows of 2,000 requests fit in every shipped trace (the shortest, Azure code, has
# 8,819). The 1,000-replica fleet replays one, 200 times at once: each of its trace runs takes
# 25-136 s here.
PAPER_TRACE_WINDOWS = 4


@dataclass(frozen=True)
class FleetPlan:
    name: str
    groups: tuple[GroupSpec, ...]
    # policy -> (balancer config, the groups' configured weights)
    policies: Mapping[str, tuple[dict[str, Any], Mapping[str, int]]]
    statics: tuple[str, ...]
    levels: tuple[int, ...]
    duration_s: float = 60.0  # of each closed level, virtual
    warmup_s: float = 10.0  # left out of its figures
    trace_copies: int = 1  # of each trace (window), replayed at once (workload.tiled)
    trace_windows: int = 1  # consecutive stretches of each trace, each replayed alone
    # policy -> how many pickers share its requests, where more than one
    picker_views: Mapping[str, int] = field(default_factory=dict)

    @property
    def replicas(self) -> int:
        return sum(g.replicas for g in self.groups)

    @property
    def picked(self) -> tuple[str, ...]:
        """The policies whose requests' group is picked per request (`group_picker`)."""
        return tuple(
            name
            for name, (balancer, _) in self.policies.items()
            if balancer.get("group_picker") is not None
        )

    def fleet(
        self, policy: str, seed: int, *, inside: str = LEAST_REQUEST, prefix_cache: bool = False
    ) -> VirtualFleet:
        balancer, weights = self.policies[policy]
        groups = [
            GroupSpec(g.name, _cached(g.profile) if prefix_cache else g.profile, g.replicas,
                      weights[g.name])
            for g in self.groups
        ]  # fmt: skip
        return VirtualFleet(
            groups, _BALANCER.validate_python(balancer), seed=seed, inside=inside,
            picker_views=self.picker_views.get(policy, 1),
        )  # fmt: skip


def _cached(profile: SimProfile) -> SimProfile:
    return profile.model_copy(update={"prefix_block_tokens": MOONCAKE_BLOCK_TOKENS})


def paper_fleet(levels: Sequence[int] = PAPER_LEVELS) -> FleetPlan:
    groups = (
        GroupSpec(TP8, PROFILES[TP8], 1, 0),
        GroupSpec(TP2, PROFILES[TP2], TP2_REPLICAS, 0),
    )
    statics = ("static-tp8", "static-tp2")
    policies = {**PAPER_POLICIES, PICKED_BY_TWO: PAPER_POLICIES[PICKED]}
    return FleetPlan(
        "paper", groups, policies, statics, tuple(levels),
        trace_windows=PAPER_TRACE_WINDOWS, picker_views={PICKED_BY_TWO: 2},
    )  # fmt: skip


def large_fleet(levels: Sequence[int] = LARGE_LEVELS) -> FleetPlan:
    tp8 = [GroupSpec(f"tp8-{i:02d}", PROFILES[TP8], LARGE_TP8_REPLICAS, 0)
           for i in range(LARGE_GROUPS)]  # fmt: skip
    tp2 = [GroupSpec(f"tp2-{i:02d}", PROFILES[TP2], LARGE_TP2_REPLICAS, 0)
           for i in range(LARGE_GROUPS)]  # fmt: skip
    share = 100 // LARGE_GROUPS

    def only(kind: list[GroupSpec]) -> dict[str, int]:
        chosen = {g.name for g in kind}
        return {g.name: (share if g.name in chosen else 0) for g in (*tp8, *tp2)}

    policies = {
        "static-tp8": ({"type": "static"}, only(tp8)),
        "static-tp2": ({"type": "static"}, only(tp2)),
        ADAPTIVE: (PAPER_POLICIES[ADAPTIVE][0], only(tp8)),
        PICKED: (PAPER_POLICIES[PICKED][0], only(tp8)),
    }
    # Shorter levels: at thousands of streams a virtual minute is millions of requests.
    return FleetPlan(
        "large", (*tp8, *tp2), policies, ("static-tp8", "static-tp2"), tuple(levels),
        duration_s=20.0, warmup_s=5.0, trace_copies=LARGE_TRACE_COPIES,
    )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """One policy on one load."""

    policy: str
    load: str
    requests: int
    throughput_tok_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    shares: Mapping[str, float]  # of the requests, by group kind (tp8 / tp2)
    decide_cpu_ms: float  # the policy's CPU time per decision, median
    wall_s: float  # what the run took here
    publishes: int
    cache_hit_rate: float = 0.0  # of the prompt tokens, found in a prefix cache
    load_ratio: float = 0.0  # busiest replica's mean active requests over its group's mean

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "shares": dict(self.shares)}


def _kind(group: str) -> str:
    return group.split("-", 1)[0]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(
    policy: str, load: str, fleet: VirtualFleet, requests: Iterable[VirtualRequest],
    window: tuple[float, float], wall_s: float, decide_ms: Sequence[float],
) -> Outcome:  # fmt: skip
    """Figures of the requests that arrived in `window`; throughput from the tokens of
    the requests that finished in it."""
    start, end = window
    done = list(requests)
    arrived = [r for r in done if start <= r.arrival_s < end]
    finished = [r for r in done if r.finished_s is not None and start <= r.finished_s < end]
    tokens = sum(r.output_tokens for r in finished)
    ttfts = [r.ttft_s * 1000.0 for r in arrived if r.ttft_s is not None]
    kinds: dict[str, int] = {}
    for r in arrived:
        kinds[_kind(r.group)] = kinds.get(_kind(r.group), 0) + 1
    prompt = sum(r.prompt_tokens for r in arrived)
    return Outcome(
        policy=policy,
        load=load,
        requests=len(arrived),
        throughput_tok_s=tokens / (end - start) if end > start else 0.0,
        ttft_p50_ms=_percentile(ttfts, 0.50),
        ttft_p99_ms=_percentile(ttfts, 0.99),
        shares={k: n / len(arrived) for k, n in sorted(kinds.items())} if arrived else {},
        decide_cpu_ms=statistics.median(decide_ms) if decide_ms else 0.0,
        wall_s=wall_s,
        publishes=len(fleet.weight_history) - 1,
        cache_hit_rate=sum(r.cached_tokens for r in arrived) / prompt if prompt else 0.0,
        load_ratio=_load_ratio(fleet.mean_active(end)),
    )


def _load_ratio(mean_active: Mapping[str, Sequence[float]]) -> float:
    """The busiest replica against its group's mean, worst group (of those with load)."""
    ratios = [max(hosts) / (sum(hosts) / len(hosts)) for hosts in mean_active.values()
              if sum(hosts) > 0]  # fmt: skip
    return max(ratios, default=0.0)


def _timed_decisions(fleet: VirtualFleet) -> list[float]:
    """Wrap the fleet's policy so each decision's CPU time is recorded."""
    times: list[float] = []
    policy = fleet.balance.policy
    decide = policy.decide

    def timed(load: Any) -> Any:
        started = time.process_time()
        decision = decide(load)
        times.append((time.process_time() - started) * 1000.0)
        return decision

    policy.decide = timed  # type: ignore[method-assign]
    return times


def prefix_fleets() -> tuple[FleetPlan, ...]:
    """Fleets for prefix-aware routing on the Mooncake trace, each loaded by it: one group
    of 8 `tp8` or of 16 `tp2` replicas (the paper's 4 `tp2` replicas hold too little KV
    for a block to outlive the minutes between a conversation's turns), and the 1,000-replica
    fleet's `tp8` layout, 25 groups of 8, loaded by 25 copies of the trace at once (each
    replica as loaded as the 8 `tp8` replicas are by one: a fleet 25 times larger serves 25
    times the users; by one copy, its replicas sat nearly idle and the busiest replica's
    load over the mean said only which of them drew the long conversations)."""
    fleets = []
    for profile, replicas in ((TP8, 8), (TP2, 16)):
        group = GroupSpec(profile, PROFILES[profile], replicas, 0)
        policies = {f"static-{profile}": ({"type": "static"}, {profile: 100})}
        fleets.append(FleetPlan(f"{replicas} x {profile}", (group,), policies, (), ()))
    large = large_fleet(())
    tp8 = {"static-tp8": large.policies["static-tp8"]}
    # Its 200 `tp8` replicas serve 25 users of the trace, each as many as the 8 above serve.
    copies = LARGE_GROUPS * LARGE_TP8_REPLICAS // 8
    name = f"1,000 replicas, tp8 layout, {copies} copies of the trace"
    fleets.append(FleetPlan(name, large.groups, tp8, (), (), trace_copies=copies))
    return tuple(fleets)


@dataclass(frozen=True)
class VirtualPlan:
    fleets: tuple[FleetPlan, ...]
    seed: int = 1
    traces: tuple[str, ...] = ("azure-code", "azure-conv", "mooncake")
    trace_requests: int = 2000
    policies: tuple[str, ...] | None = None  # None: every policy of each fleet
    prefix_fleets: tuple[FleetPlan, ...] = ()
    prefix_requests: int = 4000  # of the Mooncake trace, for prefix-aware routing


MOONCAKE = "mooncake"
TRACES: Mapping[str, Callable[[], list[TraceRow]]] = {
    "azure-code": lambda: azure_trace(AZURE_CODE),
    "azure-conv": lambda: azure_trace(AZURE_CONVERSATION),
    MOONCAKE: lambda: mooncake_trace(MOONCAKE_CONVERSATION),
}


@functools.cache
def trace_rows(name: str) -> tuple[TraceRow, ...]:
    """A shipped trace's rows, parsed once a process (every policy on every fleet replays it)."""
    return tuple(TRACES[name]())


@dataclass
class FleetResults:
    fleet: FleetPlan
    outcomes: list[Outcome] = field(default_factory=list)
    update: UpdateSize | None = None  # a change from one static layout to the other
    ttft_bounds_ms: dict[str, float] = field(default_factory=dict)  # trace window -> p99 bound
    windows: dict[str, list[str]] = field(default_factory=dict)  # trace -> its windows' labels


def ttft_p99_bound_ms(rows: Sequence[TraceRow], profiles: Iterable[SimProfile]) -> float | None:
    """The TTFT p99 no routing can beat: each request alone on an idle replica of the
    profile that prefills its prompt fastest (one step: a + b + c * prompt)."""
    kinds = list(profiles)
    alone = [min(step_ms(p, 1, row.prompt_tokens) for p in kinds) for row in rows]
    return _percentile(alone, 0.99)


def run_closed(plan: VirtualPlan, fleet: FleetPlan, policy: str, level: int) -> Outcome:
    started = time.perf_counter()
    virtual = fleet.fleet(policy, plan.seed)
    decide_ms = _timed_decisions(virtual)
    loop = ClosedLoop(level, seed=plan.seed, until_s=fleet.duration_s)
    done = loop.run(virtual)
    window = (fleet.warmup_s, fleet.duration_s)
    wall = time.perf_counter() - started
    return summarise(policy, str(level), virtual, done, window, wall, decide_ms)


def window_label(trace: str, number: int, requests: int) -> str:
    """A trace window's name in the figures: the first is the trace's own name."""
    if number == 0:
        return trace
    return f"{trace}, requests {number * requests + 1:,}-{(number + 1) * requests:,}"


def window_rows(plan: VirtualPlan, trace: str, number: int, copies: int = 1) -> list[TraceRow]:
    """The rows of a trace's window `number` (0: its first `trace_requests`), from time 0,
    in `copies` users at once."""
    rows = window(trace_rows(trace), number * plan.trace_requests, plan.trace_requests)
    return tiled(rows, copies, plan.seed)


def run_trace(
    plan: VirtualPlan, fleet: FleetPlan, policy: str, trace: str, number: int = 0
) -> Outcome:
    started = time.perf_counter()
    rows = window_rows(plan, trace, number, fleet.trace_copies)
    virtual = fleet.fleet(policy, plan.seed)
    decide_ms = _timed_decisions(virtual)
    end = rows[-1].at_s if rows else 0.0
    done = virtual.run(trace_arrivals(rows), until_s=end)
    wall = time.perf_counter() - started
    load = window_label(trace, number, plan.trace_requests)
    return summarise(policy, load, virtual, done, (0.0, end + 1e-9), wall, decide_ms)


def trace_windows(plan: VirtualPlan, fleet: FleetPlan, trace: str) -> range:
    """The fleet's windows of `trace` that hold a whole `trace_requests` (the first always)."""
    whole = len(trace_rows(trace)) // plan.trace_requests if plan.trace_requests else 0
    return range(max(1, min(fleet.trace_windows, whole)))


def run_prefix(plan: VirtualPlan, fleet: FleetPlan, policy: str, inside: str) -> Outcome:
    """The Mooncake trace with a prefix cache on every replica, routed `inside` groups."""
    started = time.perf_counter()
    rows = tiled(trace_rows(MOONCAKE)[: plan.prefix_requests], fleet.trace_copies, plan.seed)
    virtual = fleet.fleet(policy, plan.seed, inside=inside, prefix_cache=True)
    decide_ms = _timed_decisions(virtual)
    end = rows[-1].at_s if rows else 0.0
    done = virtual.run(trace_arrivals(rows), until_s=end)
    wall = time.perf_counter() - started
    load = f"{MOONCAKE}, {inside}"
    return summarise(policy, load, virtual, done, (0.0, end + 1e-9), wall, decide_ms)


def _run_fleet(
    plan: VirtualPlan, fleet: FleetPlan, report: Callable[[Outcome], None]
) -> FleetResults:
    """Every policy of `fleet` on its closed loads and on every window of each trace."""
    first, second = (fleet.policies[s][1] for s in fleet.statics[:2])
    found = FleetResults(fleet, update=update_size(fleet_config(fleet.groups), first, second))
    policies = [p for p in fleet.policies if plan.policies is None or p in plan.policies]
    windows = [(trace, number) for trace in plan.traces
               for number in trace_windows(plan, fleet, trace)]  # fmt: skip
    for policy in policies:
        for level in fleet.levels:
            found.outcomes.append(run_closed(plan, fleet, policy, level))
            report(found.outcomes[-1])
        for trace, number in windows:
            found.outcomes.append(run_trace(plan, fleet, policy, trace, number))
            report(found.outcomes[-1])
    for trace, number in windows:
        label = window_label(trace, number, plan.trace_requests)
        found.windows.setdefault(trace, []).append(label)
        rows = window_rows(plan, trace, number, fleet.trace_copies)
        bound = ttft_p99_bound_ms(rows, [g.profile for g in fleet.groups])
        if bound is not None:
            found.ttft_bounds_ms[label] = bound
    return found


def run_virtual(
    plan: VirtualPlan, report: Callable[[Outcome], None] = lambda _: None
) -> list[FleetResults]:
    results = [_run_fleet(plan, fleet, report) for fleet in plan.fleets]
    for fleet in plan.prefix_fleets:
        found = FleetResults(fleet)
        for policy in fleet.policies:
            for inside in (LEAST_REQUEST, PREFIX):
                found.outcomes.append(run_prefix(plan, fleet, policy, inside))
                report(found.outcomes[-1])
        results.append(found)
    return results
