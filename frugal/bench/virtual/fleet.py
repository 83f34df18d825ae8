"""A fleet of replica groups in virtual time, routed as Envoy routes, balanced by the real balancer.

Pure layer (no clock, no I/O; deterministic from a seed). The parts:
- replicas: frugal.bench.virtual.replica (the sim engine's model);
- Envoy: a weighted choice of the group by the published route weights
  (`weighted_clusters`), then least-request with two choices inside the group, on the
  requests it has active per host (`LEAST_REQUEST`, Envoy's default `choice_count`);
- the control plane: every `tick_s` (the balancer loop's TICK_S), the engines' gauges and
  counters are read and turned into the policy's input by control_plane.balancer.signals,
  the policy (control_plane.balancer.policy) decides, the publish gate (balancer/gate)
  lets the change through or not, and Envoy routes by the new weights from then on.

The event loop takes the earliest of: the next arrival, the next balancer tick, the next
replica event. Replica events are kept in a heap with a version per replica, so an
arrival that brings a replica's next event forward simply pushes a new entry.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from control_plane.balancer.config import BalancerConfig
from control_plane.balancer.load import ModelLoad, ReplicaCounters
from control_plane.balancer.policy import build_policy
from control_plane.balancer.signals import TICK_S, ModelBalance, StepSampler, group_load
from engine_workers.backends.sim_model import SimProfile
from frugal.bench.virtual.replica import VirtualReplica, VirtualRequest

MODEL = "virtual"


@dataclass(frozen=True)
class GroupSpec:
    name: str
    profile: SimProfile
    replicas: int
    weight: int  # the configured weight (what a static policy keeps)


@dataclass
class _Group:
    spec: GroupSpec
    replicas: list[VirtualReplica]
    addresses: list[str]
    active: list[int]  # Envoy's active requests per host


class VirtualFleet:
    """One model served by `groups`, balanced by `balancer`."""

    def __init__(
        self,
        groups: Sequence[GroupSpec],
        balancer: BalancerConfig,
        *,
        seed: int = 0,
        tick_s: float = TICK_S,
    ) -> None:
        self._rng = random.Random(seed)
        self._tick_s = tick_s
        self._groups: list[_Group] = []
        for spec in groups:
            group = _Group(spec, [], [], [])
            for index in range(spec.replicas):
                group.replicas.append(
                    VirtualReplica(spec.profile, self._finished_here(group, index))
                )
                group.addresses.append(f"{spec.name}/{index}")
                group.active.append(0)
            self._groups.append(group)
        weights = {spec.name: spec.weight for spec in groups}
        self.balance = ModelBalance(build_policy(balancer, weights), "virtual")
        self._weights = dict(weights)  # what Envoy routes by (the configured ones first)
        self._sampler = StepSampler()
        self._now = 0.0
        self._events: list[tuple[float, int, int, int, int]] = []  # time, seq, group, replica, ver
        self._versions: dict[tuple[int, int], int] = {}
        self._sequence = 0
        self._on_done: Callable[[VirtualRequest], None] = lambda _: None
        self.finished: list[VirtualRequest] = []
        self.weight_history: list[tuple[float, dict[str, int]]] = [(0.0, dict(weights))]

    @property
    def now_s(self) -> float:
        return self._now

    def run(
        self,
        arrivals: Iterator[VirtualRequest],
        *,
        until_s: float,
        on_done: Callable[[VirtualRequest], None] | None = None,
    ) -> list[VirtualRequest]:
        """Serve `arrivals` (in time order; `on_done` may feed more through `submit`) until
        `until_s`, then until what is under way is done. Returns the finished requests."""
        self._on_done = on_done or (lambda _: None)
        upcoming = next(arrivals, None)
        next_tick = 0.0
        while True:
            replica_due = self._events[0][0] if self._events else None
            arrival_due = upcoming.arrival_s if upcoming is not None else None
            candidates = [t for t in (replica_due, arrival_due) if t is not None]
            busy = bool(candidates)
            if not busy and self._now >= until_s:
                return self.finished
            if next_tick <= min(candidates, default=next_tick) or not busy:
                self._now = next_tick
                self._tick()
                next_tick += self._tick_s
                continue
            if arrival_due is not None and (replica_due is None or arrival_due <= replica_due):
                assert upcoming is not None
                self._now = arrival_due
                if arrival_due <= until_s:
                    self.submit(upcoming)
                upcoming = next(arrivals, None)
                continue
            self._replica_event()

    def submit(self, request: VirtualRequest) -> None:
        """Route `request` as Envoy would, now."""
        request.arrival_s = max(request.arrival_s, self._now)
        group_index = self._pick_group()
        group = self._groups[group_index]
        index = least_request_of_two(group.active, self._rng)
        group.active[index] += 1
        request.group, request.replica = group.spec.name, index
        replica = group.replicas[index]
        replica.submit(request, self._now)
        self._schedule(group_index, index)

    def _pick_group(self) -> int:
        total = sum(self._weights.values())
        point = self._rng.random() * total
        for index, group in enumerate(self._groups):
            point -= self._weights.get(group.spec.name, 0)
            if point < 0:
                return index
        return max(range(len(self._groups)), key=lambda i: self._weights.get(
            self._groups[i].spec.name, 0))  # fmt: skip

    def _schedule(self, group_index: int, replica_index: int) -> None:
        replica = self._groups[group_index].replicas[replica_index]
        key = (group_index, replica_index)
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        due = replica.next_event_s(self._now)
        if due is not None:
            self._sequence += 1
            heapq.heappush(self._events, (due, self._sequence, group_index, replica_index, version))

    def _replica_event(self) -> None:
        due, _, group_index, replica_index, version = heapq.heappop(self._events)
        if self._versions.get((group_index, replica_index)) != version:
            return  # superseded by a later schedule
        self._now = due
        self._groups[group_index].replicas[replica_index].on_event(due)
        self._schedule(group_index, replica_index)

    def _finished_here(self, group: _Group, index: int) -> Callable[[VirtualRequest], None]:
        def finished(request: VirtualRequest) -> None:
            group.active[index] -= 1
            self.finished.append(request)
            self._on_done(request)

        return finished

    def _tick(self) -> None:
        """One balancer tick, as control_plane.balancer_loop does it."""
        now = self._now
        counters = {
            address: ReplicaCounters(
                now, replica.running_at(now), replica.tokens_at(now), replica.decode_at(now)
            )
            for group in self._groups
            for address, replica in zip(group.addresses, group.replicas, strict=True)
        }
        samples = self._sampler.samples(counters)
        loads = tuple(
            group_load(g.spec.name, g.addresses, len(g.replicas), sum(g.active), counters, samples)
            for g in self._groups
        )
        self.balance.decide(ModelLoad(model=MODEL, groups=loads, now=now))
        if self.balance.publish_through_gate(now):
            assert self.balance.published is not None
            if self.balance.published != self._weights:
                self.weight_history.append((now, dict(self.balance.published)))
            self._weights = dict(self.balance.published)


def least_request_of_two(active: list[int], rng: random.Random) -> int:
    """Envoy's LEAST_REQUEST with two choices: of two distinct random hosts, the one with
    fewer active requests (the first drawn on a tie); the only host when there is one."""
    if len(active) == 1:
        return 0
    first, second = rng.sample(range(len(active)), 2)
    return second if active[second] < active[first] else first
