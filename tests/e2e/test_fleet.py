"""Replica lifecycle through the admin REST, against the real Envoy: list, register, weights,
policy, drain under load, and the control plane going away for a while under load."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frugal.cli.__main__ import main as cli_main
from frugal.cli.stack import ChildSpec, engine_worker_specs
from frugal.wire import engine_metrics_port
from tests.helpers.stack import FAST, FrugalStack, free_port, replicas, stack_config
from tests.helpers.steady_load import eventually, steady_load, stream_ok

MODEL = "sim-fleet"
STREAMING = {**FAST, "a_ms": 10.0, "output_tokens_min": 40, "output_tokens_max": 40}
# The control plane outage under load (issue 4: 60 s); shorter only when told.
OUTAGE_S = float(os.environ.get("FRUGAL_TEST_CONTROL_PLANE_OUTAGE_S", "60"))


@pytest.fixture(scope="module")
async def fleet_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [{"name": MODEL, "groups": [
        {"name": "a", "profile": "streaming", "weight": 1, "replicas": replicas(2)},
        {"name": "b", "profile": "streaming", "weight": 1, "replicas": replicas(1)},
    ]}]  # fmt: skip
    running = FrugalStack(
        Path(tmp_path_factory.mktemp("fleet")), stack_config(models, {"streaming": STREAMING})
    )
    try:
        await running.start()
        # The load here outruns the demo key's 600 requests a minute: use an unlimited key.
        async with _admin(running) as admin:
            created = await admin.post("/admin/v1/keys", json={"name": "load", "tenant": "t"})
        running.api_key = created.json()["key"]
        yield running
    finally:
        await running.stop()


def _admin(stack: FrugalStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers, timeout=10)


async def _group(stack: FrugalStack, name: str) -> dict[str, Any]:
    async with _admin(stack) as admin:
        models = (await admin.get("/admin/v1/models")).json()["data"]
    model = next(m for m in models if m["name"] == MODEL)
    group: dict[str, Any] = next(g for g in model["groups"] if g["name"] == name)
    return group


async def test_the_fleet_is_listed_with_health(fleet_stack: FrugalStack) -> None:
    async def all_healthy() -> bool:
        group = await _group(fleet_stack, "a")
        return len(group["replicas"]) == 2 and all(r["healthy"] for r in group["replicas"])

    assert await eventually(all_healthy, 5)


async def test_invalid_changes_are_refused_naming_the_field(fleet_stack: FrugalStack) -> None:
    async with _admin(fleet_stack) as admin:
        base = f"/admin/v1/models/{MODEL}/groups"
        bad = await admin.post(f"{base}/a/replicas", json={"address": "no-port"})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "address"
        assert (await admin.post(f"{base}/zz/replicas", json={"address": "h:1"})).status_code == 404
        weight = await admin.patch(f"{base}/a", json={"weight": -1})
        assert weight.status_code == 422 and weight.json()["error"]["param"] == "weight"
        policy = {"type": "concurrency_bands", "low_load_group": "a", "high_load_group": "nope"}
        refused = await admin.put(f"/admin/v1/models/{MODEL}/balancer", json=policy)
        assert refused.status_code == 422
        assert "high_load_group" in refused.json()["error"]["message"]
        last = (await _group(fleet_stack, "b"))["replicas"][0]["address"]
        only_one = await admin.delete(f"{base}/b/replicas/{last}")
        assert only_one.status_code == 422  # a group keeps at least one replica


async def test_a_registered_replica_gets_traffic(fleet_stack: FrugalStack) -> None:
    port = free_port(with_metrics=True)
    address = f"127.0.0.1:{port}"
    template = engine_worker_specs(fleet_stack.config)[0]
    env = {**template.env, "FRUGAL_ENGINE_PORT": str(port),
           "FRUGAL_ENGINE_METRICS_PORT": str(engine_metrics_port(port))}  # fmt: skip
    await fleet_stack.supervisor.start(ChildSpec("engine:extra", template.argv, env))
    groups = f"/admin/v1/models/{MODEL}/groups"
    async with _admin(fleet_stack) as admin:
        response = await admin.post(f"{groups}/b/replicas", json={"address": address})
        assert response.status_code == 201, response.text
        # All traffic to group b, so the new replica's share is easy to see.
        assert (await admin.patch(f"{groups}/a", json={"weight": 0})).status_code == 200

    async def extra_generates() -> bool:
        async with httpx.AsyncClient(base_url=fleet_stack.base_url, headers=fleet_stack.auth) as c:
            await asyncio.gather(*(stream_ok(c, MODEL) for _ in range(4)))
        try:
            return await _tokens(engine_metrics_port(port)) > 0
        except httpx.ConnectError:  # the new worker's metrics endpoint is not up yet
            return False

    assert await eventually(extra_generates, 10)
    async with _admin(fleet_stack) as admin:
        assert (await admin.patch(f"{groups}/a", json={"weight": 1})).status_code == 200


async def _tokens(metrics_port: int) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    values = re.findall(r"^frugal_engine_generation_tokens_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(v) for v in values)


async def test_drain_under_load_fails_nothing(fleet_stack: FrugalStack) -> None:
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(fleet_stack, MODEL, stop, clients=8))
    try:
        await asyncio.sleep(1.0)
        victim = (await _group(fleet_stack, "a"))["replicas"][0]["address"]
        async with _admin(fleet_stack) as admin:
            path = f"/admin/v1/models/{MODEL}/groups/a/replicas/{victim}/drain"
            drained = await admin.post(path)
            assert drained.status_code == 202, drained.text

        async def removed() -> bool:
            group = await _group(fleet_stack, "a")
            return victim not in {r["address"] for r in group["replicas"]}

        assert await eventually(removed, 15)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        results = await load
    assert results and all(results), f"{results.count(False)} of {len(results)} failed"


async def test_envoy_serves_through_a_control_plane_outage(fleet_stack: FrugalStack) -> None:
    spec = fleet_stack.supervisor.children["control_plane"].spec
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(fleet_stack, MODEL, stop, clients=4))
    try:
        await fleet_stack.supervisor.kill("control_plane")
        await asyncio.sleep(OUTAGE_S)
        await fleet_stack.supervisor.start(spec)
        await _control_plane_is_back(fleet_stack)
    finally:
        stop.set()
        results = await load
    assert len(results) > 10 and all(results), f"{results.count(False)} of {len(results)} failed"
    # The fleet changes made before the restart were restored from Redis.
    assert len((await _group(fleet_stack, "b"))["replicas"]) == 2


async def _control_plane_is_back(fleet_stack: FrugalStack) -> None:

    async def back() -> bool:
        try:
            async with _admin(fleet_stack) as admin:
                return (await admin.get("/admin/v1/balancer")).status_code == 200
        except httpx.HTTPError:
            return False

    assert await eventually(back, 20)
    async with httpx.AsyncClient(base_url=fleet_stack.envoy_admin) as envoy:

        async def reconnected() -> bool:
            stats = (
                await envoy.get("/stats", params={"filter": "control_plane.connected_state"})
            ).text
            return "control_plane.connected_state: 1" in stats

        assert await eventually(reconnected, 20)


async def test_concurrency_bands_follow_the_load(fleet_stack: FrugalStack) -> None:
    """Below the threshold everything goes to group a, above it to group b; the weights,
    load and reasons are visible in the admin REST, the CLI and Prometheus."""
    policy = {"type": "concurrency_bands", "threshold": 4, "hysteresis": 1,
              "low_load_group": "a", "high_load_group": "b"}  # fmt: skip
    async with _admin(fleet_stack) as admin:
        response = await admin.put(f"/admin/v1/models/{MODEL}/balancer", json=policy)
        assert response.status_code == 200, response.text

    async def weights_are(expected: dict[str, int]) -> bool:
        async with _admin(fleet_stack) as admin:
            state = (await admin.get("/admin/v1/balancer")).json()["data"]
        weights: dict[str, int] = next(m for m in state if m["model"] == MODEL)["weights"]
        return weights == expected

    assert await eventually(lambda: weights_are({"a": 100, "b": 0}), 5)
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(fleet_stack, MODEL, stop, clients=12))
    try:
        assert await eventually(lambda: weights_are({"a": 0, "b": 100}), 10)
    finally:
        stop.set()
        results = await load
    assert all(results), f"{results.count(False)} of {len(results)} failed"
    assert await eventually(lambda: weights_are({"a": 100, "b": 0}), 10)
    port = fleet_stack.config.control_plane.metrics_port
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert f'frugal_balancer_weight{{group="a",model_name="{MODEL}"}} 100.0' in metrics
    listing = await asyncio.to_thread(
        cli_main, ["fleet", "balancer", "--admin-url", fleet_stack.admin_url,
                   "--admin-token", fleet_stack.files.admin_token.read_text().strip()]
    )  # fmt: skip
    assert listing == 0
    async with _admin(fleet_stack) as admin:
        static = await admin.put(f"/admin/v1/models/{MODEL}/balancer", json={"type": "static"})
        assert static.status_code == 200
