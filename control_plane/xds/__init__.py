"""Frugal's xDS server: serves immutable Envoy configuration snapshots over ADS.

Layer: control plane, serving edge. This package knows nothing of Frugal's own configuration;
`control_plane.translate` builds the Envoy messages, this package checks that they reference each
other consistently and streams them to Envoy (state of the world and delta ADS).
"""

from control_plane.xds.cache import SnapshotCache
from control_plane.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
)
from control_plane.xds.server import ADS_SERVER_OPTIONS, AdsServicer, add_ads_servicer
from control_plane.xds.snapshot import InconsistentSnapshotError, Snapshot
from control_plane.xds.stats import TypeStats, XdsStats

__all__ = [
    "ADS_SERVER_OPTIONS",
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "AdsServicer",
    "InconsistentSnapshotError",
    "Snapshot",
    "SnapshotCache",
    "TypeStats",
    "XdsStats",
    "add_ads_servicer",
]
