"""Integer route weights from fractional shares, shared by the balancer policies.

Pure layer. Envoy takes integer cluster weights; we keep them 0..100 summing to
exactly 100, rounded by the largest-remainder (Hamilton) method so the total is
never off by one and ties break the same way every time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from control_plane.balancer.load import TOTAL_WEIGHT, GroupLoad


def available(groups: Sequence[GroupLoad]) -> list[str]:
    """Groups that can take new requests: at least one healthy, non-draining replica."""
    return [group.group for group in groups if group.replicas > 0]


def to_weights(shares: Mapping[str, float], names: Sequence[str]) -> dict[str, int]:
    """Weights for every group in `names` (in that order) from non-negative shares of
    some of them; shares are normalised, absent groups get 0. An all-zero share
    splits evenly over `names`."""
    total = sum(max(shares.get(name, 0.0), 0.0) for name in names)
    if total <= 0:
        return even_split(names, names)
    exact = {name: max(shares.get(name, 0.0), 0.0) * TOTAL_WEIGHT / total for name in names}
    weights = {name: math.floor(value) for name, value in exact.items()}
    left = TOTAL_WEIGHT - sum(weights.values())
    # Largest remainder first; equal remainders go to the group listed first.
    order = sorted(range(len(names)), key=lambda i: (-(exact[names[i]] - weights[names[i]]), i))
    for i in order[:left]:
        weights[names[i]] += 1
    return weights


def even_split(among: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    """Equal weights over `among`, 0 for the rest of `names`."""
    return to_weights({name: 1.0 for name in among}, names) if among else {}


def all_to(group: str, names: Sequence[str]) -> dict[str, int]:
    """All the weight to one group."""
    return {name: TOTAL_WEIGHT if name == group else 0 for name in names}


def with_exploration(
    split: Mapping[str, float], unmeasured: Sequence[str], min_share: float
) -> dict[str, float]:
    """Shares in weight units (summing to the total) from the measured groups' `split`
    (requests per group, any scale) and an exploration budget for the `unmeasured`
    groups: `min_share` of the weight in whole points, split evenly, one point at least
    each. Unmeasured groups past the budget's points (in the order given) get none until
    those before them are measured. Whole points, so `to_weights` keeps them exactly."""
    budget = math.ceil(min_share * TOTAL_WEIGHT - 1e-9) if unmeasured else 0
    explored = list(unmeasured[: min(budget, TOTAL_WEIGHT)])
    each = budget // len(explored) if explored else 0
    total = sum(split.values())
    rest = TOTAL_WEIGHT - each * len(explored)
    shares = {name: value * rest / total if total > 0 else 0.0 for name, value in split.items()}
    shares.update(dict.fromkeys(unmeasured, 0.0))
    shares.update(dict.fromkeys(explored, float(each)))
    return shares
