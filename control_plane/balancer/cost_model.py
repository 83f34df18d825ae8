"""The adaptive policy's cost model: a step-time line fitted online, and the split
of a model's load over groups that minimises total latency.

Pure layer, plain floats. Engines follow `t_step = a + b * n_running`
(docs/simulator.md, "The step model"; ScaleLLM Table 1). Each group's line is fitted by
exponentially weighted least squares over its replicas' step samples; the split
is the water-filling solution of a convex problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Below this, the intercept and the slope cannot be told apart: too few samples, or
# samples all at nearly the same load (the variance is in running-sequences squared).
MIN_SAMPLES = 3
MIN_RUNNING_VARIANCE = 0.25
# A fitted slope at or below 0 (noise, or a flat line) would make a group look like it
# has infinite capacity; it is held at this (ms per running sequence) instead.
MIN_SLOPE_MS = 1e-3


@dataclass(frozen=True)
class StepCost:
    """A group's step time in ms: `a_ms + b_ms * running_per_replica`."""

    a_ms: float
    b_ms: float

    def step_ms(self, running_per_replica: float) -> float:
        return self.a_ms + self.b_ms * running_per_replica


class OnlineLinearFit:
    """Least squares of y on x with exponential forgetting: after each sample every
    older one weighs `forgetting` times less, so the fit follows a changing engine
    (an effective memory of 1 / (1 - forgetting) samples).

    Kept as weighted running sums, equivalent to recursive least squares with the
    same forgetting. When the recent samples stop spreading over x (steady load),
    the sums can no longer separate a from b, so the last well-determined line is
    held rather than letting it drift (RLS "wind-up")."""

    def __init__(self, forgetting: float) -> None:
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must lie in (0, 1]: {forgetting}")
        self._forgetting = forgetting
        self._count = 0
        self._w = self._wx = self._wxx = self._wy = self._wxy = 0.0
        self._last: tuple[float, float] | None = None

    @property
    def count(self) -> int:
        """Samples seen so far (not weighted)."""
        return self._count

    def add(self, x: float, y: float) -> None:
        f = self._forgetting
        self._count += 1
        self._w = f * self._w + 1.0
        self._wx = f * self._wx + x
        self._wxx = f * self._wxx + x * x
        self._wy = f * self._wy + y
        self._wxy = f * self._wxy + x * y
        line = self._solve()
        if line is not None:
            self._last = line

    def _solve(self) -> tuple[float, float] | None:
        if self._count < MIN_SAMPLES:
            return None
        mean_x = self._wx / self._w
        variance = self._wxx / self._w - mean_x * mean_x
        if variance < MIN_RUNNING_VARIANCE:
            return None
        covariance = self._wxy / self._w - mean_x * (self._wy / self._w)
        slope = covariance / variance
        return self._wy / self._w - slope * mean_x, slope

    def line(self) -> tuple[float, float] | None:
        """(intercept, slope) of the last well-determined fit, or None before there is one."""
        return self._last

    def level(self, slope: float) -> tuple[float, float] | None:
        """Before a line can be fitted (the samples do not spread over x, as at a steady low
        load): the intercept the samples' mean implies for a given slope; None without any."""
        if self._count == 0:
            return None
        mean_x = self._wx / self._w
        return self._wy / self._w - slope * mean_x, slope


@dataclass(frozen=True)
class PrefillPressure:
    """A model's prompts as the split weighs them: the most prompt tokens its replicas
    prefilled at once in the recent past (a burst), and a finished request's mean output
    and prompt."""

    burst_tokens: float
    output_tokens: float
    prompt_tokens: float


def with_prefill(
    cost: StepCost, prefill_ms_per_token: float, pressure: PrefillPressure, load: float
) -> StepCost:
    """The step line with a burst's prefill in its slope, so that `split_load` weighs a
    request's whole latency: its O decode steps and, arriving in a burst of Q prompt
    tokens, the prefill of its replica's part of the burst first.

    A share s_g of `load` = X requests on group g (R_g replicas, prefill c_g ms a token)
    costs each request, of mean prompt L, O * (a_g + b_g * s_g * X / R_g) + c_g * L +
    c_g * s_g * Q / R_g. Over O and times X, that is split_load's
    x_g * (a'_g + b'_g * x_g / R_g) with x_g = s_g * X, a'_g = a_g + c_g * L / O and
    b'_g = b_g + c_g * Q / (O * X): long prompts that come together spread over groups
    in proportion to their prefill speed, short ones leave the decode line as it was."""
    if pressure.output_tokens <= 0 or load <= 0:
        return cost
    extra = prefill_ms_per_token * pressure.burst_tokens / (pressure.output_tokens * load)
    own = prefill_ms_per_token * pressure.prompt_tokens / pressure.output_tokens
    return StepCost(a_ms=cost.a_ms + own, b_ms=cost.b_ms + max(extra, 0.0))


def usable(cost: StepCost) -> StepCost:
    """A fitted line made safe for the split: no negative step time, a positive slope."""
    return StepCost(a_ms=max(cost.a_ms, 0.0), b_ms=max(cost.b_ms, MIN_SLOPE_MS))


def split_load(
    costs: Mapping[str, StepCost], replicas: Mapping[str, int], load: float
) -> dict[str, float]:
    """Requests per group minimising total latency per step for `load` requests.

    Group g with R_g replicas carrying x_g requests runs x_g / R_g per replica, and
    each of them waits one step: cost x_g * (a_g + b_g * x_g / R_g). The total is
    convex, so the optimum equalises the marginal costs a_g + 2 b_g x_g / R_g at a
    level lam over the groups that take any load (water-filling); a group whose a_g is
    above lam takes none. No capacity cap (max batch) is applied: beyond it requests
    queue in the engine, which the line does not model, so at very high load the
    split is only as good as the line's extrapolation.
    """
    if load <= 0:
        return dict.fromkeys(costs, 0.0)
    safe = {name: usable(cost) for name, cost in costs.items()}
    # x_g = (lam - a_g) * c_g while lam > a_g, with c_g = R_g / (2 b_g).
    capacity = {name: replicas[name] / (2 * safe[name].b_ms) for name in safe}
    order = sorted(safe, key=lambda name: (safe[name].a_ms, list(safe).index(name)))
    level = 0.0
    for k in range(1, len(order) + 1):
        active = order[:k]
        weight = sum(capacity[name] for name in active)
        level = (load + sum(safe[name].a_ms * capacity[name] for name in active)) / weight
        if k == len(order) or level <= safe[order[k]].a_ms:
            break
    return {name: max(level - safe[name].a_ms, 0.0) * capacity[name] for name in safe}
