"""The ADS server over a real grpc.aio channel, with the test playing Envoy's part."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from control_plane.xds import (
    ADS_SERVER_OPTIONS,
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    AdsServicer,
    InconsistentSnapshotError,
    Snapshot,
    SnapshotCache,
    add_ads_servicer,
)
from tests.helpers.xds_resources import eds_cluster, load_assignment, sample_snapshot

SILENCE_S = 0.3


class AdsClient:
    """One ADS stream, read by a background task so that silence can be asserted."""

    def __init__(self, channel: grpc.aio.Channel, *, delta: bool = False) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while (response := await self.call.read()) is not grpc.aio.EOF:
            self.responses.put_nowait(response)

    async def request(
        self,
        type_url: str,
        names: tuple[str, ...] = (),
        *,
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="test-node"),
            type_url=type_url,
            resource_names=names,
            response_nonce=nonce,
            version_info=version,
        )
        if error is not None:
            request.error_detail.code = 3  # INVALID_ARGUMENT, as Envoy reports a rejection
            request.error_detail.message = error
        await self.call.write(request)

    async def ack(self, response: Any, names: tuple[str, ...] = ()) -> None:
        await self.request(
            response.type_url, names, nonce=response.nonce, version=response.version_info
        )

    async def next(self, timeout: float = 2.0) -> Any:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def assert_silent(self, wait: float = SILENCE_S) -> None:
        await asyncio.sleep(wait)
        assert self.responses.empty(), f"unexpected response: {self.responses.get_nowait()}"

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class AdsEnv:
    def __init__(self, cache: SnapshotCache, servicer: AdsServicer, target: str) -> None:
        self.cache, self.servicer, self.target = cache, servicer, target
        self.channel = grpc.aio.insecure_channel(target)
        self.clients: list[AdsClient] = []

    def client(self, *, delta: bool = False) -> AdsClient:
        client = AdsClient(self.channel, delta=delta)
        self.clients.append(client)
        return client


@pytest.fixture
async def ads() -> AsyncIterator[AdsEnv]:
    cache = SnapshotCache(sample_snapshot())
    server = grpc.aio.server(options=ADS_SERVER_OPTIONS)
    servicer = add_ads_servicer(server, cache)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    env = AdsEnv(cache, servicer, f"127.0.0.1:{port}")
    yield env
    for client in env.clients:
        await client.close()
    await env.channel.close()
    await server.stop(0)


def unpacked(response: Any, message_type: type[Any]) -> dict[str, Any]:
    found = {}
    for any_ in response.resources:
        message = message_type()
        any_.Unpack(message)
        found[getattr(message, "cluster_name", None) or message.name] = message
    return found


async def test_initial_request_is_answered_and_ack_is_not(ads: AdsEnv) -> None:
    client = ads.client()
    await client.request(CLUSTER_TYPE)
    response = await client.next()
    assert response.type_url == CLUSTER_TYPE
    assert response.version_info == ads.cache.current.version(CLUSTER_TYPE)  # type: ignore[union-attr]
    assert response.nonce
    assert list(unpacked(response, type(eds_cluster("x")))) == ["backend"]
    await client.ack(response)
    await client.assert_silent()
    assert ads.servicer.stats.of(CLUSTER_TYPE).acks == 1
    assert ads.servicer.stats.of(CLUSTER_TYPE).last_acked_version == response.version_info


async def test_new_snapshot_pushes_only_changed_types(ads: AdsEnv) -> None:
    client = ads.client()
    await client.request(CLUSTER_TYPE)
    clusters = await client.next()
    await client.ack(clusters)
    await client.request(ENDPOINT_TYPE, ("backend",))
    endpoints = await client.next()
    await client.ack(endpoints, ("backend",))
    await client.assert_silent()

    ads.cache.set_snapshot(sample_snapshot(endpoint_ports=(9001, 9002)))
    pushed = await client.next()
    assert pushed.type_url == ENDPOINT_TYPE
    assert pushed.version_info != endpoints.version_info
    assert pushed.nonce not in (endpoints.nonce, clusters.nonce)
    lb_endpoints = unpacked(pushed, type(load_assignment("x")))["backend"].endpoints[0].lb_endpoints
    assert len(lb_endpoints) == 2
    await client.ack(pushed, ("backend",))
    await client.assert_silent()  # CDS did not change: nothing for it


async def test_nack_is_counted_and_not_answered(ads: AdsEnv) -> None:
    client = ads.client()
    await client.request(CLUSTER_TYPE)
    first = await client.next()
    await client.ack(first)
    await eventually(lambda: ads.servicer.stats.of(CLUSTER_TYPE).acks == 1)
    good = ads.cache.current
    changed = Snapshot.of(
        [eds_cluster("backend", connect_timeout_s=7), load_assignment("backend", 9001)]
    )
    ads.cache.set_snapshot(changed)
    second = await client.next()
    assert second.version_info != first.version_info
    await client.request(
        CLUSTER_TYPE, nonce=second.nonce, version=first.version_info, error="bad connect_timeout"
    )
    await client.assert_silent()
    stats = ads.servicer.stats.of(CLUSTER_TYPE)
    assert (stats.nacks, stats.acks) == (1, 1)
    assert stats.last_nack_message == "bad connect_timeout"
    assert stats.last_nack_version == second.version_info
    # The cache is untouched by a NACK; an inconsistent snapshot is refused and changes nothing.
    assert ads.cache.current is changed and good is not changed
    with pytest.raises(InconsistentSnapshotError):
        ads.cache.set_snapshot(Snapshot.from_resources(clusters=[eds_cluster("lonely")]))
    await client.assert_silent()
    assert ads.cache.current is changed


async def test_stale_nonce_is_ignored(ads: AdsEnv) -> None:
    client = ads.client()
    await client.request(CLUSTER_TYPE)
    first = await client.next()
    ads.cache.set_snapshot(
        Snapshot.of([eds_cluster("backend", connect_timeout_s=3), load_assignment("backend", 1)])
    )
    second = await client.next()
    # Envoy's ACK of the first response crosses our second one: stale, whatever it says.
    await client.ack(first, ("something-else",))
    await client.request(CLUSTER_TYPE, nonce=first.nonce, error="late complaint")
    await client.assert_silent()
    stats = ads.servicer.stats.of(CLUSTER_TYPE)
    assert (stats.stale_ignored, stats.acks, stats.nacks) == (2, 0, 0)
    await client.ack(second)
    await client.assert_silent()
    assert stats.acks == 1


async def test_eds_returns_only_the_names_asked_for(ads: AdsEnv) -> None:
    ads.cache.set_snapshot(Snapshot.of([load_assignment(name, 1) for name in ("a", "b", "c")]))
    client = ads.client()
    await client.request(ENDPOINT_TYPE, ("a", "missing"))
    first = await client.next()
    assert list(unpacked(first, type(load_assignment("x")))) == ["a"]
    await client.ack(first, ("a", "missing"))
    await client.assert_silent()
    # An ACK that changes the subscription is answered with the new set.
    await client.ack(first, ("a", "c"))
    second = await client.next()
    assert sorted(unpacked(second, type(load_assignment("x")))) == ["a", "c"]
    assert second.nonce != first.nonce


async def test_subscription_before_the_first_snapshot_is_answered_when_it_comes() -> None:
    cache = SnapshotCache()
    server = grpc.aio.server(options=ADS_SERVER_OPTIONS)
    add_ads_servicer(server, cache)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = AdsClient(channel)
        await client.request(CLUSTER_TYPE)
        await client.assert_silent()
        cache.set_snapshot(sample_snapshot())
        response = await client.next()
        assert response.version_info == sample_snapshot().version(CLUSTER_TYPE)
        await client.close()
    await server.stop(0)


async def test_reconnect_gets_the_current_state_at_once(ads: AdsEnv) -> None:
    first = ads.client()
    await first.request(CLUSTER_TYPE)
    old = await first.next()
    await first.close()
    ads.cache.set_snapshot(sample_snapshot(endpoint_ports=(9005,)))
    second = ads.client()
    # A reconnecting Envoy names the version it holds and no nonce.
    await second.request(ENDPOINT_TYPE, ("backend",), version="whatever-it-had")
    await second.request(CLUSTER_TYPE, version=old.version_info)
    endpoints, clusters = await second.next(), await second.next()
    assert endpoints.version_info == ads.cache.current.version(ENDPOINT_TYPE)  # type: ignore[union-attr]
    assert clusters.version_info == old.version_info


async def test_stream_of_a_departed_client_is_cleaned_up(ads: AdsEnv) -> None:
    clients = [ads.client() for _ in range(3)]
    for client in clients:
        await client.request(CLUSTER_TYPE)
        await client.next()
    assert ads.servicer.open_streams == 3
    assert ads.cache.waiting == 3
    await clients[0].close()  # cancels the RPC, as a vanished Envoy would
    await eventually(lambda: ads.servicer.open_streams == 2 and ads.cache.waiting == 2)
    await ads.channel.close()  # the whole connection goes away
    await eventually(lambda: ads.servicer.open_streams == 0 and ads.cache.waiting == 0)


async def test_delta_sends_changes_removals_and_resyncs_cheaply(ads: AdsEnv) -> None:
    ads.cache.set_snapshot(
        Snapshot.of([load_assignment("a", 1), load_assignment("b", 2), eds_cluster("a")])
    )
    client = ads.client(delta=True)
    await client.call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            node=base_pb2.Node(id="test-node"),
            type_url=ENDPOINT_TYPE,
            resource_names_subscribe=["a", "b"],
        )
    )
    first = await client.next()
    held = {resource.name: resource.version for resource in first.resources}
    assert sorted(held) == ["a", "b"]
    await client.call.write(
        discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT_TYPE, response_nonce=first.nonce)
    )
    await client.assert_silent()
    ads.cache.set_snapshot(Snapshot.of([load_assignment("a", 5), eds_cluster("a")]))
    second = await client.next()
    assert [resource.name for resource in second.resources] == ["a"]
    assert list(second.removed_resources) == ["b"]
    assert ads.servicer.stats.of(ENDPOINT_TYPE).acks == 1

    # Reconnect holding the current versions: an empty answer, nothing resent.
    current = {resource.name: resource.version for resource in second.resources}
    resync = ads.client(delta=True)
    await resync.call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=ENDPOINT_TYPE,
            resource_names_subscribe=["a"],
            initial_resource_versions=current,
        )
    )
    third = await resync.next()
    assert (len(third.resources), len(third.removed_resources)) == (0, 0)
    await resync.assert_silent()
