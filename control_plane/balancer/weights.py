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


def integer_floor(min_share: float, groups: int) -> int:
    """The smallest weight each of `groups` groups keeps for a `min_share` floor: rounded
    up so the floor holds after rounding, and never more than an even split."""
    if groups <= 0:
        return 0
    return min(math.ceil(min_share * TOTAL_WEIGHT - 1e-9), TOTAL_WEIGHT // groups)


def with_floor(shares: Mapping[str, float], floor: int) -> dict[str, float]:
    """Shares (in weight units, summing to 100) where every group keeps at least `floor`,
    the rest scaled down in proportion. The floor is an integer, so rounding the result
    with `to_weights` keeps it."""
    if sum(shares.values()) <= 0:
        return dict(shares)
    floored: set[str] = set()
    while True:
        free = TOTAL_WEIGHT - floor * len(floored)
        rest = sum(value for name, value in shares.items() if name not in floored)
        scaled = {
            name: float(floor) if name in floored or rest <= 0 else value * free / rest
            for name, value in shares.items()
        }
        below = {name for name, value in scaled.items() if value < floor and name not in floored}
        if not below:
            return scaled
        floored |= below
