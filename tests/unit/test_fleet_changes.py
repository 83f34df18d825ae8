"""Run-time fleet changes over frugal.yaml: the desired state, or a refusal naming the field."""

from __future__ import annotations

import pytest

from control_plane.balancer.config import ConcurrencyBandsConfig
from control_plane.fleet_changes import FleetChangeError, FleetChanges, apply_changes
from control_plane.model import FrugalConfig

BASE = FrugalConfig.model_validate(
    {
        "profiles": {"p": {"a_ms": 1.0}},
        "models": [
            {
                "name": "m",
                "groups": [
                    {"name": "a", "profile": "p", "weight": 1, "replicas": ["127.0.0.1:7001"]},
                    {"name": "b", "profile": "p", "weight": 1, "replicas": ["127.0.0.1:7002"]},
                ],
            }
        ],
    }
)


def _replicas(config: FrugalConfig, group: str) -> list[tuple[str, bool]]:
    model = config.model("m")
    assert model is not None
    found = next(g for g in model.groups if g.name == group)
    return [(str(e), e.draining) for e in found.replicas]


def test_no_changes_give_the_file_back() -> None:
    assert apply_changes(BASE, FleetChanges()) == BASE


def test_register_drain_and_remove() -> None:
    changes = FleetChanges().with_replica("m/a", "127.0.0.1:7003")
    assert _replicas(apply_changes(BASE, changes), "a") == [
        ("127.0.0.1:7001", False),
        ("127.0.0.1:7003", False),
    ]
    changes = changes.draining_replica("m/a", "127.0.0.1:7001")
    assert _replicas(apply_changes(BASE, changes), "a")[0] == ("127.0.0.1:7001", True)
    changes = changes.without_replica("m/a", "127.0.0.1:7001")
    assert _replicas(apply_changes(BASE, changes), "a") == [("127.0.0.1:7003", False)]
    # Registering it again brings it back, not draining.
    changes = changes.with_replica("m/a", "127.0.0.1:7001")
    assert ("127.0.0.1:7001", False) in _replicas(apply_changes(BASE, changes), "a")


def test_weights_and_policy_apply() -> None:
    policy = ConcurrencyBandsConfig(low_load_group="a", high_load_group="b")
    changes = FleetChanges().with_weight("m/a", 7).with_balancer("m", policy)
    desired = apply_changes(BASE, changes)
    model = desired.model("m")
    assert model is not None
    assert model.balancer == policy
    assert [g.weight for g in model.groups] == [7, 1]


def test_changes_survive_a_round_trip_through_json() -> None:
    policy = ConcurrencyBandsConfig(low_load_group="a", high_load_group="b")
    changes = FleetChanges().with_replica("m/b", "127.0.0.1:7009").with_balancer("m", policy)
    assert FleetChanges.model_validate_json(changes.model_dump_json()) == changes


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (FleetChanges().without_replica("m/a", "127.0.0.1:7001"), "replicas"),
        (FleetChanges().with_weight("m/a", 0).with_weight("m/b", 0), "groups"),
        (FleetChanges().with_replica("m/b", "127.0.0.1:7001"), "replicas"),
        (
            FleetChanges().with_balancer(
                "m", ConcurrencyBandsConfig(low_load_group="a", high_load_group="zz")
            ),
            "high_load_group",
        ),
    ],
)
def test_invalid_changes_are_refused_naming_the_field(changes: FleetChanges, field: str) -> None:
    with pytest.raises(FleetChangeError, match=field):
        apply_changes(BASE, changes)
