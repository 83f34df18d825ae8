"""The per-request group picker through the real chain: the control plane publishes the
lines `adaptive` learned to Redis, the safety filter reads them, picks each request's group
and sets `x-frugal-group`, and Envoy's route for that group sends it there. Its count of
what it sent each group returns to zero however the requests end.

Two groups whose costs cross: `steep` (one replica, the faster step alone, but 2 ms more
per request running) and `flat` (two replicas, slower alone, nearly flat). A lone request
is picked to `steep`; a dozen at once fill it and the picker sends the rest to `flat`.
Two safety filter processes share the requests, as `frugal up`'s default config runs them:
each counts the other through Redis and scales its own counts by two.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.process_probe import metric_sum
from tests.helpers.stack import (
    FAST,
    STACK_MARKS,
    FrugalStack,
    consecutive_free_ports,
    replicas,
    running_stack,
    stack_config,
)

pytestmark = [*STACK_MARKS, pytest.mark.timeout(180)]

MODEL = "sim-picked"
# Outputs long enough that max_tokens decides each request's length.
OUTPUT = {"output_tokens_min": 4096, "output_tokens_max": 4096}
PROFILES = {
    "steep": {**FAST, "a_ms": 4.0, "b_ms": 2.0, **OUTPUT},
    "flat": {**FAST, "a_ms": 10.0, "b_ms": 0.1, **OUTPUT},
}
GROUPS = ("steep", "flat")
LINES_WAIT_S = 30.0
AT_ONCE, ROUNDS = 12, 10
PROCESSES = 2


@pytest.fixture(scope="module")
async def picked_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [
        {"name": MODEL, "balancer": {"type": "adaptive", "group_picker": {}}, "groups": [
            {"name": "steep", "profile": "steep", "weight": 50, "replicas": replicas(1)},
            {"name": "flat", "profile": "flat", "weight": 50, "replicas": replicas(2)}]},
    ]  # fmt: skip
    safety = {
        "port": consecutive_free_ports(PROCESSES),
        "metrics_port": consecutive_free_ports(PROCESSES),
        "processes": PROCESSES,
    }
    config = stack_config(models, PROFILES, safety_filter=safety)
    async with running_stack(Path(tmp_path_factory.mktemp("picked")), config) as stack:
        await _until_picked(stack)
        yield stack


def _client(stack: FrugalStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=30)


async def _ask(client: httpx.AsyncClient, content: str = "Hi") -> None:
    body = {"model": MODEL, "max_tokens": 24, "messages": [{"role": "user", "content": content}]}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text


def _metrics_ports(stack: FrugalStack) -> list[int]:
    first = stack.config.safety_filter.metrics_port
    return [first + index for index in range(PROCESSES)]


async def _picks(stack: FrugalStack) -> dict[str, int]:
    """The safety filter processes' picks so far, by group."""
    pattern = rf'^frugal_group_picks_total{{group="(\w+)",model_name="{MODEL}"}} (\S+)$'
    picks = dict.fromkeys(GROUPS, 0)
    async with httpx.AsyncClient(timeout=5) as client:
        for port in _metrics_ports(stack):
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for group, n in re.findall(pattern, text, re.MULTILINE):
                picks[group] += int(float(n))
    return picks


async def _upstream(stack: FrugalStack) -> dict[str, int]:
    """Envoy's requests sent to each group's cluster so far."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(stack.envoy_admin + "/stats")).text
    pattern = rf"^cluster\.engine__{MODEL}__(\w+)\.upstream_rq_total: (\d+)$"
    found = {group: int(n) for group, n in re.findall(pattern, text, re.MULTILINE)}
    return {group: found.get(group, 0) for group in GROUPS}


async def _in_flight(stack: FrugalStack) -> float:
    counts = [
        await metric_sum(port, "frugal_group_picker_in_flight") for port in _metrics_ports(stack)
    ]
    return sum(counts)


async def _until_picked(stack: FrugalStack) -> None:
    """Until the processor has lines (the control plane's first ticks after the engines'
    warm-up measured both groups) and picks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINES_WAIT_S
    async with _client(stack) as client:
        while sum((await _picks(stack)).values()) == 0:
            assert loop.time() < deadline, "the safety filter never picked a group"
            await _ask(client)
            await asyncio.sleep(0.2)


def _since(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {group: after[group] - before[group] for group in GROUPS}


async def test_each_process_counts_the_processes_that_share_the_requests(
    picked_stack: FrugalStack,
) -> None:
    views = [
        await metric_sum(port, "frugal_group_picker_views") for port in _metrics_ports(picked_stack)
    ]
    assert views == [PROCESSES] * PROCESSES


async def test_a_lone_request_is_picked_to_the_faster_group_and_sent_there(
    picked_stack: FrugalStack,
) -> None:
    picks, upstream = await _picks(picked_stack), await _upstream(picked_stack)
    async with _client(picked_stack) as client:
        for _ in range(6):
            await _ask(client)
    assert _since(await _picks(picked_stack), picks) == {"steep": 6, "flat": 0}
    assert _since(await _upstream(picked_stack), upstream) == {"steep": 6, "flat": 0}
    assert await _in_flight(picked_stack) == 0


async def test_requests_at_once_spread_as_picked_and_leave_no_count(
    picked_stack: FrugalStack,
) -> None:
    # The engines' warm-up gives each group a level, not a slope: `steep`'s is learned
    # from the batches the first rounds run on it, and then the picker sends the excess
    # to `flat`. Every round, each request goes where it was picked.
    rounds = []
    async with _client(picked_stack) as client:
        for _ in range(ROUNDS):
            picks, upstream = await _picks(picked_stack), await _upstream(picked_stack)
            await asyncio.gather(*(_ask(client, f"question {n}") for n in range(AT_ONCE)))
            picked = _since(await _picks(picked_stack), picks)
            rounds.append(picked)
            assert sum(picked.values()) == AT_ONCE, rounds
            assert _since(await _upstream(picked_stack), upstream) == picked, rounds
            assert await _in_flight(picked_stack) == 0
            if picked["flat"] > 0 and picked["steep"] > 0:
                return
    pytest.fail(f"no round spread over both groups: {rounds}")


async def test_a_client_that_leaves_mid_stream_leaves_no_count(picked_stack: FrugalStack) -> None:
    body = {"model": MODEL, "stream": True, "max_tokens": 4000,
            "messages": [{"role": "user", "content": "a long answer"}]}  # fmt: skip
    async with _client(picked_stack) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            # Held, not left by `break`: a dropped iterator is closed when the event loop
            # finalizes it, which closes the response, and the client would leave early.
            lines = response.aiter_lines()
            await anext(lines)  # the first event came
            assert await _in_flight(picked_stack) == 1  # 4,000 tokens: seconds to go
        # left mid-stream
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await _in_flight(picked_stack) != 0:
        assert loop.time() < deadline, "the picker still counts a stream its client left"
        await asyncio.sleep(0.1)
