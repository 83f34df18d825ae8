"""1,000 streams, each left by its client at a random point (right after the headers, or
after a random number of events, or read to the end), 64 at a time: the engines stop
generating (none still running), every request is settled exactly once (the ledger's
tokens equal the token windows' and what the engines counted, nothing left reserved), and
no process keeps more tasks or file descriptors than it had before the storm.
Every completion token the engines generated is billed, those a left stream's handler
had not yet taken included (printed: billed and generated).

The seed is printed (FRUGAL_STORM_SEED replays one); so are the descriptor and task counts
of every process, before and after. About a minute on 2 cores."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from frugal.redis_connection import CONTROL_PLANE_CLIENT, SAFETY_FILTER_CLIENT
from frugal.wire import engine_metrics_port
from safety_filter.server import OTHER_CONNECTIONS
from tests.helpers.process_probe import metric_sum, open_fds, stack_pids
from tests.helpers.stack import (
    FAST,
    STACK_MARKS,
    FrugalStack,
    replicas,
    running_stack,
    stack_config,
)
from tests.helpers.steady_load import eventually
from tests.helpers.usage_ledger import TokenWindows, create_key, token_windows, usage_rows

pytestmark = [*STACK_MARKS, pytest.mark.long]

MODEL = "sim-storm"
STREAMS = 1000
WARM_UP = 200
CONCURRENCY = 64
TOKENS = 40
# ~5 ms a token: a stream lasts long enough to be left part-way, short enough for 1,000.
PROFILE = {**FAST, "a_ms": 5.0, "output_tokens_min": TOKENS, "output_tokens_max": TOKENS}
# What a process may hold above its count before the storm and still count as not leaking:
# pooled connections and their timers come and go by a few; a leak of one per stream of
# 1,000 would be hundreds.
FD_SLACK = 8
TASK_SLACK = 4


@pytest.fixture(scope="module")
async def storm_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [{"name": MODEL, "groups": [
        {"name": "pair", "profile": "storm", "replicas": replicas(2)}]}]  # fmt: skip
    data = stack_config(models, {"storm": PROFILE}, access_log={"enabled": False})
    async with running_stack(Path(tmp_path_factory.mktemp("storm")), data) as running:
        yield running


def _engine_ports(stack: FrugalStack) -> list[int]:
    return [engine_metrics_port(e.port) for g in stack.config.models[0].groups for e in g.replicas]


def _service_metric_ports(stack: FrugalStack) -> dict[str, int]:
    """Each Python service's /metrics port, by the supervisor's child name."""
    ports = {
        "control_plane": stack.config.control_plane.metrics_port,
        "safety_filter": stack.config.safety_filter.metrics_port,
    }
    names = sorted(n for n in stack.supervisor.children if n.startswith("engine:"))
    return {**ports, **dict(zip(names, _engine_ports(stack), strict=True))}


@dataclass(frozen=True)
class Holdings:
    fds: dict[str, int]
    tasks: dict[str, float]
    # Redis connections open, by the child that holds them ("redis": all of them).
    redis_connections: dict[str, int]

    def unexplained_fds(self, before: Holdings) -> dict[str, int]:
        """Descriptors each process gained that its Redis pool's growth does not explain
        (a bounded pool may open connections under a storm it did not need before)."""
        return {
            name: count - before.fds[name]
            - (self.redis_connections.get(name, 0) - before.redis_connections.get(name, 0))
            for name, count in self.fds.items()
        }  # fmt: skip


async def _redis_connections(stack: FrugalStack) -> dict[str, int]:
    redis = Redis.from_url(stack.config.redis.url)
    try:
        clients = await redis.client_list()
    finally:
        await redis.aclose()
    names = {SAFETY_FILTER_CLIENT: "safety_filter", CONTROL_PLANE_CLIENT: "control_plane"}
    found = {"redis": len(clients) - 1}  # less this one
    for client in clients:
        if (child := names.get(client.get("name", ""))) is not None:
            found[child] = found.get(child, 0) + 1
    return found


async def _holdings(stack: FrugalStack) -> Holdings:
    pids = stack_pids(stack)
    tasks = {
        name: await metric_sum(port, "frugal_asyncio_tasks")
        for name, port in _service_metric_ports(stack).items()
    }
    fds = {name: open_fds(pid) for name, pid in pids.items()}
    return Holdings(fds, tasks, await _redis_connections(stack))


async def _engines(stack: FrugalStack, name: str) -> float:
    return sum([await metric_sum(port, name) for port in _engine_ports(stack)])


async def _one_stream(client: httpx.AsyncClient, leave_after: int | None) -> str:
    """A stream left after `leave_after` lines (None: read to the end); how it went."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return f"status {response.status_code}"
        if leave_after == 0:
            return "left"
        lines = 0
        async for line in response.aiter_lines():
            lines += bool(line)
            if leave_after is not None and lines >= leave_after:
                return "left"  # leaving the block closes the connection mid-stream
    return "read"


