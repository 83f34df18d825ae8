"""Routing benchmark report (routing.md): table shape and the adaptive / best static ratio."""

from __future__ import annotations

from typing import Any

from frugal.bench.records import build_record
from frugal.bench.report import (
    ReportHeader,
    adaptive_ratio,
    goal_lines,
    render,
    routing_table,
    trace_table,
)
from frugal.bench.stats import LevelSummary

POLICIES = ("static-tp8", "static-tp2", "concurrency_bands", "adaptive")
LOADS: tuple[int | str, ...] = (1, 4, 64, "trace")
HEADER = ReportHeader(
    machine="2 CPUs (nproc), AMD EPYC",
    date="2024-01-01 00:00 UTC",
    time_scale=10.0,
    trace="120 requests of azure2023_code.csv from request #0; arrivals compressed 10x",
    levels="concurrency x requests per client: 1 x 3",
)


def _summary(throughput: float) -> LevelSummary:
    return LevelSummary(10, 0, 100, 1.0, throughput, 50.0, 90.0, 20.0)


def _records() -> list[dict[str, Any]]:
    throughput = {"static-tp8": 100.0, "static-tp2": 200.0, "concurrency_bands": 150.0}
    throughput["adaptive"] = 180.0
    return [
        build_record(p, load, _summary(throughput[p]), time_scale=10.0, group_share={"tp8": 0.5})
        for load in LOADS
        for p in POLICIES
    ]


def test_the_table_has_a_row_per_load_and_a_column_per_policy_plus_the_ratio() -> None:
    lines = routing_table(_records())
    assert len(lines) == 2 + len(LOADS)
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["load", *POLICIES, "adaptive / best static"]
    for line, load in zip(lines[2:], LOADS, strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header)
        assert cells[0] == str(load)
        assert cells[1] == "100 tok/s, 50 / 90 ms, tp8 50%"
        assert cells[-1] == "0.90"  # adaptive 180 over static-tp2's 200


def test_simulated_cells_use_simulated_units() -> None:
    line = routing_table(_records(), simulated=True)[2]
    assert "1000 tok/s, 5 / 9 ms" in line


def test_the_ratio_needs_adaptive_and_a_static_layout() -> None:
    records = {r["policy"]: r for r in _records() if r["load"] == 1}
    assert adaptive_ratio(records) == "0.90"
    assert adaptive_ratio({"adaptive": records["adaptive"]}) == "-"
    assert adaptive_ratio({"static-tp8": records["static-tp8"]}) == "-"


def test_the_trace_table_gives_each_policys_p99_ttft() -> None:
    lines = trace_table(_records())
    assert len(lines) == 2 + len(POLICIES)
    assert lines[2].startswith("| static-tp8 | 90 (9) | 50 (5) |")


def test_a_missing_cell_and_errors_show() -> None:
    records = [r for r in _records() if not (r["policy"] == "adaptive" and r["load"] == 4)]
    records[0] = {**records[0], "errors": 3}
    lines = routing_table(records)
    assert "**3 errors**" in lines[2]
    cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert cells[0] == "4"
    assert cells[4] == "-"  # adaptive's cell
    assert cells[5] == "-"  # no ratio without adaptive


def test_the_report_states_machine_time_scale_trace_scaling_and_safety_off() -> None:
    text = render(_records(), HEADER)
    assert "2 CPUs (nproc), AMD EPYC" in text
    assert "time scale: 10" in text and "wall ms / 10" in text
    assert "compressed 10x" in text
    assert "2024-01-01" in text
    assert "enforce: false" in text
    assert "## Trace replay" in text


def test_the_picked_policy_gets_its_own_ratio_column() -> None:
    picked = [
        build_record("adaptive+picker", load, _summary(210.0), time_scale=10.0, group_share={})
        for load in LOADS
    ]
    lines = routing_table([*_records(), *picked])
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[-2:] == ["adaptive / best static", "adaptive+picker / best static"]
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells[-2:] == ["0.90", "1.05"]  # 180 and 210 over static-tp2's 200


def test_the_goals_are_judged_with_their_measured_values() -> None:
    lines = goal_lines(_records())
    # adaptive's 180 over static-tp2's 200 at every load; its trace p99 ties theirs (90).
    assert lines == [
        "- adaptive: throughput >= 0.95 x the best static layout's at every load: lowest "
        "0.90, at 1 streams: **missed**",
        "- adaptive: trace TTFT p99 below both static layouts': 90 ms against 90 and 90: "
        "**missed**",
    ]
    faster = [
        {**r, "throughput_tok_s": 196.0, "ttft_p99_ms": 80.0} if r["policy"] == "adaptive" else r
        for r in _records()
    ]
    assert [line.rsplit(": ", 1)[1] for line in goal_lines(faster)] == ["met", "met"]
