"""SIGKILL of one replica under steady traffic: retries and ejection hide it from requests
that had not started; every stream in flight on it ends with an explicit failure, never a
clean end, and none is generated again elsewhere. SIGKILL of a whole replica group: the
balancer gives its weight to the model's other group within seconds.

When an upstream dies after the response has started, Envoy resets the downstream stream
(FilterManager::sendLocalReply cannot send a reply once headers are out), so no filter can add
an SSE event at that point: the client sees the chunked body cut short (no terminating chunk,
no `data: [DONE]`), which every HTTP client reports as an error. Engine errors that arrive as a
gRPC status do become an SSE error event (tests/e2e/test_http_errors.py).

The measured times (the restarted replica's first traffic, the group's traffic moved) are
printed and kept as test properties."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers.process_probe import metric_sum
from tests.helpers.replica_spread import until_every_replica_serves
from tests.helpers.stack import FAST, FrugalStack, replicas, stack_config
from tests.helpers.steady_load import SteadyLoad, eventually, seconds_until
from tests.helpers.usage_ledger import create_key

SLOW_STREAM = {**FAST, "a_ms": 15.0, "output_tokens_min": 300, "output_tokens_max": 300}
SHORT_STREAM = {**FAST, "a_ms": 5.0, "output_tokens_min": 20, "output_tokens_max": 20}
PROMPT = [{"role": "user", "content": "go"}]
STREAMS = 64
# "Within seconds" (issue 12): Envoy's health check (1 s interval, 1 failure) and the
# balancer's next decision; what a 2-core machine shared with other stacks may add on top.
GROUP_MOVE_BOUND_S = 5.0
NOISY_MACHINE_MARGIN_S = 15.0


@pytest.fixture(scope="module")
async def pair_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [
        {"name": "sim-pair", "groups": [
            {"name": "pair", "profile": "slow", "replicas": replicas(2)}]},
        {"name": "sim-groups", "groups": [
            {"name": "left", "profile": "short", "weight": 50, "replicas": replicas(1)},
            {"name": "right", "profile": "short", "weight": 50, "replicas": replicas(1)}]},
    ]  # fmt: skip
    profiles = {"slow": SLOW_STREAM, "short": SHORT_STREAM}
    running = FrugalStack(Path(tmp_path_factory.mktemp("pair")), stack_config(models, profiles))
    try:
        await running.start()
        await until_every_replica_serves(running, "sim-pair")
        yield running
    finally:
        await running.stop()


async def _stream_outcome(client: httpx.AsyncClient) -> str:
    """'done' for a clean [DONE] end, 'error-event' for an SSE error event, else what broke."""
    body = {"model": "sim-pair", "messages": PROMPT, "stream": True}
    last = ""
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    last = line.removeprefix("data: ")
    except httpx.HTTPError:
        # The chunked body cut short (RemoteProtocolError) or the connection reset
        # (ReadError): an explicit failure either way.
        return "transport-error"
    if last == "[DONE]":
        return "done"
    if last and "error" in json.loads(last):
        return "error-event"
    return f"silent end after {last[:80]!r}"


async def _unary(client: httpx.AsyncClient) -> int:
    body = {"model": "sim-pair", "messages": PROMPT, "max_tokens": 2}
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def _metric(metrics_port: int, name: str) -> float:
    """The sum of `name` on a replica; -1 when the replica does not answer."""
    try:
        return await metric_sum(metrics_port, name)
    except httpx.HTTPError:
        return -1.0


def _metrics_port(stack: FrugalStack, name: str) -> int:
    return int(stack.supervisor.children[name].spec.env["FRUGAL_ENGINE_METRICS_PORT"])


async def test_sigkill_one_replica(
    pair_stack: FrugalStack, record_property: Callable[[str, object], None]
) -> None:
    supervisor = pair_stack.supervisor
    victim = next(n for n in supervisor.children if n.startswith("engine:sim-pair/pair/0"))
    survivor = victim.removesuffix("/0") + "/1"
    victim_port = _metrics_port(pair_stack, victim)
    survivor_port = _metrics_port(pair_stack, survivor)
    prompts = "frugal_engine_prompt_tokens_total"
    running = "frugal_engine_num_requests_running"

    async def both(name: str) -> float:
        return await _metric(victim_port, name) + await _metric(survivor_port, name)

    prompt_before = await both(prompts)
    limits = httpx.Limits(max_connections=128)
    async with httpx.AsyncClient(
        base_url=pair_stack.base_url, headers=pair_stack.auth, timeout=30, limits=limits
    ) as client:
        streams = [asyncio.create_task(_stream_outcome(client)) for _ in range(STREAMS)]

        async def all_under_way() -> bool:
            return await both(running) == STREAMS

        assert await eventually(all_under_way, 20), "the streams did not all start"
        prompt_tokens = (await both(prompts) - prompt_before) / STREAMS
        on_victim = await _metric(victim_port, running)
        survivor_seen = await _metric(survivor_port, prompts)
        spec = supervisor.children[victim].spec
        await supervisor.kill(victim)
        # Requests that start after the death, unary and streamed: none may fail.
        statuses = [await _unary(client) for _ in range(40)]
        async with SteadyLoad(pair_stack, "sim-pair", clients=4) as load:
            await eventually(lambda: _at_least(load, 8), 60)
        outcomes = await asyncio.gather(*streams)
        # What the survivor generated after the kill: the 40 unary calls and the later
        # streams, each once, and none of the victim's streams again.
        survivor_requests = (await _metric(survivor_port, prompts) - survivor_seen) / prompt_tokens
        later = len(load.outcomes)
        # Back from the dead: health checks let it serve again within a few seconds.
        restarted_at = time.monotonic()
        await supervisor.start(spec)
        back_s = await seconds_until(lambda: _serves(client, victim_port), 30)
    record_property("restarted_replica_serving_s", back_s)
    print(f"\nkilled replica had {on_victim:.0f} of {STREAMS} streams; "
          f"restarted, it served again after {back_s} s")  # fmt: skip
    assert statuses == [200] * 40, statuses
    assert all(o.done for o in load.outcomes), [(o.status, o.error) for o in load.outcomes]
    failed = [outcome for outcome in outcomes if outcome != "done"]
    kinds = sorted(set(outcomes))
    assert all(outcome in ("error-event", "transport-error") for outcome in failed), kinds
    assert on_victim > 0, "no stream was on the killed replica"
    assert len(failed) == on_victim, f"{len(failed)} failed, {on_victim:.0f} were on the victim"
    assert survivor_requests == 40 + later
    assert back_s is not None and time.monotonic() >= restarted_at


async def _at_least(load: SteadyLoad, count: int) -> bool:
    return len(load.outcomes) >= count


async def _serves(client: httpx.AsyncClient, metrics_port: int) -> bool:
    await asyncio.gather(*(_unary(client) for _ in range(4)))
    return await _metric(metrics_port, "frugal_engine_generation_tokens_total") > 0


async def test_sigkill_a_whole_group_moves_its_traffic(
    pair_stack: FrugalStack, record_property: Callable[[str, object], None]
) -> None:
    supervisor = pair_stack.supervisor
    left = next(n for n in supervisor.children if n.startswith("engine:sim-groups/left/"))
    right = next(n for n in supervisor.children if n.startswith("engine:sim-groups/right/"))
    right_port = _metrics_port(pair_stack, right)
    prompts = "frugal_engine_prompt_tokens_total"
    key, _ = await create_key(pair_stack)  # no rpm: the demo key's 600 a minute would end it
    async with SteadyLoad(pair_stack, "sim-groups", clients=4, key=key) as load:
        assert await eventually(lambda: _at_least(load, 20), 30)
        assert all(o.done for o in load.outcomes)
        spec = supervisor.children[left].spec
        killed_at = time.monotonic()
        await supervisor.kill(left)

        async def moved() -> bool:
            """The last 10 streams, all started after the kill, all served, by `right`."""
            recent = load.since(killed_at)[-10:]
            return len(recent) == 10 and all(o.done for o in recent)

        moved_s = await seconds_until(moved, GROUP_MOVE_BOUND_S + NOISY_MACHINE_MARGIN_S)
        right_seen = await _metric(right_port, prompts)
        enough = len(load.outcomes) + 10
        assert await eventually(lambda: _at_least(load, enough), 30)
        right_after = await _metric(right_port, prompts)
        failed = [o for o in load.since(killed_at) if not o.done]
    await supervisor.start(spec)
    record_property("group_traffic_moved_s", moved_s)
    print(f"\nwhole group killed: traffic on the other group after {moved_s} s; "
          f"{len(failed)} streams failed meanwhile")  # fmt: skip
    assert moved_s is not None, f"still failing {NOISY_MACHINE_MARGIN_S} s past the bound"
    assert right_after > right_seen
    assert all(o.openai_error or o.status == 0 for o in failed), [
        (o.status, o.error) for o in failed
    ]
