"""Trace windows in the virtual-time benchmark: later stretches of a trace replayed alone
(frugal.bench.virtual.workload.window, compare.trace_windows), and the trace goal judged over
every window (frugal.bench.virtual.report)."""

from __future__ import annotations

from frugal.bench.virtual.compare import (
    ADAPTIVE,
    PICKED,
    PICKED_BY_TWO,
    FleetResults,
    Outcome,
    VirtualPlan,
    large_fleet,
    paper_fleet,
    trace_rows,
    trace_windows,
    window_label,
    window_rows,
)
from frugal.bench.virtual.report import render
from frugal.bench.virtual.workload import TraceRow, window


def test_a_window_starts_at_zero_and_keeps_its_requests_sizes() -> None:
    rows = [TraceRow(float(at), 10 + at, 2, (at,)) for at in (5, 7, 12, 20)]
    assert window(rows, 1, 2) == [TraceRow(0.0, 17, 2, (7,)), TraceRow(5.0, 22, 2, (12,))]
    # The trace's end cuts the last window short, and past it there is none.
    assert window(rows, 3, 2) == [TraceRow(0.0, 30, 2, (20,))]
    assert window(rows, 4, 2) == []


def test_the_first_window_is_the_trace_as_the_benchmark_replayed_it_before() -> None:
    plan = VirtualPlan(fleets=(paper_fleet(()),), trace_requests=500)
    rows = trace_rows("azure-conv")
    first = window_rows(plan, "azure-conv", 0)
    assert first == list(rows[:500])
    second = window_rows(plan, "azure-conv", 1)
    assert second[0].at_s == 0.0
    assert [r.prompt_tokens for r in second] == [r.prompt_tokens for r in rows[500:1000]]
    assert window_label("azure-conv", 0, 500) == "azure-conv"
    assert window_label("azure-conv", 1, 500) == "azure-conv, requests 501-1,000"


def test_only_windows_that_the_trace_fills_are_run() -> None:
    plan = VirtualPlan(fleets=(paper_fleet(()),), trace_requests=2000)
    paper, large = paper_fleet(()), large_fleet(())
    # Azure code, the shortest trace, holds 4 whole windows of 2,000 (8,819 requests).
    assert list(trace_windows(plan, paper, "azure-code")) == [0, 1, 2, 3]
    assert list(trace_windows(plan, large, "azure-code")) == [0]
    # A window longer than the trace: the trace once, as far as it goes.
    longer = VirtualPlan(fleets=(paper,), trace_requests=100_000)
    assert list(trace_windows(longer, paper, "azure-code")) == [0]


def _outcome(policy: str, load: str, p99: float) -> Outcome:
    return Outcome(policy, load, 100, 10.0, 5.0, p99, {"tp8": 1.0}, 0.1, 1.0, 0)


def _results(p99s: dict[str, tuple[float, float, float]]) -> FleetResults:
    """A paper fleet's trace windows with (static-tp8, static-tp2, adaptive) p99s, and one
    closed load."""
    found = FleetResults(paper_fleet((1,)))
    for policy in ("static-tp8", "static-tp2", ADAPTIVE):
        found.outcomes.append(_outcome(policy, "1", 10.0))
    for label, (tp8, tp2, adaptive) in p99s.items():
        found.windows.setdefault(label.split(",")[0], []).append(label)
        for policy, p99 in (("static-tp8", tp8), ("static-tp2", tp2), (ADAPTIVE, adaptive)):
            found.outcomes.append(_outcome(policy, label, p99))
        found.ttft_bounds_ms[label] = 50.0
    return found


def _line(table: str, start: str) -> str:
    """The table's first line that starts with `start`."""
    return next(line for line in table.splitlines() if line.startswith(start))


def _verdict(table: str, trace: str) -> str:
    return _line(table, f"{trace}: ")


