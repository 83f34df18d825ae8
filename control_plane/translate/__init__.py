"""Desired state -> Envoy configuration, as a pure function.

`translate(config, descriptor, created)` returns every listener, route table,
cluster and endpoint assignment Envoy needs; the xDS layer packs them into a
snapshot and serves them without knowing what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.model import FrugalConfig
from control_plane.translate import messages as m
from control_plane.translate.clusters import (
    build_engine_clusters,
    build_load_assignment,
    build_safety_filter_cluster,
)
from control_plane.translate.listener import build_public_listener
from control_plane.translate.routes import build_route_configuration


@dataclass(frozen=True)
class EnvoyResources:
    listeners: tuple[m.Listener, ...]
    routes: tuple[m.RouteConfiguration, ...]
    clusters: tuple[m.Cluster, ...]
    endpoints: tuple[m.ClusterLoadAssignment, ...]


def translate(config: FrugalConfig, descriptor: bytes, created: int) -> EnvoyResources:
    """`descriptor` is the frugal.v1 descriptor set; `created` stamps the model cards."""
    groups = [(model, group) for model in config.models for group in model.groups]
    return EnvoyResources(
        listeners=(build_public_listener(config, descriptor),),
        routes=(build_route_configuration(config, created),),
        clusters=(
            build_safety_filter_cluster(config),
            *(c for model, group in groups for c in build_engine_clusters(model, group)),
        ),
        endpoints=tuple(build_load_assignment(model, group) for model, group in groups),
    )
