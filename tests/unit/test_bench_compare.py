"""`frugal bench compare`'s pure parts: the plan, the records, the table and its targets."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from frugal.bench.compare_plan import DEFAULT_LEVELS, QUICK_LEVELS, SYSTEMS, ComparePlan, plan_for
from frugal.bench.compare_records import EXTRA_KEYS, REQUIRED_KEYS, build_record, problems
from frugal.bench.compare_systems import SYSTEMS as RUNNERS
from frugal.bench.compare_table import CompareHeader, render, targets
from frugal.bench.stats import RequestSample, summarise
from frugal.cli import bench, bench_compare
from frugal.wire import DEFAULT_ENGINE_PORT

HEADER = CompareHeader("2 CPUs", "2026-11-21", "4 sim workers", "closed loop")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    return parser.parse_args(["bench", "compare", "--out", "results", *argv])


def _record(system: str, concurrency: int, **values: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS)
    record.update(system=system, concurrency=concurrency, errors=0, throughput_tok_s=100.0)
    record.update(values)
    return record


def test_every_planned_system_has_a_runner_and_the_default_plan_runs_them_all() -> None:
    assert set(SYSTEMS) == set(RUNNERS)
    plan = bench_compare.plan_from(_args())
    assert plan.systems == SYSTEMS
    assert plan.levels == DEFAULT_LEVELS == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert plan.stream and plan.simulated


def test_the_paper_mode_sends_ten_requests_per_stream_with_a_floor() -> None:
    plan = plan_for(SYSTEMS, None, quick=False)
    assert plan.requests_at(256) == 2560
    assert plan.requests_at(1) == 20  # the floor keeps low levels' percentiles meaningful
    assert plan_for(SYSTEMS, (4,), quick=False, duration_s=5.0).requests_at(4) == 0


def test_quick_mode_is_ci_sized_and_options_override_it() -> None:
    plan = bench_compare.plan_from(_args("--quick", "--max-tokens", "8", "--unary"))
    assert plan.levels == QUICK_LEVELS
    assert plan.max_tokens == 8
    assert not plan.stream
    assert sum(plan.requests_at(c) for c in plan.levels) < 300


def test_external_engines_replace_the_sim_workers() -> None:
    engines = (f"10.0.0.5:{DEFAULT_ENGINE_PORT}", f"10.0.0.6:{DEFAULT_ENGINE_PORT}")
    plan = bench_compare.plan_from(_args("--engines", ",".join(engines)))
    assert plan.engines == engines
    assert not plan.simulated


@pytest.mark.parametrize(
    "fields",
    [{"systems": ()}, {"systems": ("nginx",)}, {"levels": (0,)}, {"max_tokens": 1},
     {"time_scale": 0.0}, {"duration_s": -1.0}],
)  # fmt: skip
def test_a_bad_plan_is_refused(fields: dict[str, Any]) -> None:
    values: dict[str, Any] = {"systems": ("direct",), "levels": (1,), **fields}
    with pytest.raises(ValueError):
        ComparePlan(**values)


def test_unknown_systems_are_refused_on_the_command_line() -> None:
    with pytest.raises(SystemExit):
        _args("--systems", "direct,nginx")


def test_a_record_has_exactly_the_contract_keys_and_the_extras() -> None:
    samples = [
        RequestSample(ok=True, ttft_ms=10, tbt_ms=2, tokens=8, e2e_ms=30, engine_ms=25),
        RequestSample(ok=True, ttft_ms=20, tbt_ms=4, tokens=8, e2e_ms=50, engine_ms=41),
        RequestSample(ok=False, timed_out=True),
    ]
    record = build_record("frugal", 64, summarise(samples, 2.0), cpu_busy=0.5)
    assert list(record)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert set(record) == set(REQUIRED_KEYS) | set(EXTRA_KEYS)
    assert problems(record) == []
    assert record["errors"] == 1 and record["timeouts"] == 1
    assert record["throughput_tok_s"] == 8.0
    assert record["gateway_ms_p50"] == pytest.approx(7.0)  # medians of 5 and 9
    assert record["engine_ms_p50"] == pytest.approx(33.0)


def test_problems_names_what_is_wrong() -> None:
    found = problems({"system": "x", "concurrency": 0, "errors": "none", "surprise": 1})
    assert "missing key 'ttft_p50_ms'" in found
    assert "unknown key 'surprise'" in found
    assert "errors is not an int" in found
    assert any("concurrency" in p for p in found)


def test_targets_are_computed_from_the_records_not_asserted() -> None:
    records = [
        _record("direct", 64, ttft_p50_ms=20.0, tbt_p50_ms=10.0),
        _record("frugal", 64, ttft_p50_ms=20.6, tbt_p50_ms=10.2),
        _record("frugal", 256, throughput_tok_s=900.0, errors=0),
        _record("fastapi", 256, throughput_tok_s=300.0),
    ]
    found = {t.name: t for t in targets(records)}
    assert found["TTFT p50 added at 64 streams"].met is True
    assert found["TTFT p50 added at 64 streams"].measured == "+0.60 ms"
    assert found["TBT p50 added at 64 streams"].measured == "+2.0 %"
    assert found["throughput vs FastAPI at 256 streams"].measured == "3.00x, 0 errors"
    records[1]["ttft_p50_ms"] = 35.0
    records[2]["errors"] = 3
    found = {t.name: t for t in targets(records)}
    assert found["TTFT p50 added at 64 streams"].met is False
    assert found["throughput vs FastAPI at 256 streams"].met is False


def test_targets_not_measured_say_so() -> None:
    assert {t.met for t in targets([_record("direct", 1)])} == {None}


def test_the_table_has_a_row_per_level_a_column_per_system_and_ratios_to_fastapi() -> None:
    records = [
        _record("direct", 1, ttft_p50_ms=10.0, tbt_p50_ms=8.0, e2e_p50_ms=500.0,
                gateway_ms_p50=1.0, engine_ms_p50=499.0),
        _record("fastapi", 1, ttft_p50_ms=20.0, tbt_p50_ms=10.0, throughput_tok_s=50.0),
        _record("direct", 8, ttft_p50_ms=12.0, tbt_p50_ms=8.5, errors=2),
    ]  # fmt: skip
    text = render(records, HEADER)
    assert "| streams | direct | fastapi |" in text
    assert "| 1 | 10.0 / 8.00 (0.50 / 0.80) | 20.0 / 10.00 |" in text
    assert "| 1 | 100 (2.00) | 50 |" in text
    assert "| 1 | 500 = 1.0 + 499 | - = - + - |" in text
    assert "| 8 | 12.0 / 8.50, **2 errors** | - |" in text
    assert "- machine: 2 CPUs" in text
