"""When a policy's proposed weights are worth publishing to Envoy.

Pure layer; the caller passes the time. Every publish is a new xDS snapshot pushed
to every Envoy, so weights that wobble by a point or two with sampling noise are
not worth one. The gate publishes only when at least `min_change` of the weight
would move from what is published now (half the sum of the groups' changes: the
share of traffic that goes elsewhere), and no sooner than `min_interval_s` after
the previous publish. Counting the weight moved, not the largest change of one group,
lets a decision over many groups through: 2 points off each of 25 groups of 50 move
half the traffic, though no group moves by more than 2.

Why it does not flap on noise: proposals are compared with the *published*
weights, not with the previous proposal, so noise of less than `min_change`
around the published value never passes (a dead band), while a real, slow drift
adds up until it does. The interval bounds how fast even real changes go out.
"""

from __future__ import annotations

from collections.abc import Mapping


class WeightGate:
    """Hysteresis on publishing route weights: a dead band and a minimum interval."""

    def __init__(self, min_change: int = 5, min_interval_s: float = 0.5) -> None:
        if min_change < 1:
            raise ValueError(f"min_change must be at least 1: {min_change}")
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must not be negative: {min_interval_s}")
        self.min_change = min_change
        self.min_interval_s = min_interval_s
        self._published_at: float | None = None

    @property
    def published_at(self) -> float | None:
        """When `offer` last returned True (None before)."""
        return self._published_at

    def offer(
        self, current: Mapping[str, int] | None, proposed: Mapping[str, int], now: float
    ) -> bool:
        """True when `proposed` should be published now; the publish time is then recorded.

        Publishes at once when nothing is published yet (`current` None) or the set of
        groups changed (a group added or removed is not noise); otherwise when
        `min_change` or more of the weight moves and `min_interval_s` has passed since
        the last publish.
        """
        if current is None or set(current) != set(proposed):
            return self._publish(now)
        if moved_weight(current, proposed) < self.min_change:
            return False
        if self._published_at is not None and now - self._published_at < self.min_interval_s:
            return False
        return self._publish(now)

    def _publish(self, now: float) -> bool:
        self._published_at = now
        return True


def moved_weight(current: Mapping[str, int], proposed: Mapping[str, int]) -> float:
    """The weight that goes from some groups to others between two sets of weights with
    the same total: half the sum of the changes."""
    names = set(current) | set(proposed)
    return sum(abs(proposed.get(n, 0) - current.get(n, 0)) for n in names) / 2
