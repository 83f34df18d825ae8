"""What a change of route weights costs on the wire to Envoy, for a fleet (pure layer).

The control plane's snapshot versions each resource type, and each resource, by a hash of
its content (control_plane.xds.snapshot). A weight change alters only the model's
RouteConfiguration, so state-of-the-world ADS re-sends the route type alone and delta ADS
the changed route configurations alone, never the clusters and endpoints of every replica.
This measures both, and the full snapshot, from the control plane's own translation
(control_plane.server.build_snapshot) of a config holding the fleet's groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control_plane.model import Endpoint, FrugalConfig, Model, ReplicaGroup
from control_plane.server import build_snapshot, with_live_weights
from control_plane.xds.snapshot import Snapshot
from frugal.bench.virtual.fleet import MODEL, GroupSpec

ENGINE_PORT = 50051


@dataclass(frozen=True)
class UpdateSize:
    """Bytes of resources (serialised, summed) Envoy receives."""

    full_bytes: int  # the whole snapshot: what a new Envoy gets
    sotw_bytes: int  # every resource of the types that changed
    delta_bytes: int  # the resources that changed
    changed_types: tuple[str, ...]  # short names: Cluster, RouteConfiguration, ...


def fleet_config(groups: Sequence[GroupSpec]) -> FrugalConfig:
    """One model served by `groups`, one address per replica, a profile per group (the
    weights are laid over it by `update_size`)."""
    replica_groups = []
    for index, spec in enumerate(groups):
        replicas = tuple(
            Endpoint(host=f"10.{index}.{r // 256}.{r % 256}", port=ENGINE_PORT)
            for r in range(spec.replicas)
        )
        replica_groups.append(
            ReplicaGroup(name=spec.name, profile=spec.name, weight=1, replicas=replicas)
        )
    model = Model(name=MODEL, groups=tuple(replica_groups))
    profiles = {spec.name: spec.profile.model_dump() for spec in groups}
    return FrugalConfig(models=(model,), profiles=profiles)


def _bytes(snapshot: Snapshot, type_url: str, names: Sequence[str] | None = None) -> int:
    return sum(len(packed.value) for packed in snapshot.resources(type_url).packed(names))


def update_size(
    config: FrugalConfig, before: Mapping[str, int], after: Mapping[str, int]
) -> UpdateSize:
    """What goes to Envoy when the model's weights change from `before` to `after`."""
    old = build_snapshot(with_live_weights(config, {MODEL: before}), created=0)
    new = build_snapshot(with_live_weights(config, {MODEL: after}), created=0)
    full = sotw = delta = 0
    changed = []
    for type_url, typed in new.types.items():
        full += _bytes(new, type_url)
        if typed.version == old.version(type_url):
            continue
        changed.append(type_url.rsplit(".", 1)[-1])
        sotw += _bytes(new, type_url)
        previous = old.resources(type_url).resource_versions
        names = [n for n, v in typed.resource_versions.items() if previous.get(n) != v]
        delta += _bytes(new, type_url, names)
    return UpdateSize(full, sotw, delta, tuple(changed))
