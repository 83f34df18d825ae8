"""What a weight change sends to Envoy (frugal.bench.virtual.xds_update), measured on the
control plane's own snapshots of the virtual benchmark's fleets."""

from __future__ import annotations

from frugal.bench.virtual.compare import large_fleet, paper_fleet
from frugal.bench.virtual.xds_update import fleet_config, update_size


def test_a_weight_change_on_1000_replicas_sends_only_the_route_configuration() -> None:
    fleet = large_fleet()
    config = fleet_config(fleet.groups)
    assert sum(len(g.replicas) for m in config.models for g in m.groups) == 1000
    before, after = fleet.policies["static-tp8"][1], fleet.policies["static-tp2"][1]
    update = update_size(config, before, after)
    assert update.changed_types == ("RouteConfiguration",)
    assert update.delta_bytes == update.sotw_bytes  # one route configuration: all of it
    assert update.sotw_bytes * 10 < update.full_bytes  # the clusters and endpoints stay


def test_no_change_sends_nothing() -> None:
    fleet = paper_fleet()
    weights = fleet.policies["static-tp8"][1]
    update = update_size(fleet_config(fleet.groups), weights, weights)
    assert (update.sotw_bytes, update.delta_bytes, update.changed_types) == (0, 0, ())
    assert update.full_bytes > 0
