"""`frugal bench routing` options: defaults, quick mode and the plan they give."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from frugal.bench.plan import QUICK_LEVELS
from frugal.cli import bench


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    return parser.parse_args(["bench", "routing", "--out", "results", *argv])


def test_the_default_plan_runs_every_policy_at_time_scale_10_with_the_trace() -> None:
    plan = bench.plan_from(_args())
    assert plan.policies == (
        "static-tp8", "static-tp2", "concurrency_bands", "adaptive", "adaptive+picker",
    )  # fmt: skip
    assert [level.concurrency for level in plan.levels] == [1, 4, 16, 64, 128, 256]
    assert plan.time_scale == 10.0
    assert plan.trace is not None
    assert plan.trace.path == bench.DEFAULT_TRACE
    assert (plan.trace.start, plan.trace.requests) == (0, 600)
    assert plan.trace.scaling.compression == 10.0
    # Shipped in the package, so a user's checkout or install has it.
    assert bench.DEFAULT_TRACE.parts[-4:] == ("frugal", "bench", "traces", "azure2023_code.csv")
    assert bench.DEFAULT_TRACE.is_file()


def test_quick_mode_runs_three_levels_and_a_short_trace() -> None:
    plan = bench.plan_from(_args("--quick"))
    assert plan.levels == QUICK_LEVELS
    assert plan.trace is not None and (plan.trace.start, plan.trace.requests) == (60, 120)


def test_options_override_the_plan() -> None:
    plan = bench.plan_from(
        _args(
            "--policies", "adaptive,static-tp2", "--levels", "4,1", "--requests-per-client", "2",
            "--time-scale", "1", "--trace", "t.csv", "--trace-start", "busiest",
            "--trace-requests", "5", "--trace-compression", "20", "--trace-output-cap", "8",
        )
    )  # fmt: skip
    assert plan.policies == ("adaptive", "static-tp2")
    assert [(lv.concurrency, lv.requests_per_client) for lv in plan.levels] == [(1, 2), (4, 2)]
    assert plan.time_scale == 1.0
    assert plan.trace is not None
    assert (plan.trace.path, plan.trace.start, plan.trace.requests) == (Path("t.csv"), "busiest", 5)
    assert (plan.trace.scaling.compression, plan.trace.scaling.output_cap) == (20.0, 8)


def test_no_trace_when_its_window_is_empty() -> None:
    assert bench.plan_from(_args("--trace-requests", "0")).trace is None


def test_an_unknown_policy_is_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        _args("--policies", "round-robin")
