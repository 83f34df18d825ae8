"""Replica groups that discover their replicas by DNS: the config, and what is laid over it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from control_plane.fleet_changes import FleetChanges, apply_changes
from control_plane.model import DnsDiscovery, Endpoint, FrugalConfig
from control_plane.replica_discovery import discovery_targets, endpoints_of, with_discovered
from control_plane.server import api_descriptor
from control_plane.translate import translate

DISCOVER = {"dns": "engine-tp2", "port": 50062, "interval_s": 2}
BASE = FrugalConfig.model_validate(
    {
        "profiles": {"p": {"a_ms": 1.0}},
        "models": [
            {
                "name": "m",
                "groups": [
                    {"name": "a", "profile": "p", "replicas": ["127.0.0.1:7001"]},
                    {"name": "b", "profile": "p", "discover": DISCOVER},
                    {"name": "c", "profile": "p", "replicas": ["10.0.0.9:50062"],
                     "discover": {"dns": "engine-c", "port": 50062}},
                ],
            }
        ],
    }
)  # fmt: skip


def _replicas(config: FrugalConfig, group: str) -> list[str]:
    model = config.model("m")
    assert model is not None
    return [str(e) for e in next(g for g in model.groups if g.name == group).replicas]


def test_a_group_may_discover_its_replicas_instead_of_listing_them() -> None:
    assert discovery_targets(BASE) == {
        "m/b": DnsDiscovery(dns="engine-tp2", port=50062, interval_s=2),
        "m/c": DnsDiscovery(dns="engine-c", port=50062),
    }
    assert _replicas(BASE, "b") == []


def test_a_group_without_replicas_or_discover_is_refused() -> None:
    data = BASE.model_dump()
    del data["models"][0]["groups"][1]["discover"]
    with pytest.raises(ValidationError, match="list its replicas, or `discover` them by DNS"):
        FrugalConfig.model_validate(data)


@pytest.mark.parametrize("name", ["", "-engine", "engine name", "engine/tp2", "x" * 254])
def test_a_name_that_is_no_dns_name_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="dns"):
        DnsDiscovery(dns=name, port=1)


def test_endpoints_are_one_per_distinct_address_in_a_stable_order() -> None:
    found = endpoints_of(["10.0.0.3", "10.0.0.2", "10.0.0.3", "fd00::1"], 50062)
    assert [str(e) for e in found] == ["10.0.0.2:50062", "10.0.0.3:50062", "fd00::1:50062"]


def test_discovered_replicas_follow_the_configured_ones_once_each() -> None:
    discovered = {
        "m/b": endpoints_of(["10.0.0.2", "10.0.0.3"], 50062),
        "m/c": endpoints_of(["10.0.0.9", "10.0.0.8"], 50062),
    }
    config = with_discovered(BASE, discovered)
    assert _replicas(config, "a") == ["127.0.0.1:7001"]
    assert _replicas(config, "b") == ["10.0.0.2:50062", "10.0.0.3:50062"]
    assert _replicas(config, "c") == ["10.0.0.9:50062", "10.0.0.8:50062"]


def test_a_discovered_replica_drains_and_is_removed_like_a_configured_one() -> None:
    found = with_discovered(BASE, {"m/b": endpoints_of(["10.0.0.2", "10.0.0.3"], 50062)})
    changes = FleetChanges().draining_replica("m/b", "10.0.0.2:50062")
    model = apply_changes(found, changes).model("m")
    assert model is not None
    assert [(str(e), e.draining) for e in model.groups[1].replicas] == [
        ("10.0.0.2:50062", True),
        ("10.0.0.3:50062", False),
    ]
    removed = apply_changes(found, FleetChanges().without_replica("m/b", "10.0.0.3:50062"))
    assert _replicas(removed, "b") == ["10.0.0.2:50062"]


def test_envoy_gets_the_discovered_endpoints_over_eds() -> None:
    config = with_discovered(BASE, {"m/b": (Endpoint(host="10.0.0.2", port=50062),)})
    envoy = translate(config, api_descriptor(), 0)
    by_cluster = {e.cluster_name: e for e in envoy.endpoints}
    [locality] = by_cluster["engine__m__b"].endpoints
    [endpoint] = locality.lb_endpoints
    assert endpoint.endpoint.address.socket_address.address == "10.0.0.2"
    assert endpoint.endpoint.address.socket_address.port_value == 50062
    # A group that has found nothing yet is an Envoy cluster without endpoints.
    empty = {e.cluster_name: e for e in translate(BASE, api_descriptor(), 0).endpoints}
    assert not empty["engine__m__b"].endpoints[0].lb_endpoints
