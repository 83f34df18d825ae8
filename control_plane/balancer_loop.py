"""The balancer loop: live load in, route weights out, every 250 ms.

I/O layer. Each tick samples Envoy's in-flight requests per replica group and the
engines' counters (load_sampler), asks each model's policy (balancer/) for new
weights, and publishes them through the publish gate (balancer/gate: only a real
change, at a bounded rate). It also finishes drains: a draining replica with no
request left in any Envoy is removed, and once a second feeds every Envoy's
per-host request and error counters to the traffic window (traffic_rates). What it
saw and decided is kept for the admin REST and exported as Prometheus gauges.

With several control-plane replicas, only the holder of the balancer lease
(leadership.py) publishes weights and finishes drains; the others serve the weights
it wrote to Redis (shared_state.py). Every replica takes the persisted fleet changes
each tick, so all of them serve the same snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.load import (
    GroupLoad,
    GroupPrefill,
    ModelLoad,
    ReplicaCounters,
    StepSample,
)
from control_plane.balancer.policy import build_policy
from control_plane.balancer.signals import (
    TICK_S,
    ModelBalance,
    ReplicaSampler,
    group_load,
)
from control_plane.balancer.weights import available
from control_plane.fleet import Fleet
from control_plane.leadership import LeaderLease
from control_plane.load_sampler import HostState, LoadSampler
from control_plane.model import FrugalConfig, Model, engine_cluster_name
from control_plane.server import ControlPlane
from control_plane.shared_state import SharedWeights
from control_plane.traffic_rates import Reading, RequestCounts, TrafficWindow
from frugal.group_lines_store import GroupLinesStore
from frugal.group_picker import ModelPicker

log = logging.getLogger(__name__)

HOSTS_EVERY = 4  # host health and per-host load: once a second


class BalancerLoop:
    def __init__(
        self,
        control_plane: ControlPlane,
        fleet: Fleet,
        sampler: LoadSampler,
        registry: CollectorRegistry,
        lease: LeaderLease | None = None,
        shared: SharedWeights | None = None,
        lines: GroupLinesStore | None = None,
    ) -> None:
        """Without a lease, this replica is the only one and always leads. With `lines`,
        the leader publishes the lines of the models whose requests are picked per group
        (`balancer.group_picker`) there, every tick."""
        self._control_plane = control_plane
        self._fleet = fleet
        self._sampler = sampler
        self._lease = lease
        self._shared = shared
        self._lines = lines
        self.leading = lease is None
        self.models: dict[str, ModelBalance] = {}
        self.hosts: dict[str, dict[str, HostState]] = {}
        self.traffic = TrafficWindow()
        self._replica_sampler = ReplicaSampler()
        self._ticks = 0
        self._weight = Gauge(
            "frugal_balancer_weight",
            "Route weight of each replica group, as published to Envoy.",
            ["model_name", "group"],
            registry=registry,
        )
        self._in_flight = Gauge(
            "frugal_balancer_in_flight",
            "Requests in flight per replica group, summed over Envoys.",
            ["model_name", "group"],
            registry=registry,
        )
        self._leader = Gauge(
            "frugal_balancer_leader",
            "1 on the control-plane replica whose balancer decides the route weights.",
            registry=registry,
        )

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad tick must not stop balancing
                log.exception("balancer tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        if self._lease is not None:
            self.leading = await self._lease.refresh()
        self._leader.set(1 if self.leading else 0)
        await self._fleet.sync()
        if not self.leading:
            await self._follow()
        config = self._control_plane.config
        in_flight = await self._sampler.in_flight()
        if self._ticks % HOSTS_EVERY == 0:
            by_envoy = await self._sampler.hosts_by_envoy()
            self.hosts = next(iter(by_envoy.values()), {})
            if by_envoy:
                self.traffic.observe(asyncio.get_running_loop().time(), _traffic(by_envoy))
            if self.leading:
                await self._finish_drains()
        self._ticks += 1
        addresses = [str(e) for m in config.models for g in m.groups for e in g.replicas]
        counters = await self._sampler.engine_counters(addresses)
        sampled = self._replica_sampler.observe(counters)
        for model in config.models:
            self._balance(model, in_flight, counters, sampled.steps, sampled.prefill)
        if self.leading and self._shared is not None:
            await self._shared.write(self._control_plane.live_weights)
        if self.leading and self._lines is not None:
            await self._lines.write(self._pickers(config))

    def _pickers(self, config: FrugalConfig) -> dict[str, ModelPicker]:
        """Each picked model's lines as its policy has them after this tick."""
        pickers = {}
        for model in config.models:
            settings = model.group_picker
            balance = self.models.get(model.name)
            if settings is None or balance is None or balance.load is None:
                continue
            if not isinstance(balance.policy, AdaptivePolicy):
                continue
            picker = balance.policy.picker(balance.load, settings.settings())
            if picker is not None:
                pickers[model.name] = picker
        return pickers

    async def _follow(self) -> None:
        """Serve the weights the leader decided (a model it has none for is static)."""
        assert self._shared is not None, "a replica with a lease shares its weights"
        weights = await self._shared.read()
        for model in self._control_plane.config.models:
            theirs = weights.get(model.name)
            if theirs is None:
                self._control_plane.clear_live_weights(model.name)
            elif theirs != self._control_plane.live_weights.get(model.name):
                self._control_plane.set_live_weights(model.name, theirs)

    def _group_load(
        self,
        model: Model,
        group_index: int,
        in_flight: dict[str, float],
        counters: dict[str, ReplicaCounters],
        samples: dict[str, StepSample],
        prefill: dict[str, GroupPrefill],
    ) -> GroupLoad:
        group = model.groups[group_index]
        cluster = engine_cluster_name(model.name, group.name)
        hosts = self.hosts.get(cluster, {})
        serving = [
            e
            for e in group.replicas
            if not e.draining and hosts.get(str(e), HostState(True, False, 0)).healthy
        ]
        return group_load(
            group.name,
            [str(e) for e in group.replicas],
            len(serving),
            in_flight.get(cluster, 0.0),
            counters,
            samples,
            prefill,
        )

    def _balance(
        self,
        model: Model,
        in_flight: dict[str, float],
        counters: dict[str, ReplicaCounters],
        samples: dict[str, StepSample],
        prefill: dict[str, GroupPrefill],
    ) -> None:
        balance = self._balance_of(model)
        groups = tuple(
            self._group_load(model, i, in_flight, counters, samples, prefill)
            for i in range(len(model.groups))
        )
        loop = asyncio.get_running_loop()
        balance.decide(ModelLoad(model=model.name, groups=groups, now=loop.time()))
        assert balance.decision is not None
        for group in groups:
            self._in_flight.labels(model.name, group.group).set(group.in_flight)
        if model.balancer.type == "static":
            # The configured weights stand while every group can answer; a group left
            # without a healthy replica gets none of them (StaticPolicy) until one is back.
            # Before, the configured split stayed, and Envoy kept sending that group's
            # share to no healthy upstream (503) for as long as it was down
            # (tests/e2e/test_replica_failure.py, a whole group killed).
            if len(available(groups)) == len(groups):
                balance.published = {g.name: g.weight for g in model.groups}
                self._control_plane.clear_live_weights(model.name)
            elif balance.published != balance.decision.weights:
                balance.published = dict(balance.decision.weights)
                self._control_plane.set_live_weights(model.name, balance.published)
                log.info(
                    "%s weights %s: %s", model.name, balance.published, balance.decision.reason
                )
        elif not self.leading:
            balance.published = self._control_plane.live_weights.get(model.name)
        elif balance.publish_through_gate(loop.time()):
            assert balance.published is not None
            self._control_plane.set_live_weights(model.name, balance.published)
            log.info("%s weights %s: %s", model.name, balance.published, balance.decision.reason)
        for name, weight in (balance.published or {}).items():
            self._weight.labels(model.name, name).set(weight)

    def _balance_of(self, model: Model) -> ModelBalance:
        weights = {g.name: g.weight for g in model.groups}
        key = f"{model.balancer.model_dump_json()}|{sorted(weights.items())}"
        balance = self.models.get(model.name)
        if balance is None or balance.config_key != key:
            balance = ModelBalance(build_policy(model.balancer, weights), key)
            self.models[model.name] = balance
        return balance

    async def _finish_drains(self) -> None:
        """Remove draining replicas that no Envoy has a request on any more."""
        for model in self._control_plane.config.models:
            for group in model.groups:
                hosts = self.hosts.get(engine_cluster_name(model.name, group.name), {})
                for endpoint in group.replicas:
                    state = hosts.get(str(endpoint))
                    if endpoint.draining and state is not None and state.draining:
                        if state.active == 0:
                            log.info("drained %s of %s/%s", endpoint, model.name, group.name)
                            with contextlib.suppress(LookupError, ValueError):
                                await self._fleet.remove_replica(
                                    model.name, group.name, str(endpoint)
                                )


def _traffic(by_envoy: dict[str, dict[str, dict[str, HostState]]]) -> Reading:
    """Envoy -> cluster -> host -> the request counters that Envoy keeps for that host."""
    return {
        envoy: {
            cluster: {address: RequestCounts(s.requests, s.errors) for address, s in hosts.items()}
            for cluster, hosts in clusters.items()
        }
        for envoy, clusters in by_envoy.items()
    }
