"""The `concurrency_bands` balancer policy: the ScaleLLM section-6 blueprint.

Pure layer. Below `threshold - hysteresis` requests in flight for the model, all
new requests go to `low_load_group` (high tensor parallelism, lowest latency per
token); above `threshold + hysteresis`, to `high_load_group` (many replicas,
highest throughput); in between, the previous choice stands, so load hovering at
the threshold does not flap the routes. The policy object keeps that choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from control_plane.balancer.config import ConcurrencyBandsConfig
from control_plane.balancer.load import Decision, ModelLoad
from control_plane.balancer.weights import all_to, available


class Band(Enum):
    LOW = "low"
    HIGH = "high"


class ConcurrencyBandsPolicy:
    """All traffic to one group, chosen by the model's in-flight load, with hysteresis."""

    def __init__(
        self, config: ConcurrencyBandsConfig, group_weights: Mapping[str, int] | None = None
    ) -> None:
        self._config = config
        self._band: Band | None = None

    @property
    def band(self) -> Band | None:
        """The band chosen at the last tick (None before the first)."""
        return self._band

    def _next_band(self, in_flight: float) -> Band:
        low_edge = self._config.threshold - self._config.hysteresis
        high_edge = self._config.threshold + self._config.hysteresis
        if in_flight < low_edge:
            return Band.LOW
        if in_flight > high_edge:
            return Band.HIGH
        if self._band is not None:
            return self._band
        # First tick inside the band: side with the threshold itself.
        return Band.LOW if in_flight <= self._config.threshold else Band.HIGH

    def decide(self, load: ModelLoad) -> Decision:
        in_flight = load.in_flight
        self._band = self._next_band(in_flight)
        low, high = self._config.low_load_group, self._config.high_load_group
        chosen, other = (low, high) if self._band is Band.LOW else (high, low)
        names = load.group_names
        up = available(load.groups)
        # The band's group, else the other band's, else any group that can answer; the
        # band itself is kept, so traffic returns once the chosen group has replicas.
        order = [chosen, other, *(name for name in names if name not in (chosen, other))]
        target = next((name for name in order if name in up), None)
        if target is None:
            target = next(name for name in order if name in names)
        reason = (
            f"concurrency_bands: {in_flight:g} in flight, {self._band.value} band "
            f"(threshold {self._config.threshold} +/- {self._config.hysteresis}) -> {target}"
        )
        if target != chosen:
            reason += f" ({chosen} unavailable)"
        return Decision(weights=all_to(target, names), reason=reason)
