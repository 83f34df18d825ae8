"""`GET /admin/v1/status`'s view, built from a real (not started) control plane and balancer
loop that has ticked once with no Envoy to read (and a real Redis for its fleet): weights,
replica counts, rates, totals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from control_plane.admin.status import gateway_status
from control_plane.balancer_loop import BalancerLoop
from control_plane.fleet import Fleet
from control_plane.load_sampler import HostState, LoadSampler
from control_plane.model import FrugalConfig, engine_cluster_name
from control_plane.server import ControlPlane
from control_plane.traffic_rates import RequestCounts
from tests.helpers.redis_server import RedisServer, _free_port

CONFIG = {
    "profiles": {"fast": {"a_ms": 1.0}},
    "models": [
        {"name": "banded", "balancer": {"type": "concurrency_bands", "threshold": 8,
                                        "low_load_group": "big", "high_load_group": "many"},
         "groups": [
             {"name": "big", "profile": "fast", "replicas": ["127.0.0.1:7101"]},
             {"name": "many", "profile": "fast", "weight": 3,
              "replicas": ["127.0.0.1:7102", "127.0.0.1:7103", {"port": 7104, "draining": True}]},
         ]},
        {"name": "plain", "groups": [
            {"name": "only", "profile": "fast", "weight": 5, "replicas": ["127.0.0.1:7105"]}]},
    ],
}  # fmt: skip
MANY = engine_cluster_name("banded", "many")
BIG = engine_cluster_name("banded", "big")


@pytest.fixture
async def balancer(redis_server: RedisServer) -> AsyncIterator[tuple[ControlPlane, BalancerLoop]]:
    config = FrugalConfig.model_validate(CONFIG)
    control_plane = ControlPlane(config)
    redis_server.flush()  # no fleet changes persisted by another test
    redis = aioredis.Redis.from_url(redis_server.url)
    sampler = LoadSampler([f"http://127.0.0.1:{_free_port()}"])  # an Envoy that is not there
    loop = BalancerLoop(control_plane, Fleet(config, redis, control_plane), sampler,
                        CollectorRegistry())  # fmt: skip
    await loop.tick()
    yield control_plane, loop
    await sampler.close()
    await redis.aclose()


def healthy(port: int, requests: int = 0, errors: int = 0) -> tuple[str, HostState]:
    return f"127.0.0.1:{port}", HostState(True, False, 0, requests, errors)


async def test_weights_replicas_and_no_rates_before_envoy_is_read(
    balancer: tuple[ControlPlane, BalancerLoop],
) -> None:
    control_plane, loop = balancer
    status = gateway_status(control_plane, loop, now=0.0)
    assert not status.envoy_connected and status.envoy_streams == 0
    assert status.config_generation >= 2  # the first snapshot, then the live weights
    assert status.stats_age_s is None and status.window_s == 10.0
    banded, plain = status.models
    assert (banded.name, banded.policy, plain.policy) == ("banded", "concurrency_bands", "static")
    big, many = banded.groups
    assert (big.weight, big.static_weight, many.weight, many.static_weight) == (100, 1, 0, 3)
    assert plain.groups[0].weight == 5
    # Envoy has not reported any host: none counts as healthy yet.
    assert (many.replicas_healthy, many.replicas_draining, many.replicas_total) == (0, 1, 3)
    assert many.requests_per_s is None and status.totals.requests_per_s is None
    assert (status.totals.models, status.totals.groups, status.totals.in_flight) == (2, 3, 0.0)


async def test_rates_add_up_from_groups_to_models_to_totals(
    balancer: tuple[ControlPlane, BalancerLoop],
) -> None:
    control_plane, loop = balancer
    loop.hosts = {MANY: dict([healthy(7102), healthy(7103)])}
    loop.traffic.observe(100.0, {"envoy": {MANY: {"a": RequestCounts(10, 0)},
                                           BIG: {"b": RequestCounts(0, 0)}}})  # fmt: skip
    loop.traffic.observe(102.0, {"envoy": {MANY: {"a": RequestCounts(30, 2)},
                                           BIG: {"b": RequestCounts(20, 0)}}})  # fmt: skip
    status = gateway_status(control_plane, loop, now=102.5)
    assert status.stats_age_s == pytest.approx(0.5)
    big, many = status.models[0].groups
    assert many.replicas_healthy == 2
    assert (many.requests_per_s, many.errors_per_s, many.error_share) == (10.0, 1.0, 0.1)
    assert (big.requests_per_s, big.errors_per_s, big.error_share) == (10.0, 0.0, 0.0)
    banded = status.models[0]
    assert (banded.requests_per_s, banded.errors_per_s) == (20.0, 1.0)
    assert banded.error_share == pytest.approx(0.05)
    only = status.models[1].groups[0]
    assert (only.requests_per_s, only.error_share) == (0.0, None)
    assert (status.totals.requests_per_s, status.totals.errors_per_s) == (20.0, 1.0)
