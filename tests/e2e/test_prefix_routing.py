"""Prefix-aware routing through the real chain: the request processor names the prompt's
prefix (`x-frugal-prefix`), Envoy hashes on it with Maglev inside the group and takes it
as the weighted clusters' random value, and the sim engines' prefix caches find the
repeated prefix. Two groups of two replicas, so both the group and the host are chosen
by the hash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from frugal.prefix_key import BLOCK_CHARS
from frugal.wire import engine_metrics_port
from tests.helpers.process_probe import metric_sum
from tests.helpers.stack import FAST, STACK_MARKS, FrugalStack, replicas, stack_config

pytestmark = [*STACK_MARKS, pytest.mark.timeout(180)]

MODEL = "sim-prefix"
CACHED = {**FAST, "output_tokens_min": 4, "output_tokens_max": 4, "prefix_block_tokens": 16}
REQUESTS = "frugal_engine_request_duration_seconds_count"


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
        yield running
    finally:
        await running.stop()


def _addresses(stack: FrugalStack) -> list[str]:
    (model,) = [m for m in stack.config.models if m.name == MODEL]
    return [str(e) for g in model.groups for e in g.replicas]


async def _served(stack: FrugalStack) -> dict[str, float]:
    """Requests each replica has finished so far."""
    return {
        address: await metric_sum(engine_metrics_port(int(address.rsplit(":", 1)[1])), REQUESTS)
        for address in _addresses(stack)
    }


def _conversation(topic: int) -> str:
    """A prompt longer than the key's blocks, different from the first character on."""
    return f"conversation {topic}: " + " ".join(f"w{topic}-{i}" for i in range(BLOCK_CHARS))


async def _ask(client: httpx.AsyncClient, content: str) -> None:
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text


async def test_a_repeated_prefix_goes_to_one_replica_and_hits_its_cache(
    prefix_stack: FrugalStack,
) -> None:
    async with httpx.AsyncClient(base_url=prefix_stack.base_url, headers=prefix_stack.auth,
                                 timeout=30) as client:  # fmt: skip
        before = await _served(prefix_stack)
        for turn in range(6):  # one at a time: the load bound never moves them
            await _ask(client, _conversation(7) + f" turn {turn}")
        after = await _served(prefix_stack)
    served = {a: after[a] - before[a] for a in after}
    assert sorted(served.values()) == [0, 0, 0, 6], served
    (home,) = [a for a, n in served.items() if n]
    port = engine_metrics_port(int(home.rsplit(":", 1)[1]))
    assert await metric_sum(port, "frugal_engine_prefix_cache_hit_tokens_total") > 0


async def test_different_prefixes_spread_over_the_groups(prefix_stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=prefix_stack.base_url, headers=prefix_stack.auth,
                                 timeout=30) as client:  # fmt: skip
        before = await _served(prefix_stack)
        for topic in range(100, 124):
            await _ask(client, _conversation(topic))
        after = await _served(prefix_stack)
    served = [after[a] - before[a] for a in _addresses(prefix_stack)]
    assert sum(served) == 24
    assert sum(served[:2]) > 0 and sum(served[2:]) > 0, served  # both groups
    assert sum(1 for n in served if n) >= 3, served
