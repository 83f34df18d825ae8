"""The worker's request core with the sim engine: a request's count is every token the
engine made for it, those its handler never took included (the gateway bills it)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

from engine_workers.backends.sim import SimBackend
from engine_workers.backends.sim_model import SimProfile
from engine_workers.core import EngineCore
from engine_workers.engine import Delta
from engine_workers.metrics import EngineMetrics
from engine_workers.prompt import ChatTurn, SamplingParams
from engine_workers.usage_log import RequestUsage
from tests.helpers.steady_load import eventually

MODEL = "sim-core"
# ~0.1 ms a step: the engine runs ahead of a handler that stops taking its tokens.
PROFILE = {"time_scale": 0.01, "jitter": 0.0, "output_tokens_min": 500, "output_tokens_max": 500}
AHEAD = 20


async def test_tokens_made_but_not_yet_taken_when_a_request_ends_are_counted() -> None:
    backend = SimBackend(SimProfile.model_validate(PROFILE))
    core = EngineCore(backend, EngineMetrics(backend.load, MODEL, "g"), model=MODEL, echo=False)
    await backend.start()
    try:
        timing = core.begin("gateway-id")
        generation = core.chat_request("r", [ChatTurn("user", "go")], SamplingParams(model=MODEL))
        deltas = cast(AsyncGenerator[Delta], core.generate(generation, timing))
        await anext(deltas)  # the handler takes one token, then its client goes away

        async def engine_ahead() -> bool:
            return backend.load().tokens_generated_total >= AHEAD

        assert await eventually(engine_ahead, 30)
        core.end("r", timing)  # what the RPC's done-callback does when the client leaves
        made = backend.load().tokens_generated_total
        assert core.usage.get("gateway-id") == RequestUsage(True, timing.prompt_tokens, made)
        await deltas.aclose()
        assert core.usage.get("gateway-id") == RequestUsage(True, timing.prompt_tokens, made)
    finally:
        await backend.stop()
