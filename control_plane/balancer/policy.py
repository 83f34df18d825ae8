"""The balancer policy interface and the registry of policies by config `type`.

Pure layer. A policy turns a model's live load into route weights for its replica
groups; it may keep state between ticks (hysteresis, an online fit), so the I/O loop
keeps one policy object per model and builds a new one when the model's balancer
config or static group weights change. A new policy is one module, one config class
in `config.py`, and one line in `POLICIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from control_plane.balancer.adaptive import AdaptivePolicy
from control_plane.balancer.concurrency_bands import ConcurrencyBandsPolicy
from control_plane.balancer.config import (
    AdaptiveConfig,
    BalancerConfig,
    ConcurrencyBandsConfig,
    StaticConfig,
)
from control_plane.balancer.load import Decision, ModelLoad
from control_plane.balancer.static import StaticPolicy


class BalancerPolicy(Protocol):
    def decide(self, load: ModelLoad) -> Decision:
        """Route weights for the model's groups at this tick."""
        ...


# (the model's balancer config, its groups' configured/admin-set static weights) -> policy
PolicyFactory = Callable[[BalancerConfig, Mapping[str, int]], BalancerPolicy]

_Config = TypeVar("_Config", StaticConfig, ConcurrencyBandsConfig, AdaptiveConfig)


def _entry(
    config_type: type[_Config], build: Callable[[_Config, Mapping[str, int]], BalancerPolicy]
) -> tuple[str, PolicyFactory]:
    """A registry entry keyed by the config class's own `type` literal."""
    name = config_type.model_fields["type"].default
    assert isinstance(name, str)

    def factory(config: BalancerConfig, group_weights: Mapping[str, int]) -> BalancerPolicy:
        if not isinstance(config, config_type):
            raise TypeError(f"policy {name!r} needs a {config_type.__name__}, got {config!r}")
        return build(config, group_weights)

    return name, factory


POLICIES: Mapping[str, PolicyFactory] = dict(
    [
        _entry(StaticConfig, StaticPolicy),
        _entry(ConcurrencyBandsConfig, ConcurrencyBandsPolicy),
        _entry(AdaptiveConfig, AdaptivePolicy),
    ]
)


def build_policy(config: BalancerConfig, group_weights: Mapping[str, int]) -> BalancerPolicy:
    """A fresh policy for one model, chosen by `config.type`."""
    try:
        factory = POLICIES[config.type]
    except KeyError:
        raise ValueError(f"no balancer policy of type {config.type!r}") from None
    return factory(config, group_weights)
