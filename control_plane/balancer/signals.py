"""From readings to a policy's input, and from its decision to what is published.

Pure layer, shared by the control plane's balancer loop (which takes the readings from
Envoy and the engines) and the virtual-time fleet simulator (frugal/bench/virtual, which
takes them from its model of both): the same step samples, the same group loads, the
same publish gate, so what the simulator judges is what the control plane runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from control_plane.balancer.gate import WeightGate
from control_plane.balancer.load import (
    Decision,
    DecodeCounters,
    GroupLoad,
    GroupPrefill,
    ModelLoad,
    ReplicaCounters,
    StepSample,
    prefill_sample,
    step_sample,
)
from control_plane.balancer.policy import BalancerPolicy

TICK_S = 0.25  # issue 4: sample often enough (<= 250 ms) to follow bursts


# What an engine's decode-step tally held before its first step.
_NO_STEPS = DecodeCounters(steps=0, seconds=0.0, sequences=0)


@dataclass(frozen=True)
class TickSamples:
    """What the replicas read at one tick did since the tick before, by address: their
    step-time samples and their prefill."""

    steps: dict[str, StepSample]
    prefill: dict[str, GroupPrefill]


class ReplicaSampler:
    """Each replica's step-time sample and prefill between its last two counter readings."""

    def __init__(self) -> None:
        self._previous: dict[str, ReplicaCounters] = {}

    def observe(self, counters: Mapping[str, ReplicaCounters]) -> TickSamples:
        """What these readings say against the previous ones; these become the previous
        ones. A replica not read now gives nothing.

        Steps: read for the first time, a replica with a decode-step tally gives the mean of
        every step it counted since it started (its warm-up, before any traffic, or its
        whole life when the control plane comes later): a point on the same line, as the
        step time is linear in the batch. One without a tally gives none, as a token rate
        needs two readings.

        Prefill: a replica read for the first time gives nothing, since its counters hold
        its whole life, not one tick."""
        steps, prefill = {}, {}
        for address, current in counters.items():
            previous = self._previous.get(address)
            before = previous
            if before is None and current.decode is not None:
                before = replace(current, decode=_NO_STEPS)
            sample = step_sample(before, current) if before is not None else None
            if sample is not None:
                steps[address] = sample
            if previous is not None and current.requests is not None:
                prefill[address] = _replica_prefill(previous, current)
        self._previous = dict(counters)
        return TickSamples(steps, prefill)


def _replica_prefill(previous: ReplicaCounters, current: ReplicaCounters) -> GroupPrefill:
    assert current.requests is not None
    before = previous.requests
    sample = None
    if previous.prefill is not None and current.prefill is not None:
        sample = prefill_sample(previous.prefill, current.prefill)
    if before is None or current.requests.finished < before.finished:
        return GroupPrefill(samples=() if sample is None else (sample,))  # it restarted
    return GroupPrefill(
        finished=current.requests.finished - before.finished,
        finished_tokens=current.requests.finished_tokens - before.finished_tokens,
        finished_prompt_tokens=(
            current.requests.finished_prompt_tokens - before.finished_prompt_tokens
        ),
        samples=() if sample is None else (sample,),
    )


def group_load(
    group: str,
    replicas: Iterable[str],
    serving: int,
    in_flight: float,
    counters: Mapping[str, ReplicaCounters],
    samples: Mapping[str, StepSample],
    prefill: Mapping[str, GroupPrefill] | None = None,
) -> GroupLoad:
    """One group's load: `serving` of its `replicas` (addresses) are healthy and not
    draining; `in_flight` is Envoy's active requests for its cluster; `prefill`, what
    its replicas prefilled since the last tick (ReplicaSampler)."""
    addresses = list(replicas)
    seen = [counters[a] for a in addresses if a in counters]
    prefilled = [prefill[a] for a in addresses if prefill is not None and a in prefill]
    return GroupLoad(
        group=group,
        replicas=serving,
        in_flight=in_flight,
        running=sum(c.running for c in seen) if seen else None,
        waiting=None,
        samples=tuple(samples[a] for a in addresses if a in samples),
        prefill=_summed(prefilled) if prefilled else None,
    )


def _summed(parts: Iterable[GroupPrefill]) -> GroupPrefill:
    parts = list(parts)
    return GroupPrefill(
        finished=sum(p.finished for p in parts),
        finished_tokens=sum(p.finished_tokens for p in parts),
        finished_prompt_tokens=sum(p.finished_prompt_tokens for p in parts),
        samples=tuple(sample for p in parts for sample in p.samples),
    )


@dataclass
class ModelBalance:
    """The policy of one model, its publish gate, and what it last saw, decided and
    published."""

    policy: BalancerPolicy
    config_key: str  # the balancer config + static weights the policy was built from
    gate: WeightGate = field(default_factory=WeightGate)
    load: ModelLoad | None = None
    decision: Decision | None = None
    published: dict[str, int] | None = None

    def decide(self, load: ModelLoad) -> Decision:
        self.load = load
        self.decision = self.policy.decide(load)
        return self.decision

    def publish_through_gate(self, now: float) -> bool:
        """Publish the last decision if the gate lets it through now; True if it did."""
        assert self.decision is not None, "decide first"
        if not self.gate.offer(self.published, self.decision.weights, now):
            return False
        self.published = dict(self.decision.weights)
        return True
