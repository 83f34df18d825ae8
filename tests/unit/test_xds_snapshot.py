"""Snapshot versions, consistency checks and the cache's refusal of inconsistent snapshots."""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from control_plane.xds import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    InconsistentSnapshotError,
    Snapshot,
    SnapshotCache,
)
from tests.helpers.xds_resources import (
    eds_cluster,
    http_listener,
    load_assignment,
    route_config,
    sample_snapshot,
)

ALL_TYPES = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)


def test_equal_content_gives_equal_versions() -> None:
    first, second = sample_snapshot(), sample_snapshot()
    assert first.versions() == second.versions()
    assert len(set(first.versions().values())) == 4


def test_resource_order_does_not_change_the_version() -> None:
    a, b = load_assignment("a", 1), load_assignment("b", 2)
    assert Snapshot.of([a, b]).version(ENDPOINT_TYPE) == Snapshot.of([b, a]).version(ENDPOINT_TYPE)


def test_a_change_moves_only_its_own_type_version() -> None:
    before = sample_snapshot(body="one")
    after = sample_snapshot(body="two")
    assert before.version(ROUTE_TYPE) != after.version(ROUTE_TYPE)
    for type_url in (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE):
        assert before.version(type_url) == after.version(type_url)
    moved = sample_snapshot(body="one", endpoint_ports=(9001, 9002))
    assert moved.version(ENDPOINT_TYPE) != before.version(ENDPOINT_TYPE)
    assert moved.version(ROUTE_TYPE) == before.version(ROUTE_TYPE)


def test_per_resource_versions_follow_content() -> None:
    before = Snapshot.of([load_assignment("a", 1), load_assignment("b", 2)])
    after = Snapshot.of([load_assignment("a", 1), load_assignment("b", 3)])
    old, new = (s.resources(ENDPOINT_TYPE).resource_versions for s in (before, after))
    assert old["a"] == new["a"]
    assert old["b"] != new["b"]


def test_snapshot_does_not_follow_later_changes_to_the_callers_message() -> None:
    cluster = eds_cluster("backend")
    snapshot = Snapshot.of([cluster, load_assignment("backend", 1)])
    version = snapshot.version(CLUSTER_TYPE)
    cluster.connect_timeout.seconds = 30
    assert snapshot.version(CLUSTER_TYPE) == version
    held = snapshot.items(CLUSTER_TYPE)["backend"]
    assert isinstance(held, cluster_pb2.Cluster)
    assert held.connect_timeout.seconds == 1


def test_absent_type_is_empty_with_a_stable_version() -> None:
    snapshot = Snapshot.of([load_assignment("a", 1)])
    assert dict(snapshot.items(LISTENER_TYPE)) == {}
    assert snapshot.version(LISTENER_TYPE) == Snapshot.of([]).version(LISTENER_TYPE)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Snapshot.of([load_assignment("a", 1), load_assignment("a", 2)])


def test_packed_filters_by_name_and_skips_unknown_names() -> None:
    snapshot = Snapshot.of([load_assignment("a", 1), load_assignment("b", 2)])
    packed = snapshot.resources(ENDPOINT_TYPE).packed(["b", "zzz"])
    assert [any_.type_url for any_ in packed] == [ENDPOINT_TYPE]
    assert len(snapshot.resources(ENDPOINT_TYPE).packed()) == 2


def test_sample_snapshot_is_consistent() -> None:
    sample_snapshot().consistent()


def test_route_to_a_missing_cluster_is_inconsistent() -> None:
    snapshot = Snapshot.from_resources(
        routes=[route_config("public", cluster="ghost")],
        listeners=[http_listener("public", 10000, "public")],
    )
    with pytest.raises(InconsistentSnapshotError, match="'ghost'") as caught:
        snapshot.consistent()
    assert caught.value.problems == ("route config 'public' routes to cluster 'ghost', not in CDS",)


def test_weighted_route_to_a_missing_cluster_is_inconsistent() -> None:
    snapshot = Snapshot.from_resources(
        routes=[route_config("public", weighted={"backend": 80, "canary": 20})],
        clusters=[eds_cluster("backend")],
        endpoints=[load_assignment("backend", 1)],
    )
    with pytest.raises(InconsistentSnapshotError, match="'canary'"):
        snapshot.consistent()


def test_eds_cluster_without_load_assignment_is_inconsistent() -> None:
    snapshot = Snapshot.from_resources(clusters=[eds_cluster("backend")])
    with pytest.raises(InconsistentSnapshotError, match="ClusterLoadAssignment 'backend'"):
        snapshot.consistent()


def test_eds_service_name_names_the_load_assignment() -> None:
    cluster = eds_cluster("backend", service_name="backend-eds")
    Snapshot.of([cluster, load_assignment("backend-eds", 1)]).consistent()
    with pytest.raises(InconsistentSnapshotError, match="'backend-eds'"):
        Snapshot.of([cluster, load_assignment("backend", 1)]).consistent()


def test_listener_naming_a_missing_route_config_is_inconsistent() -> None:
    snapshot = Snapshot.from_resources(listeners=[http_listener("public", 10000, "nowhere")])
    with pytest.raises(InconsistentSnapshotError, match="route config 'nowhere'"):
        snapshot.consistent()


def test_every_problem_is_reported_at_once() -> None:
    snapshot = Snapshot.from_resources(
        listeners=[http_listener("public", 10000, "nowhere")],
        routes=[route_config("other", cluster="ghost")],
        clusters=[eds_cluster("backend")],
    )
    with pytest.raises(InconsistentSnapshotError) as caught:
        snapshot.consistent()
    assert len(caught.value.problems) == 3


def test_cache_refuses_an_inconsistent_snapshot_and_keeps_the_previous() -> None:
    good = sample_snapshot()
    cache = SnapshotCache(good)
    bad = Snapshot.from_resources(clusters=[eds_cluster("backend")])
    with pytest.raises(InconsistentSnapshotError):
        cache.set_snapshot(bad)
    assert cache.current is good
    assert cache.generation == 1
    assert cache.rejected == 1
    assert cache.last_rejection is not None and "backend" in cache.last_rejection


async def test_cache_wakes_waiters_with_the_latest_snapshot() -> None:
    cache = SnapshotCache()
    waiter = asyncio.create_task(cache.next_snapshot(cache.generation))
    await asyncio.sleep(0)
    assert cache.waiting == 1
    newer = sample_snapshot(body="new")
    cache.set_snapshot(newer)
    generation, snapshot = await asyncio.wait_for(waiter, 1)
    assert (generation, snapshot) == (1, newer)
    assert cache.waiting == 0
    # A caller that is behind gets the current snapshot at once.
    assert await asyncio.wait_for(cache.next_snapshot(0), 1) == (1, newer)


async def test_cancelled_waiter_is_forgotten() -> None:
    cache = SnapshotCache()
    waiter = asyncio.create_task(cache.next_snapshot(0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert cache.waiting == 0
