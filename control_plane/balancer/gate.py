"""When a policy's proposed weights are worth publishing to Envoy.

Pure layer; the caller passes the time. Every publish is a new xDS snapshot pushed
to every Envoy, so weights that wobble by a point or two with sampling noise are
not worth one. The gate publishes only when some group's weight moved by at least
`min_change` from what is published now, and no sooner than `min_interval_s` after
the previous publish.

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
        groups changed (a group added or removed is not noise); otherwise when some
        group's weight differs by `min_change` or more and `min_interval_s` has passed
        since the last publish.
        """
        if current is None or set(current) != set(proposed):
            return self._publish(now)
        moved = max((abs(proposed[name] - current[name]) for name in proposed), default=0)
        if moved < self.min_change:
            return False
        if self._published_at is not None and now - self._published_at < self.min_interval_s:
            return False
        return self._publish(now)

    def _publish(self, now: float) -> bool:
        self._published_at = now
        return True
