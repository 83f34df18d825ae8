"""An immutable, internally consistent set of Envoy resources: what the xDS server serves.

Layer: control plane, xDS model (pure; no I/O). Modelled on go-control-plane's
`pkg/cache/v3/snapshot.go`: resources are grouped by type URL; each type has a version that is a
content hash of its resources, so a type whose resources did not change keeps its version and is
not pushed again. `Snapshot.consistent()` checks the references between types before the snapshot
is published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message

from control_plane.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    resource_name,
    type_url_of,
)

_HCM_TYPE = type_url_of(http_connection_manager_pb2.HttpConnectionManager())
_VERSION_CHARS = 16  # 64 bits of SHA-256: plenty to tell snapshots apart, short in logs


class InconsistentSnapshotError(ValueError):
    """A snapshot references a resource it does not contain."""

    def __init__(self, problems: Collection[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("inconsistent snapshot: " + "; ".join(self.problems))


def _content_hash(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        # Length-prefix every chunk so that ("ab", "c") and ("a", "bc") hash differently.
        digest.update(len(chunk).to_bytes(8, "big"))
        digest.update(chunk)
    return digest.hexdigest()[:_VERSION_CHARS]


@dataclass(frozen=True)
class TypedResources:
    """All resources of one type URL in a snapshot, with their versions.

    `items` maps resource name to message; treat the messages as read-only. `resource_versions`
    maps name to a content hash of that resource (used by delta xDS).
    """

    type_url: str
    version: str
    items: Mapping[str, Message]
    resource_versions: Mapping[str, str]
    _serialized: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def build(cls, type_url: str, messages: Iterable[Message]) -> TypedResources:
        items: dict[str, Message] = {}
        serialized: dict[str, bytes] = {}
        for message in messages:
            if type_url_of(message) != type_url:
                raise TypeError(f"{type_url_of(message)} resource given as {type_url}")
            name = resource_name(message)
            if not name:
                raise ValueError(f"{type_url} resource without a name")
            if name in items:
                raise ValueError(f"duplicate {type_url} resource {name!r}")
            copy = type(message)()
            copy.CopyFrom(message)  # the snapshot must not change when the caller's message does
            items[name] = copy
            serialized[name] = copy.SerializeToString(deterministic=True)
        names = sorted(items)
        version = _content_hash(
            chunk for name in names for chunk in (name.encode(), serialized[name])
        )
        return cls(
            type_url=type_url,
            version=version,
            items=MappingProxyType(items),
            resource_versions=MappingProxyType(
                {name: _content_hash([serialized[name]]) for name in names}
            ),
            _serialized=MappingProxyType(serialized),
        )

    def packed(self, names: Collection[str] | None = None) -> list[any_pb2.Any]:
        """Resources as Any messages, sorted by name; only `names` (those present) if given."""
        selected = sorted(self.items if names is None else (n for n in names if n in self.items))
        return [any_pb2.Any(type_url=self.type_url, value=self._serialized[n]) for n in selected]


def _empty(type_url: str) -> TypedResources:
    return TypedResources.build(type_url, ())


@dataclass(frozen=True)
class Snapshot:
    """Resources per type URL. Build with `Snapshot.of(...)` or `Snapshot.from_resources(...)`."""

    types: Mapping[str, TypedResources]

    @classmethod
    def of(cls, resources: Iterable[Message]) -> Snapshot:
        """A snapshot of any mix of resources, grouped by their type URL."""
        grouped: dict[str, list[Message]] = {}
        for message in resources:
            grouped.setdefault(type_url_of(message), []).append(message)
        return cls(
            types=MappingProxyType(
                {url: TypedResources.build(url, group) for url, group in grouped.items()}
            )
        )

    @classmethod
    def from_resources(
        cls,
        *,
        clusters: Iterable[Message] = (),
        endpoints: Iterable[Message] = (),
        listeners: Iterable[Message] = (),
        routes: Iterable[Message] = (),
    ) -> Snapshot:
        """A snapshot of the four core types; the four types are always present (maybe empty)."""
        given = {
            CLUSTER_TYPE: list(clusters),
            ENDPOINT_TYPE: list(endpoints),
            LISTENER_TYPE: list(listeners),
            ROUTE_TYPE: list(routes),
        }
        return cls(
            types=MappingProxyType(
                {url: TypedResources.build(url, group) for url, group in given.items()}
            )
        )

    def resources(self, type_url: str) -> TypedResources:
        """The resources of `type_url`; an empty set for a type the snapshot does not hold."""
        found = self.types.get(type_url)
        return found if found is not None else _empty(type_url)

    def version(self, type_url: str) -> str:
        return self.resources(type_url).version

    def items(self, type_url: str) -> Mapping[str, Message]:
        return self.resources(type_url).items

    def versions(self) -> dict[str, str]:
        """Version of every type the snapshot holds (handy in logs)."""
        return {url: typed.version for url, typed in self.types.items()}

    def consistent(self) -> None:
        """Raise `InconsistentSnapshotError` naming every dangling reference.

        Checks: each route-config name a listener's HttpConnectionManager asks RDS for exists;
        each cluster a route sends to (directly, weighted, or mirrored; in RDS or inline route
        configs) exists in CDS; each EDS cluster has a ClusterLoadAssignment named after its
        `eds_cluster_config.service_name`, or its own name when that is empty.
        """
        problems = [
            *self._missing_route_configs(),
            *self._missing_clusters(),
            *self._missing_load_assignments(),
        ]
        if problems:
            raise InconsistentSnapshotError(problems)

    def _missing_route_configs(self) -> Iterator[str]:
        routes = self.items(ROUTE_TYPE)
        for listener_name, listener in self.items(LISTENER_TYPE).items():
            for hcm in _http_connection_managers(listener):
                wanted = hcm.rds.route_config_name
                if hcm.HasField("rds") and wanted not in routes:
                    yield f"listener {listener_name!r} uses route config {wanted!r}, not in RDS"

    def _missing_clusters(self) -> Iterator[str]:
        route_configs: list[tuple[str, Message]] = [
            (f"route config {name!r}", config) for name, config in self.items(ROUTE_TYPE).items()
        ]
        for listener_name, listener in self.items(LISTENER_TYPE).items():
            for hcm in _http_connection_managers(listener):
                if hcm.HasField("route_config"):
                    where = f"listener {listener_name!r} inline route config"
                    route_configs.append((where, hcm.route_config))
        clusters = self.items(CLUSTER_TYPE)
        for where, config in route_configs:
            for cluster_name in _routed_clusters(config):
                if cluster_name not in clusters:
                    yield f"{where} routes to cluster {cluster_name!r}, not in CDS"

    def _missing_load_assignments(self) -> Iterator[str]:
        endpoints = self.items(ENDPOINT_TYPE)
        for cluster_name, cluster in self.items(CLUSTER_TYPE).items():
            assert isinstance(cluster, cluster_pb2.Cluster)
            if cluster.type != cluster_pb2.Cluster.EDS:
                continue
            service = cluster.eds_cluster_config.service_name or cluster_name
            if service not in endpoints:
                yield (
                    f"EDS cluster {cluster_name!r} needs ClusterLoadAssignment {service!r}, "
                    "not in EDS"
                )


def _http_connection_managers(
    listener: Message,
) -> Iterator[http_connection_manager_pb2.HttpConnectionManager]:
    assert isinstance(listener, listener_pb2.Listener)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != _HCM_TYPE:
                continue
            hcm = http_connection_manager_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            yield hcm


def _routed_clusters(config: Message) -> Iterator[str]:
    assert isinstance(config, route_pb2.RouteConfiguration)
    for virtual_host in config.virtual_hosts:
        for route in virtual_host.routes:
            if not route.HasField("route"):
                continue  # direct_response, redirect, filter_action: no upstream cluster
            action = route.route
            if action.cluster:
                yield action.cluster
            for weighted in action.weighted_clusters.clusters:
                yield weighted.name
            for mirror in action.request_mirror_policies:
                if mirror.cluster:
                    yield mirror.cluster