async def _storm(stack: FrugalStack, key: str, rng: random.Random, streams: int) -> list[str]:
    # None: read to the end; 0: gone as the headers arrive; else after that many lines.
    cuts = [None if rng.random() < 0.1 else rng.randint(0, TOKENS + 2) for _ in range(streams)]
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=headers, timeout=60, limits=limits
    ) as client:

        async def run(leave_after: int | None) -> str:
            async with gate:
                return await _one_stream(client, leave_after)

        return await asyncio.gather(*(run(cut) for cut in cuts))


async def test_a_storm_of_disconnects_leaves_nothing_behind(storm_stack: FrugalStack) -> None:
    stack = storm_stack
    seed = int(os.environ.get("FRUGAL_STORM_SEED", time.time_ns() % 1_000_000))
    print(f"\ndisconnect storm seed {seed} (FRUGAL_STORM_SEED={seed} replays it)")
    key, key_id = await create_key(stack, tpm=10**9)
    # A smaller storm first grows every pool to its working size (Envoy's upstream
    # connections, the safety filter's Redis connections for the background settles, gRPC
    # channels): a pool is bounded and stays, a leak grows with the number of streams.
    rng = random.Random(seed)
    assert set(await _storm(stack, key, rng, WARM_UP)) <= {"left", "read"}
    await _until_settled(stack, key_id, WARM_UP)
    before = await _holdings(stack)
    prompt_before = await _engines(stack, "frugal_engine_prompt_tokens_total")
    generated_before = await _engines(stack, "frugal_engine_generation_tokens_total")
    [ledger_before] = await usage_rows(stack, key_id)

    started = time.monotonic()
    outcomes = await _storm(stack, key, rng, STREAMS)
    print(f"{STREAMS} streams in {time.monotonic() - started:.1f} s: "
          f"{outcomes.count('left')} left, {outcomes.count('read')} read to the end")  # fmt: skip
    assert set(outcomes) <= {"left", "read"}, sorted(set(outcomes))

    async def engines_idle() -> bool:
        return await _engines(stack, "frugal_engine_num_requests_running") == 0

    assert await eventually(engines_idle, 30), "an engine is still generating"
    [ledger] = await _until_settled(stack, key_id, WARM_UP + STREAMS)
    assert await token_windows(stack, key_id) == TokenWindows(ledger["total_tokens"], 0)
    prompt = await _engines(stack, "frugal_engine_prompt_tokens_total") - prompt_before
    generated = await _engines(stack, "frugal_engine_generation_tokens_total") - generated_before
    billed_prompt = ledger["prompt_tokens"] - ledger_before["prompt_tokens"]
    billed_completion = ledger["completion_tokens"] - ledger_before["completion_tokens"]
    print(f"tokens billed: prompt {billed_prompt}, completion {billed_completion}; "
          f"engines counted: prompt {prompt:.0f}, generated {generated:.0f}")  # fmt: skip
    assert billed_prompt == prompt
    # A stream's tokens are counted as the engine makes them (engine_workers/core.py):
    # those made but not yet handed over when its client left are billed too.
    assert billed_completion == generated

    after = await _holdings(stack)

    async def nothing_held() -> bool:
        nonlocal after
        after = await _holdings(stack)
        return all(gained <= FD_SLACK for gained in after.unexplained_fds(before).values()) and all(
            after.tasks[n] <= before.tasks[n] + TASK_SLACK for n in before.tasks
        )

    held = await eventually(nothing_held, 30)
    for name in sorted(before.fds):
        tasks = ""
        if name in before.tasks:
            tasks = f"; asyncio tasks {before.tasks[name]:.0f} -> {after.tasks[name]:.0f}"
        print(f"{name}: open fds {before.fds[name]} -> {after.fds[name]}{tasks}")
    print(f"Redis connections {before.redis_connections} -> {after.redis_connections}")
    assert held, f"held after the storm: {after} (before: {before})"
    # The safety filter's pool is bounded (safety_filter/server.py): what it may grow to.
    pool = stack.config.safety_filter.admitting + OTHER_CONNECTIONS
    assert after.redis_connections.get("safety_filter", 0) <= pool


async def _until_settled(stack: FrugalStack, key_id: str, requests: int) -> list[dict[str, Any]]:
    async def settled() -> bool:
        return sum(int(r["requests"]) for r in await usage_rows(stack, key_id)) >= requests

    assert await eventually(settled, 60), await usage_rows(stack, key_id)
    rows = await usage_rows(stack, key_id)
    assert sum(r["requests"] for r in rows) == requests, rows
    return rows
