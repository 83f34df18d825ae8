"""The sim engine's warm-up: decode steps of one sequence before it serves, in its tally."""

from __future__ import annotations

import pytest

from engine_workers.backends.sim import SimBackend
from engine_workers.backends.sim_model import SimProfile, step_ms
from engine_workers.engine import DecodeSteps

PROFILE = SimProfile(a_ms=5.0, b_ms=0.1, time_scale=0.01, jitter=0.0)


async def test_a_started_engine_has_its_warm_up_in_its_tally_and_nothing_running() -> None:
    backend = SimBackend(PROFILE)
    assert backend.load().decode_steps == DecodeSteps()
    await backend.start()
    try:
        load = backend.load()
    finally:
        await backend.stop()
    assert (load.running, load.tokens_generated_total) == (0, 0)
    steps = load.decode_steps
    assert steps is not None and (steps.steps, steps.sequences) == (4, 4)
    assert steps.seconds == pytest.approx(4 * step_ms(PROFILE, 1, 0) * 0.01 / 1000)


async def test_no_warm_up_leaves_the_tally_empty() -> None:
    backend = SimBackend(PROFILE.model_copy(update={"warmup_steps": 0}))
    await backend.start()
    try:
        assert backend.load().decode_steps == DecodeSteps()
    finally:
        await backend.stop()
