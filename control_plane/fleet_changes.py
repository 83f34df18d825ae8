"""Run-time changes to the fleet, laid over frugal.yaml: replicas added, draining or removed,
group weights and balancer policies set through the admin REST.

Pure layer. `FleetChanges` is what the control plane persists in Redis (so the changes
survive a restart); `apply_changes` turns config + changes into the desired state,
validated as a whole, so an invalid change is refused with the field it breaks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from control_plane.balancer.config import BalancerConfig
from control_plane.model import Endpoint, FrugalConfig, Model, ReplicaGroup


def group_key(model: str, group: str) -> str:
    return f"{model}/{group}"


class FleetChanges(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # "model/group" -> replicas registered at run time ("host:port")
    added: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # "model/group" -> replicas draining, and replicas removed ("host:port")
    draining: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    removed: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # "model/group" -> static weight
    weights: dict[str, int] = Field(default_factory=dict)
    # model -> balancer policy
    balancers: dict[str, BalancerConfig] = Field(default_factory=dict)

    def with_replica(self, key: str, address: str) -> FleetChanges:
        removed = {**self.removed, key: tuple(a for a in self.removed.get(key, ()) if a != address)}
        added = {**self.added, key: (*self.added.get(key, ()), address)}
        return self.model_copy(update={"added": added, "removed": removed})

    def draining_replica(self, key: str, address: str) -> FleetChanges:
        draining = {**self.draining, key: (*self.draining.get(key, ()), address)}
        return self.model_copy(update={"draining": draining})

    def without_replica(self, key: str, address: str) -> FleetChanges:
        def drop(mapping: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
            return {**mapping, key: tuple(a for a in mapping.get(key, ()) if a != address)}

        removed = {**self.removed, key: (*self.removed.get(key, ()), address)}
        return self.model_copy(
            update={"added": drop(self.added), "draining": drop(self.draining), "removed": removed}
        )

    def with_weight(self, key: str, weight: int) -> FleetChanges:
        return self.model_copy(update={"weights": {**self.weights, key: weight}})

    def with_balancer(self, model: str, balancer: BalancerConfig) -> FleetChanges:
        return self.model_copy(update={"balancers": {**self.balancers, model: balancer}})


class FleetChangeError(ValueError):
    """A change that would make the desired state invalid; names the field."""


def _group(model: Model, group: ReplicaGroup, changes: FleetChanges) -> dict[str, object]:
    key = group_key(model.name, group.name)
    removed = set(changes.removed.get(key, ()))
    draining = set(changes.draining.get(key, ()))
    addresses = [str(e) for e in group.replicas] + list(changes.added.get(key, ()))
    seen: list[str] = []
    for address in addresses:
        if address not in removed and address not in seen:
            seen.append(address)
    replicas = [Endpoint.parse(a).model_copy(update={"draining": a in draining}) for a in seen]
    return {
        **group.model_dump(),
        "weight": changes.weights.get(key, group.weight),
        "replicas": replicas,
    }


def apply_changes(config: FrugalConfig, changes: FleetChanges) -> FrugalConfig:
    """The desired state: frugal.yaml with the run-time changes; raises FleetChangeError."""
    models = []
    for model in config.models:
        data = model.model_dump()
        data["groups"] = [_group(model, group, changes) for group in model.groups]
        if model.name in changes.balancers:
            data["balancer"] = changes.balancers[model.name]
        models.append(data)
    try:
        return FrugalConfig.model_validate({**config.model_dump(), "models": models})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise FleetChangeError(f"{where}: {first['msg']}") from error
