"""The control plane's replica resolver with its real fleet, control plane and Redis.

The answers come from a stand-in for the system resolver (named so: this machine's resolver
cannot be told a changing answer), except in the test of `system_resolve` itself, which asks
the real one for `localhost`. Compose's `--scale` against the real DNS runs in the deploy
tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from redis.asyncio import Redis

from control_plane.dns_resolver import ReplicaResolver, system_resolve
from control_plane.fleet import Fleet
from control_plane.model import FrugalConfig
from control_plane.server import ControlPlane

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
CONFIG = FrugalConfig.model_validate(
    {
        "profiles": {"p": {"a_ms": 1.0}},
        "models": [
            {
                "name": "m",
                "groups": [
                    {"name": "a", "profile": "p", "replicas": ["10.0.0.1:7001"]},
                    {"name": "b", "profile": "p",
                     "discover": {"dns": "engine-b", "port": 50062, "interval_s": 0.05}},
                ],
            }
        ],
    }
)  # fmt: skip


class StandInResolver:
    """What `engine-b` resolves to, set by the test; an OSError when told to fail."""

    def __init__(self) -> None:
        self.answer: list[str] | OSError = socket.gaierror(socket.EAI_NONAME, "not known")
        self.asked = 0

    async def __call__(self, name: str, port: int) -> Iterable[str]:
        assert (name, port) == ("engine-b", 50062)
        self.asked += 1
        if isinstance(self.answer, OSError):
            raise self.answer
        return list(self.answer)


@pytest.fixture
async def control_plane() -> ControlPlane:
    """Made on the event loop: its grpc.aio server binds to the running loop."""
    return ControlPlane(CONFIG)


@pytest.fixture
def fleet(clean_redis: Redis, control_plane: ControlPlane) -> Fleet:
    return Fleet(CONFIG, clean_redis, control_plane)


@contextlib.asynccontextmanager
async def resolving(fleet: Fleet, resolve: StandInResolver) -> AsyncIterator[None]:
    task = asyncio.create_task(ReplicaResolver(fleet, resolve).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _group_b(fleet: Fleet) -> list[str]:
    model = fleet.desired.model("m")
    assert model is not None
    return [str(e) for e in model.groups[1].replicas]


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _served_endpoints(control_plane: ControlPlane) -> list[str]:
    """What the control plane serves Envoy for group b (its EDS resource)."""
    snapshot = control_plane.cache.current
    assert snapshot is not None
    assignment: Any = snapshot.items(EDS)["engine__m__b"]
    addresses = (e.endpoint.address.socket_address for e in assignment.endpoints[0].lb_endpoints)
    return [f"{a.address}:{a.port_value}" for a in addresses]


async def test_scaling_a_group_up_and_down_reaches_envoys_endpoints(
    fleet: Fleet, control_plane: ControlPlane
) -> None:
    resolve = StandInResolver()
    async with resolving(fleet, resolve):
        await _until(lambda: resolve.asked >= 1)
        assert _group_b(fleet) == []  # not resolvable yet: nothing found, nothing invented
        resolve.answer = ["10.0.0.2"]
        await _until(lambda: _group_b(fleet) == ["10.0.0.2:50062"])
        resolve.answer = ["10.0.0.3", "10.0.0.2"]
        await _until(lambda: _group_b(fleet) == ["10.0.0.2:50062", "10.0.0.3:50062"])
        assert _served_endpoints(control_plane) == ["10.0.0.2:50062", "10.0.0.3:50062"]
        resolve.answer = ["10.0.0.3"]
        await _until(lambda: _group_b(fleet) == ["10.0.0.3:50062"])
        assert _served_endpoints(control_plane) == ["10.0.0.3:50062"]


async def test_a_failed_lookup_keeps_the_last_answer(fleet: Fleet) -> None:
    resolve = StandInResolver()
    resolve.answer = ["10.0.0.2", "10.0.0.3"]
    async with resolving(fleet, resolve):
        await _until(lambda: len(_group_b(fleet)) == 2)
        resolve.answer = socket.gaierror(socket.EAI_AGAIN, "temporary failure")
        asked = resolve.asked
        await _until(lambda: resolve.asked >= asked + 3)
        assert _group_b(fleet) == ["10.0.0.2:50062", "10.0.0.3:50062"]


async def test_an_answer_that_takes_another_groups_replica_is_refused(
    clean_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    data = CONFIG.model_dump()
    data["models"][0]["groups"][0]["replicas"] = ["10.0.0.1:50062"]
    config = FrugalConfig.model_validate(data)
    fleet = Fleet(config, clean_redis, ControlPlane(config))
    resolve = StandInResolver()
    resolve.answer = ["10.0.0.1", "10.0.0.4"]
    async with resolving(fleet, resolve):
        await _until(lambda: resolve.asked >= 2)
    assert _group_b(fleet) == []
    assert "is already a replica of m/a" in caplog.text


async def test_the_system_resolver_answers_for_localhost() -> None:
    assert "127.0.0.1" in await system_resolve("localhost", 50062)


async def test_a_name_that_does_not_resolve_raises_an_os_error() -> None:
    with pytest.raises(OSError):
        await system_resolve("no-such-replica.invalid", 50062)