def test_the_trace_goal_is_met_only_when_adaptive_is_below_both_layouts_in_every_window() -> None:
    found = _results(
        {
            "code": (500.0, 400.0, 230.0),
            "code, requests 3-4": (380.0, 360.0, 232.0),
            "conv": (70.2, 140.0, 70.6),
            "conv, requests 3-4": (73.0, 140.0, 72.7),
        }
    )
    table = render([found], ["# header"], ["code", "conv"])
    assert _verdict(table, "code") == (
        "code: adaptive's TTFT p99 below both static layouts in 2 of 2 windows "
        "(adaptive minus the best layout: -170.0 to -128.0 ms): met"
    )
    assert _verdict(table, "conv") == (
        "conv: adaptive's TTFT p99 below both static layouts in 1 of 2 windows "
        "(adaptive minus the best layout: -0.3 to +0.4 ms): **missed**"
    )
    rows = [line for line in table.splitlines() if line.startswith("| conv")]
    assert [row.rsplit("|", 2)[-2].strip() for row in rows] == ["**missed**", "met"]


def test_a_trace_run_once_has_no_verdict_over_windows() -> None:
    table = render([_results({"code": (500.0, 400.0, 230.0)})], ["# header"], ["code"])
    assert not any(line.startswith("code: ") for line in table.splitlines())
    assert any(line.startswith("| code |") and line.endswith("| met |") for line in
               table.splitlines())  # fmt: skip


def test_a_picked_policy_is_judged_beside_adaptive() -> None:
    found = _results({"conv": (70.2, 140.0, 70.6), "conv, requests 3-4": (73.0, 140.0, 73.1)})
    found.outcomes += [_outcome(PICKED, "1", 10.0), _outcome(PICKED, "conv", 65.0),
                       _outcome(PICKED, "conv, requests 3-4", 66.0),
                       _outcome(PICKED_BY_TWO, "1", 10.0), _outcome(PICKED_BY_TWO, "conv", 71.0),
                       _outcome(PICKED_BY_TWO, "conv, requests 3-4", 72.0)]  # fmt: skip
    table = render([found], ["# header"], ["conv"])
    verdicts = [line for line in table.splitlines() if line.startswith("conv: ")]
    assert verdicts == [
        "conv: adaptive's TTFT p99 below both static layouts in 0 of 2 windows "
        "(adaptive minus the best layout: +0.1 to +0.4 ms): **missed**",
        "conv: adaptive+picker's TTFT p99 below both static layouts in 2 of 2 windows "
        "(adaptive+picker minus the best layout: -7.0 to -5.2 ms): met",
        "conv: adaptive+picker/2's TTFT p99 below both static layouts in 1 of 2 windows "
        "(adaptive+picker/2 minus the best layout: -1.0 to +0.8 ms): **missed**",
    ]
    header = _line(table, "| load |")
    assert header.endswith(
        "| adaptive / best static | goal >= 0.97 | adaptive+picker / best static | goal >= 0.97 "
        "| adaptive+picker/2 / best static | goal >= 0.97 |"
    )
    row = _line(table, "| 1 |")
    assert row.endswith("| 1.00 | met | 1.00 | met | 1.00 | met |")


def test_the_large_fleet_replays_each_trace_as_many_users_as_it_has_paper_fleets() -> None:
    plan = VirtualPlan(fleets=(large_fleet(()),), trace_requests=300)
    large = large_fleet(())
    assert large.trace_copies == 200  # 200 tp8 replicas against the paper fleet's one
    assert PICKED in large.picked
    one, many = window_rows(plan, "azure-conv", 1), window_rows(plan, "azure-conv", 1, 3)
    assert len(many) == 3 * len(one)
    assert sorted(r.prompt_tokens for r in many) == sorted(3 * [r.prompt_tokens for r in one])
    assert [r.at_s for r in many] == sorted(r.at_s for r in many)


def test_each_judged_policy_has_its_verdict_and_a_layout_at_the_bound_is_named() -> None:
    found = FleetResults(paper_fleet((1,)))
    found.windows["conv"] = ["conv"]
    found.ttft_bounds_ms["conv"] = 56.0
    for policy, p99 in (("static-tp8", 56.2), ("static-tp2", 140.0), (ADAPTIVE, 56.2),
                        (PICKED, 60.0), (PICKED_BY_TWO, 55.9)):  # fmt: skip
        found.outcomes += [_outcome(policy, "1", 10.0), _outcome(policy, "conv", p99)]
    table = render([found], ["# header"], ["conv"])
    header = _line(table, "| trace |")
    assert header.endswith(
        "| p99 bound | adaptive p99 below every static | adaptive+picker p99 below every static "
        "| adaptive+picker/2 p99 below every static |"
    )
    row = _line(table, "| conv |")
    assert row.endswith("| 56 ms | **missed** (at the bound) | **missed** (at the bound) | met |")
