"""A replica that joins a group takes requests as soon as Envoy's admin lists it healthy,
through the real Envoy: a worker that already serves is registered through the admin REST,
and a burst sent the moment `/clusters` shows it healthy reaches both replicas.

This is a scale-up as an operator sees it (and as the compose test's `--scale` does, where
DNS finds a container that already serves). The new host joins Envoy's cluster unhealthy and
passes its first health check within milliseconds; with Envoy's default `update_merge_window`
(1 s) that health change would reach the worker threads' balancers up to a second after the
admin shows it, and a burst in that second would miss the new replica. The clusters set the
window to 0 (control_plane/translate/clusters.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from control_plane.model import engine_cluster_name
from frugal.cli.stack import ChildSpec, engine_worker_specs
from frugal.wire import engine_metrics_port
from tests.helpers.process_probe import metric_sum
from tests.helpers.stack import (
    FAST,
    STACK_MARKS,
    FrugalStack,
    free_port,
    replicas,
    running_stack,
    stack_config,
)
from tests.helpers.steady_load import eventually, seconds_until

pytestmark = STACK_MARKS

MODEL, GROUP = "sim-join", "join"
CLUSTER = engine_cluster_name(MODEL, GROUP)
BURST = 30
PROMPT_TOKENS = "frugal_engine_prompt_tokens_total"


@pytest.fixture(scope="module")
async def join_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [
        {"name": MODEL, "groups": [{"name": GROUP, "profile": "fast", "replicas": replicas(1)}]}
    ]
    directory = Path(tmp_path_factory.mktemp("join"))
    async with running_stack(directory, stack_config(models, {"fast": FAST})) as stack:
        yield stack


async def _healthy_in_envoy(stack: FrugalStack) -> set[int]:
    """The ports of the group's replicas that Envoy's admin lists healthy."""
    async with httpx.AsyncClient(base_url=stack.envoy_admin, timeout=5) as admin:
        text = (await admin.get("/clusters")).text
    pattern = rf"^{CLUSTER}::[^:]+:(\d+)::health_flags::healthy$"
    return {int(port) for port in re.findall(pattern, text, re.MULTILINE)}


async def _serving(metrics_port: int) -> bool:
    try:
        await metric_sum(metrics_port, PROMPT_TOKENS)
    except httpx.ConnectError:
        return False
    return True


async def test_a_joining_replica_gets_the_next_burst(join_stack: FrugalStack) -> None:
    (template,) = engine_worker_specs(join_stack.config)
    first = int(template.env["FRUGAL_ENGINE_PORT"])
    port = free_port(with_metrics=True)
    env = {**template.env, "FRUGAL_ENGINE_PORT": str(port),
           "FRUGAL_ENGINE_METRICS_PORT": str(engine_metrics_port(port))}  # fmt: skip
    await join_stack.supervisor.start(ChildSpec("engine:joining", template.argv, env))
    assert await eventually(lambda: _serving(engine_metrics_port(port)), 30)

    async with httpx.AsyncClient(
        base_url=join_stack.admin_url, headers=join_stack.admin_headers, timeout=10
    ) as admin:
        path = f"/admin/v1/models/{MODEL}/groups/{GROUP}/replicas"
        registered = await admin.post(path, json={"address": f"127.0.0.1:{port}"})
    assert registered.status_code == 201, registered.text

    async def both_healthy() -> bool:
        return await _healthy_in_envoy(join_stack) == {first, port}

    assert await seconds_until(both_healthy, 30) is not None, await _healthy_in_envoy(join_stack)
    metrics = [engine_metrics_port(first), engine_metrics_port(port)]
    before = [await metric_sum(m, PROMPT_TOKENS) for m in metrics]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 4}
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(
        base_url=join_stack.base_url, headers=join_stack.auth, timeout=30, limits=limits
    ) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(BURST))
        )
    assert [a.status_code for a in answers] == [200] * BURST, [a.text for a in answers]
    after = [await metric_sum(m, PROMPT_TOKENS) for m in metrics]
    prompts = {"first": after[0] - before[0], "joining": after[1] - before[1]}
    assert all(tokens > 0 for tokens in prompts.values()), prompts
