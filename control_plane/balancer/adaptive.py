"""The `adaptive` balancer policy: route new requests where the marginal latency is lowest,
by a step-time line per group learned online from the engines' own counters.

Pure layer, deterministic (no randomness): the same loads in the same order give the
same decisions. Each tick it folds the new step samples into each group's fit,
splits the model's in-flight load plus the request about to arrive over the measured
groups that have replicas (`cost_model.split_load`), and turns that split into weights.
Groups not measured yet share an exploration budget of `min_share` of the weight.

Exploration costs only while it is needed, and at most `min_share`. The engines report
their own decode steps (count, seconds, sequences run), so one tick of traffic on a
group gives its step time exactly; a measured group then gets what its line earns,
nothing held back for learning. A group left without traffic keeps its last line; when
the others' marginal cost rises above its intercept, the split sends it traffic again,
which re-measures it. An engine that warms up (the `sim` backend's `warmup_steps`) has
steps in its tally before any request, and the first reading of it is a sample
(signals.ReplicaSampler), so its group is measured before traffic: the first split already
goes where one request is fastest. Before any group is measured (engines without a
tally), every group is assumed alike and the split follows replica counts.

Prefill is in the split too, where the engines report it (a prefill-step tally and request
counters): each group's prefill time per prompt token (prefill_watch.PrefillFit), the
model's largest recent burst of prompt tokens prefilled at once and its requests' mean
prompt and output go into the line (cost_model.with_prefill), so a burst of long prompts
is spread over the groups by their prefill speed rather than queued on the group with the
fastest decode step. A group whose prefill is not measured yet is given the mean of those
that are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from control_plane.balancer.config import AdaptiveConfig
from control_plane.balancer.cost_model import (
    OnlineLinearFit,
    PrefillPressure,
    StepCost,
    split_load,
    with_prefill,
)
from control_plane.balancer.load import Decision, GroupLoad, ModelLoad
from control_plane.balancer.prefill_watch import BurstWatch, PrefillFit
from control_plane.balancer.weights import available, even_split, to_weights, with_exploration
from frugal.group_picker import GroupLine, ModelPicker, PickerConfig

# The line assumed for every group while none is measured: each costs the same per
# replica, so the first split follows replica counts and every group gets traffic.
NEUTRAL_PRIOR = StepCost(a_ms=10.0, b_ms=0.1)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class AdaptivePolicy:
    """Water-filling over online-fitted step-time lines, with a budget for exploring."""

    def __init__(
        self, config: AdaptiveConfig, group_weights: Mapping[str, int] | None = None
    ) -> None:
        self._config = config
        self._fits: dict[str, OnlineLinearFit] = {}
        self._prefill: dict[str, PrefillFit] = {}
        self._bursts = BurstWatch(config.burst_horizon_s, config.forgetting)

    def fitted(self, group: str) -> StepCost | None:
        """The group's fitted step-time line, or None while it has too few spread samples."""
        fit = self._fits.get(group)
        line = fit.line() if fit is not None else None
        return StepCost(a_ms=line[0], b_ms=line[1]) if line is not None else None

    def _observe(self, group: GroupLoad) -> None:
        fit = self._fits.setdefault(group.group, OnlineLinearFit(self._config.forgetting))
        for sample in group.samples:
            fit.add(sample.running_per_replica, sample.step_seconds * 1000.0)

    def _measured(self, names: list[str]) -> dict[str, StepCost]:
        """The line of each group that has reported steps: its fit, or, while its samples
        do not spread over load, their level with the slope of the fitted groups (the
        neutral prior's while there are none)."""
        fitted = [c for g in self._fits if (c := self.fitted(g)) is not None]
        slope = sum(c.b_ms for c in fitted) / len(fitted) if fitted else NEUTRAL_PRIOR.b_ms
        costs = {}
        for name in names:
            fit = self._fits.get(name)
            line = self.fitted(name)
            level = fit.level(slope) if fit is not None else None
            if line is not None:
                costs[name] = line
            elif level is not None:
                costs[name] = StepCost(a_ms=level[0], b_ms=level[1])
        return costs

    def prefill_ms_per_token(self, group: str) -> float | None:
        """The group's fitted prefill time per prompt token, or None before a sample."""
        fit = self._prefill.get(group)
        return fit.ms_per_token() if fit is not None else None

    def group_lines(self, groups: Sequence[str]) -> dict[str, GroupLine]:
        """The groups' step lines as the per-request group picker weighs them
        (frugal.group_picker): each measured group's decode line (its fit, or its level),
        and its prefill time per token. A group whose prefill is not measured yet is taken
        to prefill as slowly as the slowest measured group (0 while none is): with the
        mean, a slow group that has not been measured would look faster than it is, and
        take long prompts until it was. Groups without a decode sample are left out."""
        lines = self._measured(list(groups))
        per_token = self._prefill_per_token(lines, max)
        return {
            name: GroupLine(line.a_ms, line.b_ms, per_token.get(name, 0.0))
            for name, line in lines.items()
        }

    def picker(self, load: ModelLoad, config: PickerConfig) -> ModelPicker | None:
        """What the request processors pick the model's group by, after this tick's
        `load`: each serving group's line and serving replicas. None while a serving group
        has no line yet (the route weights, with their exploration share, measure it
        first) or no group serves."""
        serving = {group.group: group.replicas for group in load.groups if group.replicas > 0}
        lines = self.group_lines(list(serving))
        if not serving or lines.keys() != serving.keys():
            return None
        return ModelPicker(config, {name: (lines[name], serving[name]) for name in serving})

    def _prefill_per_token(
        self, names: Iterable[str], fallback: Callable[[list[float]], float] = _mean
    ) -> dict[str, float]:
        """Each group's prefill ms per token, `fallback` of the measured ones' (their mean
        by default) where its own is not measured yet; empty while none is."""
        names = list(names)
        known = {n: c for n in names if (c := self.prefill_ms_per_token(n)) is not None}
        if not known:
            return {}
        assumed = fallback(list(known.values()))
        return {name: known.get(name, assumed) for name in names}

    def _observe_prefill(self, load: ModelLoad, lines: Mapping[str, StepCost]) -> None:
        """Fold the new prefill samples in, against each group's decode line now."""
        reported = [g.prefill for g in load.groups if g.prefill is not None]
        if not reported or self._config.burst_horizon_s == 0:
            return
        self._bursts.observe(load.now, reported)
        for group in load.groups:
            line = lines.get(group.group)
            if group.prefill is None or line is None:
                continue
            fit = self._prefill.setdefault(group.group, PrefillFit(self._config.forgetting))
            for sample in group.prefill.samples:
                fit.add(sample, line)

    def _with_prefill(
        self, costs: dict[str, StepCost], load: float, pressure: PrefillPressure | None
    ) -> dict[str, StepCost]:
        per_token = self._prefill_per_token(costs)
        if pressure is None or not per_token:
            return costs
        return {
            name: with_prefill(cost, per_token[name], pressure, load)
            for name, cost in costs.items()
        }

    def decide(self, load: ModelLoad) -> Decision:
        for group in load.groups:
            self._observe(group)
        names = load.group_names
        # Every group's line, once a tick: the prefill fit and the split both use them.
        lines = self._measured(list(names))
        self._observe_prefill(load, lines)
        up = available(load.groups)
        in_flight = load.in_flight
        if not up:
            return Decision(
                weights=even_split(names, names),
                reason=f"adaptive: {in_flight:g} in flight, no group has healthy replicas",
            )
        measured = {name: lines[name] for name in up if name in lines}
        unmeasured = [name for name in up if name not in measured]
        replicas = {group.group: group.replicas for group in load.groups}
        pressure = self._bursts.pressure()
        # The new request counts too: at no load it still goes where one request is fastest.
        if measured:
            costs = self._with_prefill(measured, in_flight + 1, pressure)
            split = split_load(costs, replicas, in_flight + 1)
            shares = with_exploration(split, unmeasured, self._config.min_share)
        else:
            shares = split_load(dict.fromkeys(up, NEUTRAL_PRIOR), replicas, in_flight + 1)
        weights = to_weights(shares, names)
        parts = [
            f"{name} a={cost.a_ms:.2f}ms b={cost.b_ms:.3f}ms{self._prefill_part(name)} "
            f"x{replicas[name]} -> {weights[name]}%"
            for name, cost in measured.items()
        ]
        if pressure is not None:
            parts.append(
                f"prompt burst {pressure.burst_tokens:.0f} tokens, "
                f"{pressure.output_tokens:.0f} out per request"
            )
        if unmeasured:
            parts.append(f"exploring {', '.join(f'{n} {weights[n]}%' for n in unmeasured)}")
        down = [name for name in names if name not in up]
        if down:
            parts.append(f"no healthy replicas: {', '.join(down)}")
        return Decision(
            weights=weights, reason=f"adaptive: {in_flight:g} in flight; " + "; ".join(parts)
        )

    def _prefill_part(self, group: str) -> str:
        c = self.prefill_ms_per_token(group)
        return "" if c is None else f" c={c:.4f}ms/token"
