"""The `static` balancer policy: the configured (or admin-set) group weights.

Pure layer. The weights are normalised to sum to 100 (largest-remainder rounding);
a group with no healthy replica gets none of them, so Envoy is not told to send
traffic where nothing can answer, unless no group has a replica at all (then the
configured split stands and Envoy's own health checks decide).
"""

from __future__ import annotations

from collections.abc import Mapping

from control_plane.balancer.config import StaticConfig
from control_plane.balancer.load import Decision, ModelLoad
from control_plane.balancer.weights import available, even_split, to_weights


class StaticPolicy:
    """Weights fixed by configuration; only replica availability changes them."""

    def __init__(self, config: StaticConfig, group_weights: Mapping[str, int]) -> None:
        self._config = config
        self._group_weights = dict(group_weights)

    def decide(self, load: ModelLoad) -> Decision:
        names = load.group_names
        up = available(load.groups) or list(names)
        configured = {name: float(self._group_weights.get(name, 0)) for name in up}
        if sum(configured.values()) > 0:
            weights = to_weights(configured, names)
            note = "configured weights"
        else:
            # Every configured weight is on a group that cannot answer: spread over those that can.
            weights = even_split(up, names)
            note = "no configured weight on a group with replicas; even split"
        down = [name for name in names if name not in up]
        if down:
            note += f" (no healthy replicas: {', '.join(down)})"
        shown = " ".join(f"{name}={weight}" for name, weight in weights.items())
        return Decision(weights=weights, reason=f"static: {note}: {shown}")
