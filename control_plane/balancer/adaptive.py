"""The `adaptive` balancer policy: route new requests where the marginal latency is lowest,
by a step-time line per group learned online from the engines' own counters.

Pure layer, deterministic (no randomness): the same loads in the same order give the
same decisions. Each tick it folds the new step samples into each group's fit,
splits the model's in-flight load plus the request about to arrive over the groups
that have replicas (`cost_model.split_load`), and turns that split into weights with
a `min_share` floor per group, so every group keeps being observed.
"""

from __future__ import annotations

from collections.abc import Mapping

from control_plane.balancer.config import AdaptiveConfig
from control_plane.balancer.cost_model import OnlineLinearFit, StepCost, split_load
from control_plane.balancer.load import Decision, GroupLoad, ModelLoad
from control_plane.balancer.weights import (
    available,
    even_split,
    integer_floor,
    to_weights,
    with_floor,
)

# The line assumed for a group before any group has a fit of its own: every group then
# costs the same per replica, so the split follows replica counts. Once some group is
# fitted, unfitted groups are assumed to be like the average fitted one: an optimistic
# guess that sends them enough traffic to be measured.
NEUTRAL_PRIOR = StepCost(a_ms=10.0, b_ms=0.1)


class AdaptivePolicy:
    """Water-filling over online-fitted step-time lines, with exploration floors."""

    def __init__(
        self, config: AdaptiveConfig, group_weights: Mapping[str, int] | None = None
    ) -> None:
        self._config = config
        self._fits: dict[str, OnlineLinearFit] = {}

    def fitted(self, group: str) -> StepCost | None:
        """The group's fitted step-time line, or None while it has too few spread samples."""
        fit = self._fits.get(group)
        line = fit.line() if fit is not None else None
        return StepCost(a_ms=line[0], b_ms=line[1]) if line is not None else None

    def _observe(self, group: GroupLoad) -> None:
        fit = self._fits.setdefault(group.group, OnlineLinearFit(self._config.forgetting))
        for sample in group.samples:
            fit.add(sample.running_per_replica, sample.step_seconds * 1000.0)

    def _costs(self, names: list[str]) -> dict[str, tuple[StepCost, bool]]:
        """Each group's line and whether it is its own fit (False: the prior)."""
        known = {name: cost for name in names if (cost := self.fitted(name)) is not None}
        fitted_anywhere = [c for g in self._fits if (c := self.fitted(g)) is not None]
        prior = NEUTRAL_PRIOR
        if fitted_anywhere:
            prior = StepCost(
                a_ms=sum(c.a_ms for c in fitted_anywhere) / len(fitted_anywhere),
                b_ms=sum(c.b_ms for c in fitted_anywhere) / len(fitted_anywhere),
            )
        costs = {}
        for name in names:
            fit = self._fits.get(name)
            level = fit.level(prior.b_ms) if fit is not None else None
            if name in known:
                costs[name] = (known[name], True)
            elif level is not None:
                # Samples at one load only: their step time, with the prior's slope.
                costs[name] = (StepCost(a_ms=level[0], b_ms=level[1]), True)
            else:
                costs[name] = (prior, False)
        return costs

    def decide(self, load: ModelLoad) -> Decision:
        for group in load.groups:
            self._observe(group)
        names = load.group_names
        up = available(load.groups)
        in_flight = load.in_flight
        if not up:
            return Decision(
                weights=even_split(names, names),
                reason=f"adaptive: {in_flight:g} in flight, no group has healthy replicas",
            )
        costs = self._costs(up)
        replicas = {group.group: group.replicas for group in load.groups}
        # The new request counts too: at no load it still goes where one request is fastest.
        split = split_load(
            {name: cost for name, (cost, _) in costs.items()}, replicas, in_flight + 1
        )
        floor = integer_floor(self._config.min_share, len(up))
        weights = to_weights(with_floor(split, floor), names)
        parts = [
            f"{name} a={cost.a_ms:.2f}ms b={cost.b_ms:.3f}ms"
            f"{'' if own else ' (prior)'} x{replicas[name]} -> {weights[name]}%"
            for name, (cost, own) in costs.items()
        ]
        down = [name for name in names if name not in up]
        if down:
            parts.append(f"no healthy replicas: {', '.join(down)}")
        return Decision(
            weights=weights, reason=f"adaptive: {in_flight:g} in flight; " + "; ".join(parts)
        )
