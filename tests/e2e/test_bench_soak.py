"""`frugal bench soak`, short: the full chain under load, every process sampled."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugal.bench.soak import SoakPlan, run_soak
from tests.helpers.stack import STACK_MARKS

pytestmark = STACK_MARKS
KINDS = {"engine", "envoy", "redis", "safety_filter", "control_plane"}


@pytest.mark.timeout(240)
async def test_a_short_soak_passes_and_samples_every_process(tmp_path: Path) -> None:
    plan = SoakPlan(concurrency=16, duration_s=12, interval_s=1, warmup_s=3, replicas=2)
    result = await run_soak(plan, tmp_path)
    assert result.summary.errors == 0 and result.summary.requests > 16
    assert result.ledger is not None and result.ledger["matches"] is True
    assert result.attempts is not None and result.error_times_s == ()  # Envoy's stats read
    assert {t.process.split()[0] for t in result.trends} == KINDS
    assert result.passed
    assert (tmp_path / "samples.json").exists() and "PASS" in (tmp_path / "table.md").read_text()
