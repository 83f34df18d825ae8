"""Prefix-aware routing through the real chain: the request processor names the prompt's
prefix (`x-frugal-prefix`), Envoy hashes on it with Maglev inside the group and takes it
as the weighted clusters' random value, and the sim engines' prefix caches find the
repeated prefix. Two groups of two replicas, so both the group and the host are chosen
by the hash. A prompt shorter than a block has no key and goes to the groups'
least-request clusters instead."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from control_plane.load_sampler import LoadSampler
from control_plane.model import engine_cluster_name
from frugal.prefix_key import BLOCK_CHARS
from frugal.wire import engine_metrics_port
from tests.helpers.process_probe import metric_sum
from tests.helpers.replica_spread import finished_by_replica, until_every_replica_serves
from tests.helpers.stack import FAST, STACK_MARKS, FrugalStack, replicas, stack_config

pytestmark = [*STACK_MARKS, pytest.mark.timeout(180)]

MODEL = "sim-prefix"
CACHED = {**FAST, "output_tokens_min": 4, "output_tokens_max": 4, "prefix_block_tokens": 16}


@pytest.fixture(scope="module")
async def prefix_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [
        {"name": MODEL, "prefix_routing": {}, "groups": [
            {"name": "left", "profile": "cached", "weight": 50, "replicas": replicas(2)},
            {"name": "right", "profile": "cached", "weight": 50, "replicas": replicas(2)}]},
    ]  # fmt: skip
    config = stack_config(models, {"cached": CACHED})
    running = FrugalStack(Path(tmp_path_factory.mktemp("prefix")), config)
    try:
        await running.start()
        # Through the keyed (Maglev) clusters: distinct prefixes longer than the key's blocks.
        await until_every_replica_serves(running, MODEL, lambda n: _conversation(1000 + n))
        yield running
    finally:
        await running.stop()


def _addresses(stack: FrugalStack) -> list[str]:
    (model,) = [m for m in stack.config.models if m.name == MODEL]
    return [str(e) for g in model.groups for e in g.replicas]


def _conversation(topic: int) -> str:
    """A prompt longer than the key's blocks, different from the first character on."""
    return f"conversation {topic}: " + " ".join(f"w{topic}-{i}" for i in range(BLOCK_CHARS))


def _client(stack: FrugalStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=30)


async def _ask(client: httpx.AsyncClient, content: str) -> None:
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text


async def test_a_repeated_prefix_goes_to_one_replica_and_hits_its_cache(
    prefix_stack: FrugalStack,
) -> None:
    async with _client(prefix_stack) as client:
        before = await finished_by_replica(prefix_stack, MODEL)
        for turn in range(6):  # one at a time: the load bound never moves them
            await _ask(client, _conversation(7) + f" turn {turn}")
        after = await finished_by_replica(prefix_stack, MODEL)
    served = {a: after[a] - before[a] for a in after}
    assert sorted(served.values()) == [0, 0, 0, 6], served
    (home,) = [a for a, n in served.items() if n]
    port = engine_metrics_port(int(home.rsplit(":", 1)[1]))
    assert await metric_sum(port, "frugal_engine_prefix_cache_hit_tokens_total") > 0


async def test_different_prefixes_spread_over_the_groups(prefix_stack: FrugalStack) -> None:
    async with _client(prefix_stack) as client:
        before = await finished_by_replica(prefix_stack, MODEL)
        for topic in range(100, 124):
            await _ask(client, _conversation(topic))
        after = await finished_by_replica(prefix_stack, MODEL)
    served = [after[a] - before[a] for a in _addresses(prefix_stack)]
    assert sum(served) == 24
    assert sum(served[:2]) > 0 and sum(served[2:]) > 0, served  # both groups
    assert sum(1 for n in served if n) >= 3, served


async def _upstream_requests(stack: FrugalStack) -> dict[str, int]:
    """Envoy's requests sent, by cluster, for the model's clusters."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(stack.envoy_admin + "/stats")).text
    pattern = r"^cluster\.(engine(?:_unkeyed)?__sim-prefix__\w+)\.upstream_rq_total: (\d+)$"
    return {name: int(n) for name, n in re.findall(pattern, text, re.MULTILINE)}


async def test_a_short_prompt_goes_to_the_least_request_clusters(
    prefix_stack: FrugalStack,
) -> None:
    async with _client(prefix_stack) as client:
        before = await _upstream_requests(prefix_stack)
        for n in range(12):
            await _ask(client, f"short question {n}")
        await _ask(client, _conversation(200))
        after = await _upstream_requests(prefix_stack)
    sent = {name: after[name] - before.get(name, 0) for name in after}
    unkeyed = sum(n for name, n in sent.items() if name.startswith("engine_unkeyed__"))
    keyed = sum(n for name, n in sent.items() if name.startswith("engine__"))
    assert (unkeyed, keyed) == (12, 1), sent


async def test_the_control_plane_reads_a_groups_two_clusters_as_one(
    prefix_stack: FrugalStack,
) -> None:
    sampler = LoadSampler([prefix_stack.envoy_admin])
    try:
        in_flight = await sampler.in_flight()
        hosts = await sampler.hosts()
    finally:
        await sampler.close()
    groups = {engine_cluster_name(MODEL, "left"), engine_cluster_name(MODEL, "right")}
    assert groups <= set(in_flight) and not any("unkeyed" in name for name in in_flight)
    assert groups <= set(hosts) and not any("unkeyed" in name for name in hosts)
    left = hosts[engine_cluster_name(MODEL, "left")]
    assert len(left) == 2 and all(state.healthy for state in left.values()), left
