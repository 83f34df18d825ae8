"""Fail closed: with Redis or the safety filter gone (SIGKILL) or frozen (SIGSTOP) under a
steady load of streams, every request gets an OpenAI-shaped 503 and none reaches an engine
(ext_proc fails closed; the safety filter fails closed without Redis); once the part is
back (started again on the same data dir, or SIGCONT), streams succeed again within the
stated 5 s. The measured recovery is printed and kept as the test's `recovery_s` property
(`pytest -s` or the junit report shows it)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from frugal.wire import engine_metrics_port
from tests.helpers.process_probe import freeze, metric_sum, thaw
from tests.helpers.stack import FAST, FrugalStack, replicas, stack_config
from tests.helpers.steady_load import SteadyLoad, eventually, seconds_until, stream_ok

MODEL = "sim-echo"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
# The stated bound (issue 12), and what a 2-core machine shared with other stacks may add
# on top of it before the test calls it a failure: the test reports the measured time.
RECOVERY_BOUND_S = 5.0
NOISY_MACHINE_MARGIN_S = 15.0
CLIENTS = 4


@pytest.fixture(scope="module")
async def lone_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models = [{"name": MODEL, "echo": True, "groups": [
        {"name": "echo", "profile": "fast", "replicas": replicas(1)}]}]  # fmt: skip
    running = FrugalStack(
        Path(tmp_path_factory.mktemp("lone")), stack_config(models, {"fast": FAST})
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def _prompt_tokens_seen(stack: FrugalStack) -> float:
    port = engine_metrics_port(stack.config.models[0].groups[0].replicas[0].port)
    return await metric_sum(port, "frugal_engine_prompt_tokens_total")


async def _assert_refused_with_503(stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=30) as c:
        for stream in (False, True):
            response = await c.post("/v1/chat/completions", json={**BODY, "stream": stream})
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "server_error"
            assert error["code"] == "service_unavailable"
            assert error["message"]


async def _fresh_stream_ok(stack: FrugalStack) -> bool:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=10) as c:
        return await stream_ok(c, MODEL)


def _refused_since(load: SteadyLoad, moment: float, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(not outcome.done for outcome in load.since(moment)) >= count

    return check


async def test_requests_are_served_before_anything_fails(lone_stack: FrugalStack) -> None:
    async with httpx.AsyncClient(base_url=lone_stack.base_url, headers=lone_stack.auth) as c:
        assert (await c.post("/v1/chat/completions", json=BODY)).status_code == 200


@pytest.mark.parametrize("fault", ["kill", "freeze"])
@pytest.mark.parametrize("component", ["safety_filter", "redis"])
async def test_gone_under_load_fails_closed_then_recovers(
    lone_stack: FrugalStack,
    component: str,
    fault: str,
    record_property: Callable[[str, object], None],
) -> None:
    supervisor = lone_stack.supervisor
    spec = supervisor.children[component].spec
    async with SteadyLoad(lone_stack, MODEL, CLIENTS) as load:
        assert await eventually(lambda: _served(load), 15), "no stream succeeded before"
        broken_at = time.monotonic()
        if fault == "kill":
            await supervisor.kill(component)
        else:
            freeze(lone_stack, component)
        try:
            assert await eventually(_refused_since(load, broken_at, CLIENTS), 30)
            # From here on, a request that reaches the engine shows in its prompt tokens:
            # hold the fault for a few more refusals of every client, then count again.
            engine_seen = await _prompt_tokens_seen(lone_stack)
            down_from = time.monotonic()
            assert await eventually(_refused_since(load, down_from, 3 * CLIENTS), 60)
            await _assert_refused_with_503(lone_stack)
            assert await _prompt_tokens_seen(lone_stack) == engine_seen
        finally:
            restored_at = time.monotonic()
            if fault == "kill":
                await supervisor.start(spec)
            else:
                thaw(lone_stack, component)
        recovery_s = await seconds_until(
            lambda: _fresh_stream_ok(lone_stack), RECOVERY_BOUND_S + NOISY_MACHINE_MARGIN_S
        )
        down = [o for o in load.outcomes if down_from <= o.started and o.ended <= restored_at]
    record_property("recovery_s", recovery_s)
    print(f"\n{component} {fault}: {len(down)} streams refused while down; recovery {recovery_s} s")
    assert recovery_s is not None, f"no stream succeeded within {NOISY_MACHINE_MARGIN_S} s"
    assert down and all(o.status == 503 and o.openai_error for o in down), {
        (o.status, str(o.error)) for o in down
    }


async def _served(load: SteadyLoad) -> bool:
    return any(outcome.done for outcome in load.outcomes)
