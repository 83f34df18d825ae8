"""The xDS server driving a real Envoy: initial config, an update, and a rejected update.

Runs once over state-of-the-world ADS and once over delta ADS. A missing Envoy binary fails
the run (tests/conftest.py's stack_binaries), never skips it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

from control_plane.xds import (
    ADS_SERVER_OPTIONS,
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    AdsServicer,
    Snapshot,
    SnapshotCache,
    add_ads_servicer,
)
from tests.helpers.envoy_process import EnvoyProcess, ads_bootstrap, free_port
from tests.helpers.xds_resources import (
    eds_cluster,
    http_listener,
    load_assignment,
    route_config,
    sample_snapshot,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_binaries")]

ALL_TYPES = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)


@dataclass
class EnvoyUnderXds:
    cache: SnapshotCache
    servicer: AdsServicer
    envoy: EnvoyProcess
    listener_port: int

    async def get(self) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            return await client.get(f"http://127.0.0.1:{self.listener_port}/")

    async def wait_for_body(self, body: str, timeout: float = 10.0) -> None:
        last = ""

        async def served() -> bool:
            nonlocal last
            try:
                response = await self.get()
            except httpx.TransportError as error:
                last = repr(error)
                return False
            last = f"{response.status_code} {response.text!r}"
            return response.status_code == 200 and response.text == body

        deadline = time.monotonic() + timeout
        while not await served():
            assert time.monotonic() < deadline, f"never served {body!r}; last: {last}"
            await asyncio.sleep(0.05)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[EnvoyUnderXds]:
    listener_port = free_port()
    cache = SnapshotCache(sample_snapshot(body="ok", listener_port=listener_port))
    server = grpc.aio.server(options=ADS_SERVER_OPTIONS)
    servicer = add_ads_servicer(server, cache)
    xds_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    envoy = EnvoyProcess()
    try:
        envoy.start(ads_bootstrap(f"frugal-test-{request.param}", xds_port, api_type=request.param))
        yield EnvoyUnderXds(cache, servicer, envoy, listener_port)
    finally:
        envoy.stop()
        print(f"---- Envoy log (pid {envoy.pid}) ----\n{envoy.log_text()[-30000:]}")
        await server.stop(0)


def _broken_update(listener_port: int) -> Snapshot:
    """Consistent for us, unacceptable to Envoy: a cluster with a negative connect timeout and
    a listener whose HTTP filter has a type Envoy does not know (pointing at a new route)."""
    bad_cluster = cluster_pb2.Cluster(
        name="broken",
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=-1),
    )
    unknown = hcm_pb2.HttpFilter(
        name="frugal.test.unknown",
        typed_config=any_pb2.Any(type_url="type.googleapis.com/frugal.test.DoesNotExist"),
    )
    return Snapshot.from_resources(
        listeners=[http_listener("public", listener_port, "public-v3", http_filters=[unknown])],
        routes=[route_config("public", body="v2"), route_config("public-v3", body="v3")],
        clusters=[eds_cluster("backend"), bad_cluster],
        endpoints=[load_assignment("backend", 9001)],
    )


async def test_envoy_follows_snapshots_and_keeps_the_last_good_one(env: EnvoyUnderXds) -> None:
    stats = env.servicer.stats
    await env.envoy.wait_ready(timeout=15)
    await eventually(lambda: all(stats.of(t).acks >= 1 for t in ALL_TYPES), "an ACK of each type")
    assert all(stats.of(t).nacks == 0 for t in ALL_TYPES)
    assert await env.envoy.stat("control_plane.connected_state") == 1
    await env.wait_for_body("ok")

    env.cache.set_snapshot(sample_snapshot(body="v2", listener_port=env.listener_port))
    await env.wait_for_body("v2")
    await eventually(lambda: stats.of(ROUTE_TYPE).acks >= 2, "an ACK of the new routes")

    env.cache.set_snapshot(_broken_update(env.listener_port))
    await eventually(
        lambda: stats.of(CLUSTER_TYPE).nacks >= 1 and stats.of(LISTENER_TYPE).nacks >= 1,
        "NACKs of the broken cluster and listener",
    )
    assert "duration" in (stats.of(CLUSTER_TYPE).last_nack_message or "")
    assert "DoesNotExist" in (stats.of(LISTENER_TYPE).last_nack_message or "")
    assert (await env.envoy.stat("cluster_manager.cds.update_rejected") or 0) >= 1
    assert (await env.envoy.stat("listener_manager.lds.update_rejected") or 0) >= 1
    await asyncio.sleep(0.3)
    response = await env.get()
    assert (response.status_code, response.text) == (200, "v2")
    # Nothing is resent after a NACK: the refused versions stay refused, no loop.
    nacks = (stats.of(CLUSTER_TYPE).nacks, stats.of(LISTENER_TYPE).nacks)
    await asyncio.sleep(0.3)
    assert (stats.of(CLUSTER_TYPE).nacks, stats.of(LISTENER_TYPE).nacks) == nacks
