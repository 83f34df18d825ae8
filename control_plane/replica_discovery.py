"""Replicas found by DNS, laid over the configured ones.

Pure layer. `discovery_targets` lists the groups that name a DNS name (`discover` in
frugal.yaml), `endpoints_of` turns what a name resolved to into endpoints, and
`with_discovered` puts them in the desired state. The resolving itself, on a timer, is
`dns_resolver.ReplicaResolver`; the fleet (fleet.py) lays run-time changes over the
result, so a discovered replica can be drained or removed like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from control_plane.fleet_changes import group_key
from control_plane.model import DnsDiscovery, Endpoint, FrugalConfig

# "model/group" -> the endpoints its DNS name resolved to, last time it was asked
Discovered = Mapping[str, tuple[Endpoint, ...]]


def discovery_targets(config: FrugalConfig) -> dict[str, DnsDiscovery]:
    """Every group that discovers its replicas, by "model/group"."""
    return {
        group_key(model.name, group.name): group.discover
        for model in config.models
        for group in model.groups
        if group.discover is not None
    }


def endpoints_of(addresses: Iterable[str], port: int) -> tuple[Endpoint, ...]:
    """One endpoint per distinct address, in a stable order (the DNS answer's order
    rotates; the snapshot should change only when the set does)."""
    return tuple(Endpoint(host=host, port=port) for host in sorted(set(addresses)))


def with_discovered(config: FrugalConfig, discovered: Discovered) -> FrugalConfig:
    """The config with each discovering group's replicas: its fixed ones, then the ones
    its name resolved to (an address listed both ways appears once)."""
    models = []
    for model in config.models:
        groups = []
        for group in model.groups:
            found = discovered.get(group_key(model.name, group.name), ())
            fixed = {str(e) for e in group.replicas}
            extra = tuple(e for e in found if str(e) not in fixed)
            groups.append(
                group.model_copy(update={"replicas": group.replicas + extra}) if extra else group
            )
        models.append(model.model_copy(update={"groups": tuple(groups)}))
    return config.model_copy(update={"models": tuple(models)})
