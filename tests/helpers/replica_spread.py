"""Waiting until Envoy balances a model's requests onto every one of its replicas (test
support, I/O).

Envoy's admin `/clusters` lists a replica healthy as soon as its health check passes, but
its worker threads' balancers see a health change that follows another within
`update_merge_window` (1 s) only when that window ends (control_plane/translate/clusters.py).
When a stack's engine workers are still starting as Envoy warms their cluster, their first
checks fail; if two then pass within a second of each other, `FrugalStack.start` can return
while every request still goes to the first. Seen: 64 streams started at once all on one of
two replicas (`cluster_manager.cluster_updated_via_merge` went from 0 to 1 after they had
started). A test whose requests must reach every replica first asks until each has served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from frugal.wire import engine_metrics_port
from tests.helpers.process_probe import metric_sum
from tests.helpers.stack import FrugalStack

FINISHED = "frugal_engine_request_duration_seconds_count"
PER_ROUND = 4


async def finished_by_replica(stack: FrugalStack, model: str) -> dict[str, float]:
    """Requests each replica of `model` has finished so far, by its address."""
    (served,) = [m for m in stack.config.models if m.name == model]
    return {
        str(e): await metric_sum(engine_metrics_port(e.port), FINISHED)
        for g in served.groups
        for e in g.replicas
    }


async def until_every_replica_serves(
    stack: FrugalStack,
    model: str,
    prompt: Callable[[int], str] = lambda n: f"warm up {n}",
    seconds: float = 30.0,
) -> None:
    """Send rounds of short chat completions to `model` (the n-th with `prompt(n)`) until
    every replica of it has finished one; AssertionError naming those that did not."""
    before = await finished_by_replica(stack, model)
    deadline = asyncio.get_running_loop().time() + seconds
    sent = 0
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=30) as c:
        while True:
            bodies = [
                {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": p}]}
                for p in map(prompt, range(sent, sent + PER_ROUND))
            ]
            answers = await asyncio.gather(
                *(c.post("/v1/chat/completions", json=body) for body in bodies)
            )
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            sent += PER_ROUND
            now = await finished_by_replica(stack, model)
            idle = sorted(a for a in now if now[a] == before[a])
            if not idle:
                return
            assert asyncio.get_running_loop().time() < deadline, (
                f"{sent} requests to {model}, none served by {', '.join(idle)}"
            )
